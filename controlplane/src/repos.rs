//! Repositories: add (initialising a new one on a chosen host), attach
//! hosts with append-only or full credentials, choose the maintenance host,
//! test a host's connection with a clear reason on failure, and refresh a
//! repository's state on an operator's request.

use std::sync::Arc;

use rm_bus::ids;
use rm_bus::msg::{Actor, CommandBody, ErrorKind, QueryReply, RepoAccess, Sealed};
use rm_bus::seal::{RepoSecrets, redact_url};
use rm_bus::subject::Event;
use rm_store::hosts;
use rm_store::repos::{self, Access, NewRepo};

use crate::api::{
    AccessInput, Done, PubKey, RepoAdd, RepoAdded, RepoAttach, RepoMaintenance, RepoRefresh,
    RepoRefreshed, RepoSecretsInput, RepoTest, RepoTestResult, SealedSecrets,
};
use crate::secrets::{cred_aad, repo_aad};
use crate::svc::{Fail, Outcome};
use crate::{Cp, audit, dispatch, schedules};

fn unseal(cp: &Cp, sealed: &SealedSecrets) -> Outcome<RepoSecrets> {
    let input = sealed.open(&cp.xkey).map_err(|e| {
        Fail::invalid(format!(
            "the secrets do not open with the control plane's key: {e}"
        ))
    })?;
    to_secrets(&input)
}

pub(crate) fn to_secrets(input: &RepoSecretsInput) -> Outcome<RepoSecrets> {
    if input.url.trim().is_empty() {
        return Err(Fail::invalid("repository URL is empty"));
    }
    if input.password.is_empty() {
        return Err(Fail::invalid("repository password is empty"));
    }
    if let Some(bad) = input
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(Fail::invalid(format!(
            "invalid environment variable name {bad:?}"
        )));
    }
    Ok(RepoSecrets {
        repository: input.url.trim().to_owned(),
        password: input.password.clone(),
        env: input.env.clone(),
    })
}

/// Seals `secrets` to an enrolled host's xkey for one command or job.
pub(crate) fn seal_to_host<T: serde::Serialize>(
    cp: &Cp,
    host: &hosts::Host,
    secrets: &T,
) -> Outcome<Sealed> {
    let Some(xkey) = &host.xkey else {
        return Err(Fail::conflict(format!(
            "host {} is not enrolled yet",
            host.name
        )));
    };
    rm_bus::seal::seal(secrets, &cp.xkey, xkey).map_err(|e| Fail::from(anyhow::Error::from(e)))
}

/// The secrets `host` uses for `repo` (its own credential) and whether they
/// are append-only.
pub(crate) async fn host_secrets(
    cp: &Cp,
    conn: &mut rm_store::Conn,
    host_id: &str,
    repo_id: &str,
) -> Outcome<(RepoSecrets, Access)> {
    let cred = repos::credential(conn, host_id, repo_id)
        .await
        .map_err(|e| match e {
            rm_store::StoreError::NotFound { .. } => Fail::conflict(format!(
                "host {host_id} has no credential for repository {repo_id}; attach it first"
            )),
            other => Fail::from(other),
        })?;
    let secrets: RepoSecrets = cp
        .master
        .decrypt_json(&cred.secrets_enc, &cred_aad(host_id, repo_id))?;
    Ok((secrets, cred.access()?))
}

/// The access a host needs to run one command against a repository.
pub(crate) fn access_for(
    cp: &Cp,
    host: &hosts::Host,
    repo_id: &str,
    secrets: &RepoSecrets,
    access: Access,
) -> Outcome<RepoAccess> {
    Ok(RepoAccess {
        repo_id: repo_id.to_owned(),
        secrets: seal_to_host(cp, host, secrets)?,
        append_only: access == Access::AppendOnly,
    })
}

pub(crate) fn describe(reply: &QueryReply) -> String {
    let reason = match reply.error_kind {
        Some(ErrorKind::WrongPassword) => {
            "wrong repository password — edit the repository's credentials"
        }
        Some(ErrorKind::RepoMissing) => {
            "no repository at this URL — check the URL or initialise it"
        }
        Some(ErrorKind::Network) => {
            "repository unreachable — check the URL, the server and the network"
        }
        Some(ErrorKind::Locked) => "repository is locked",
        Some(ErrorKind::Timeout) => "restic timed out",
        _ => "restic failed",
    };
    match &reply.error {
        Some(detail) => format!("{reason} ({detail})"),
        None => reason.to_owned(),
    }
}

pub(crate) async fn add(cp: &Arc<Cp>, actor: &Actor, req: RepoAdd) -> Outcome<RepoAdded> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Fail::invalid("repository name must be 1 to 100 characters"));
    }
    let secrets = unseal(cp, &req.secrets)?;
    let id = format!("r{}", ids::random_token(10));
    let mut restic_repo_id = None;
    let through = match (&req.init_on_host, &req.verify_on_host) {
        (Some(_), Some(_)) => {
            return Err(Fail::invalid(
                "either initialise a new repository or verify an existing one, not both",
            ));
        }
        (Some(h), None) => Some((h, true)),
        (None, Some(h)) => Some((h, false)),
        (None, None) => None,
    };
    if let Some((host_id, init)) = through {
        let host = {
            let mut c = cp.store.read().await?;
            hosts::get(&mut c, host_id).await?
        };
        let repo = RepoAccess {
            repo_id: id.clone(),
            secrets: seal_to_host(cp, &host, &secrets)?,
            append_only: false,
        };
        let (body, what) = if init {
            (CommandBody::RepoInit { repo }, "restic init")
        } else {
            (CommandBody::RepoVerify { repo }, "opening the repository")
        };
        let reply = dispatch::query(cp, &host.id, body).await?;
        if !reply.ok {
            return Err(Fail::conflict(format!(
                "{what} on {} failed: {}",
                host.name,
                describe(&reply)
            )));
        }
        restic_repo_id = reply.restic_repo_id;
    }
    let now = cp.now();
    let enc = cp.master.encrypt_json(&secrets, &repo_aad(&id))?;
    let display = redact_url(&secrets.repository);
    let (actor, name, repo_id, init_on, verify_on) = (
        actor.clone(),
        name.to_owned(),
        id.clone(),
        req.init_on_host.clone(),
        req.verify_on_host.clone(),
    );
    let () = cp
        .write_first(move |tx| {
            Box::pin(async move {
                repos::insert(
                    &mut *tx,
                    &NewRepo {
                        id: &repo_id,
                        name: &name,
                        url_display: &display,
                        secrets_enc: &enc,
                        created_by: &actor.name,
                        now,
                    },
                )
                .await?;
                if restic_repo_id.is_some() {
                    repos::set_status(&mut *tx, &repo_id, "ok", None, restic_repo_id.as_deref()).await?;
                }
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.add",
                    ("repo", &repo_id),
                    Some(serde_json::json!({"name": name, "url": display, "initialised_on": init_on, "verified_on": verify_on})),
                )
                .await?;
                    Ok(())
            })
        })
        .await?;
    cp.event(Event::RepoChanged, None, None, Some(&id)).await;
    Ok(RepoAdded { repo_id: id })
}

pub(crate) fn pubkey(cp: &Cp) -> PubKey {
    PubKey {
        xkey: cp.xkey.public_key(),
    }
}

pub(crate) async fn attach(cp: &Arc<Cp>, actor: &Actor, req: RepoAttach) -> Outcome<Done> {
    let access = match req.access {
        AccessInput::AppendOnly => Access::AppendOnly,
        AccessInput::Full => Access::Full,
    };
    let now = cp.now();
    let (c, actor, r) = (cp.clone(), actor.clone(), req.clone());
    let (repo, touched) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = &*c;
                let repo = repos::get(&mut *tx, &r.repo_id).await?;
                hosts::get(&mut *tx, &r.host_id).await?;
                let secrets = match &r.secrets {
                    Some(s) => unseal(cp, s)?,
                    None if access == Access::Full => cp
                        .master
                        .decrypt_json(&repo.secrets_enc, &repo_aad(&repo.id))?,
                    None => {
                        return Err(Fail::invalid(
                            "an append-only credential needs its own secrets (an append-only REST user); the repository's full credentials would defeat it",
                        ));
                    }
                };
                let enc = cp
                    .master
                    .encrypt_json(&secrets, &cred_aad(&r.host_id, &repo.id))?;
                repos::attach(&mut *tx, &r.host_id, &repo.id, access, &enc, now).await?;
                // Routing of this host's forget/prune schedules may change.
                let mut touched = schedules::reroute(cp, &mut *tx, &repo.id).await?;
                // The schedules this host runs on the repository carry its credential:
                // a new or downgraded one must reach the agent (pushed below; retried
                // by the resync sweep until the agent confirms it).
                let runs_here = rm_store::schedules::executed_by(&mut *tx, &r.host_id)
                    .await?
                    .iter()
                    .any(|s| s.repo_id == repo.id);
                if runs_here && !touched.contains(&r.host_id) {
                    hosts::bump_config_version(&mut *tx, &r.host_id).await?;
                    touched.push(r.host_id.clone());
                }
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.attach",
                    ("repo", &repo.id),
                    Some(serde_json::json!({"host": r.host_id, "access": access.as_str()})),
                )
                .await?;
                    Ok((repo, touched))
            })
        })
        .await?;
    schedules::push_configs(cp, touched).await;
    cp.event(Event::RepoChanged, Some(&req.host_id), None, Some(&repo.id))
        .await;
    Ok(Done {})
}

pub(crate) async fn maintenance(
    cp: &Arc<Cp>,
    actor: &Actor,
    req: RepoMaintenance,
) -> Outcome<Done> {
    let now = cp.now();
    let (c, actor, repo_id, host_id) = (
        cp.clone(),
        actor.clone(),
        req.repo_id.clone(),
        req.host_id.clone(),
    );
    let touched = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = &*c;
                repos::set_maintenance_host(&mut *tx, &repo_id, host_id.as_deref()).await?;
                let touched = schedules::reroute(cp, &mut *tx, &repo_id).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.maintenance_host",
                    ("repo", &repo_id),
                    Some(serde_json::json!({"host": host_id})),
                )
                .await?;
                Ok(touched)
            })
        })
        .await?;
    schedules::push_configs(cp, touched).await;
    cp.event(Event::RepoChanged, None, None, Some(&req.repo_id))
        .await;
    Ok(Done {})
}

/// Queues a full refresh of the repository now (unless one is waiting)
/// on its maintenance host if online, else on an attached online host.
pub(crate) async fn refresh(
    cp: &Arc<Cp>,
    actor: &Actor,
    req: RepoRefresh,
) -> Outcome<RepoRefreshed> {
    let now = cp.now();
    let (c, actor, repo_id) = (cp.clone(), actor.clone(), req.repo_id.clone());
    let (host, r) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = &*c;
                repos::get(&mut *tx, &repo_id).await?;
                let Some(host) = crate::health::refresh_host(&mut *tx, &repo_id).await? else {
                    return Err(Fail::conflict(
                        "no host attached to this repository is online to run the refresh",
                    ));
                };
                let r = crate::health::queue_refresh(cp, &mut *tx, &repo_id, &host).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.refresh",
                    ("repo", &repo_id),
                    Some(serde_json::json!({"host": host, "jobs": r.queued})),
                )
                .await?;
                Ok((host, r))
            })
        })
        .await?;
    for (job, owner) in &r.superseded {
        cp.job_event(Event::JobFinished, owner, job, Some(&req.repo_id))
            .await;
    }
    for job in &r.queued {
        cp.job_event(Event::JobQueued, &host, job, Some(&req.repo_id))
            .await;
    }
    cp.dispatch_wake.notify_one();
    Ok(RepoRefreshed {
        host_id: host,
        job_ids: r.queued,
    })
}

pub(crate) async fn test(cp: &Arc<Cp>, req: RepoTest) -> Outcome<RepoTestResult> {
    let (host, secrets, access) = {
        let mut c = cp.store.read().await?;
        repos::get(&mut c, &req.repo_id).await?;
        let host = hosts::get(&mut c, &req.host_id).await?;
        let (secrets, access) = host_secrets(cp, &mut c, &host.id, &req.repo_id).await?;
        (host, secrets, access)
    };
    let repo = access_for(cp, &host, &req.repo_id, &secrets, access)?;
    let reply = dispatch::query(cp, &host.id, CommandBody::RepoVerify { repo }).await?;
    let result = RepoTestResult {
        ok: reply.ok,
        restic_repo_id: reply.restic_repo_id.clone(),
        error: (!reply.ok).then(|| describe(&reply)),
        error_kind: reply.error_kind,
    };
    let (repo_id, detail_owned) = (req.repo_id.clone(), result.error.clone());
    let ok = reply.ok;
    let restic_repo_id = reply.restic_repo_id.clone();
    let () = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let (status, detail) = if ok {
                    ("ok", None)
                } else {
                    ("error", detail_owned.as_deref())
                };
                repos::set_status(
                    &mut *tx,
                    &repo_id,
                    status,
                    detail,
                    restic_repo_id.as_deref(),
                )
                .await?;
                Ok(())
            })
        })
        .await?;
    cp.event(Event::RepoChanged, None, None, Some(&req.repo_id))
        .await;
    Ok(result)
}
