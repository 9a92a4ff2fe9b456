//! Changing and removing repositories: update (rename; new URL, password
//! or environment, verified through a host before anything is saved),
//! detach a host (its credential leaves its agent's config) and delete the
//! record (never the data in the repository).
//!
//! Refusals carry their own codes (`wrong_password`, `repo_missing`,
//! `unreachable`, `verify_failed`, `different_repository`, `name_taken`,
//! `has_schedules`, `maintenance_host`, `hosts_attached`, `jobs_running`)
//! so the web role can name the field or the obstacle.

use std::collections::BTreeSet;
use std::sync::Arc;

use rm_bus::msg::{Actor, CommandBody, ErrorKind, RepoAccess};
use rm_bus::seal::{RepoSecrets, redact_url};
use rm_bus::subject::Event;
use rm_store::repos::{self, Access};
use rm_store::{hosts, jobs, schedules as sched_store};

use crate::api::{Done, RepoDelete, RepoDetach, RepoSecretsInput, RepoUpdate, RepoUpdated};
use crate::repos::{describe, seal_to_host, to_secrets};
use crate::secrets::{cred_aad, repo_aad};
use crate::svc::{Fail, Outcome};
use crate::{Cp, audit, dispatch, schedules};

fn refuse(code: &'static str, message: impl Into<String>) -> Fail {
    Fail {
        code,
        message: message.into(),
    }
}

/// A store conflict on the name becomes `name_taken`.
fn named(e: rm_store::StoreError) -> Fail {
    match e {
        rm_store::StoreError::Conflict(m) => refuse("name_taken", m),
        other => Fail::from(other),
    }
}

/// "web-1, db-2" for host ids, by name where known.
async fn host_names(conn: &mut rm_store::Conn, ids: &[String]) -> Outcome<String> {
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let known = hosts::names_of(conn, &refs).await?;
    Ok(ids
        .iter()
        .map(|id| {
            known
                .iter()
                .find(|(k, _)| k == id)
                .map_or(id.as_str(), |(_, n)| n.as_str())
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// The host that verifies new secrets: the one asked for, else the
/// maintenance host, else a host with full access, else any attached one.
fn verifier(asked: Option<&str>, repo: &repos::Repo, creds: &[repos::HostRepo]) -> Option<String> {
    asked
        .map(str::to_owned)
        .or_else(|| repo.maintenance_host_id.clone())
        .or_else(|| {
            creds
                .iter()
                .find(|c| c.access == Access::Full.as_str())
                .map(|c| c.host_id.clone())
        })
        .or_else(|| creds.first().map(|c| c.host_id.clone()))
}

/// A host credential follows the repository's change where it carried the
/// old value: the same URL, the same password, the same environment.
fn follow(cred: &RepoSecrets, old: &RepoSecrets, new: &RepoSecrets) -> Option<RepoSecrets> {
    let mut out = cred.clone();
    if cred.repository == old.repository {
        out.repository.clone_from(&new.repository);
    }
    if cred.password == old.password {
        out.password.clone_from(&new.password);
    }
    if cred.env == old.env {
        out.env.clone_from(&new.env);
    }
    (out != *cred).then_some(out)
}

pub(crate) async fn update(cp: &Arc<Cp>, actor: &Actor, req: RepoUpdate) -> Outcome<RepoUpdated> {
    let name = match req.name.as_deref().map(str::trim) {
        Some(n) if n.is_empty() || n.chars().count() > 100 => {
            return Err(Fail::invalid("repository name must be 1 to 100 characters"));
        }
        other => other.map(str::to_owned),
    };
    let patch = match &req.secrets {
        Some(s) => Some(s.open(&cp.xkey).map_err(|e| {
            Fail::invalid(format!(
                "the secrets do not open with the control plane's key: {e}"
            ))
        })?),
        None => None,
    };
    let (repo, old, creds) = {
        let mut c = cp.store.read().await?;
        let repo = repos::get(&mut c, &req.repo_id).await?;
        let old: RepoSecrets = cp
            .master
            .decrypt_json(&repo.secrets_enc, &repo_aad(&repo.id))?;
        let creds = repos::hosts_of_repo(&mut c, &repo.id).await?;
        (repo, old, creds)
    };
    let new = match patch {
        Some(p) => Some(to_secrets(&RepoSecretsInput {
            url: p.url.unwrap_or_else(|| old.repository.clone()),
            password: p.password.unwrap_or_else(|| old.password.clone()),
            env: p.env.unwrap_or_else(|| old.env.clone()),
        })?),
        None => None,
    }
    .filter(|n| *n != old);
    let name = name.filter(|n| *n != repo.name);
    if name.is_none() && new.is_none() {
        return Err(Fail::invalid(
            "nothing to change: give a new name, URL, password or environment",
        ));
    }
    let mut verified = None;
    if let Some(new) = &new {
        let Some(host_id) = verifier(req.verify_on_host.as_deref(), &repo, &creds) else {
            return Err(Fail::invalid(
                "no host is attached to verify the new credentials through; name one (verify_on_host)",
            ));
        };
        let host = {
            let mut c = cp.store.read().await?;
            hosts::get(&mut c, &host_id).await?
        };
        let access = RepoAccess {
            repo_id: repo.id.clone(),
            secrets: seal_to_host(cp, &host, new)?,
            append_only: false,
        };
        let reply = dispatch::query(cp, &host.id, CommandBody::RepoVerify { repo: access }).await?;
        if !reply.ok {
            let code = match reply.error_kind {
                Some(ErrorKind::WrongPassword) => "wrong_password",
                Some(ErrorKind::RepoMissing) => "repo_missing",
                Some(ErrorKind::Network) => "unreachable",
                _ => "verify_failed",
            };
            return Err(refuse(
                code,
                format!(
                    "opening the repository with the new credentials on {} failed: {}; nothing was changed",
                    host.name,
                    describe(&reply)
                ),
            ));
        }
        if let (Some(was), Some(now)) = (&repo.restic_repo_id, &reply.restic_repo_id)
            && was != now
        {
            return Err(refuse(
                "different_repository",
                format!(
                    "the new URL leads to a different restic repository (id {now}, this one is {was}); nothing was changed — add it as a new repository instead"
                ),
            ));
        }
        verified = Some((host.id, reply.restic_repo_id));
    }

    let now = cp.now();
    let (c, actor, repo_id) = (cp.clone(), actor.clone(), repo.id.clone());
    let (out, touched) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = &*c;
                let current = repos::get(&mut *tx, &repo.id).await?;
                if current.secrets_enc != repo.secrets_enc {
                    return Err(Fail::conflict(
                        "the repository's credentials changed while these were being verified; load it again and retry",
                    ));
                }
                let sealed = match &new {
                    Some(n) => Some((
                        redact_url(&n.repository),
                        cp.master.encrypt_json(n, &repo_aad(&repo.id))?,
                    )),
                    None => None,
                };
                repos::update(
                    &mut *tx,
                    &repo.id,
                    name.as_deref(),
                    sealed.as_ref().map(|(d, e)| (d.as_str(), e.as_slice())),
                )
                .await
                .map_err(named)?;
                let mut out = RepoUpdated::default();
                let mut touched = Vec::new();
                if let Some(new) = &new {
                    if let Some((_, restic_id)) = &verified {
                        repos::set_status(&mut *tx, &repo.id, "ok", None, restic_id.as_deref()).await?;
                    }
                    let runs_here: BTreeSet<String> = sched_store::for_repo(&mut *tx, &repo.id)
                        .await?
                        .into_iter()
                        .map(|s| s.exec_host_id)
                        .collect();
                    for cred in repos::hosts_of_repo(&mut *tx, &repo.id).await? {
                        let aad = cred_aad(&cred.host_id, &repo.id);
                        let mine: RepoSecrets = cp.master.decrypt_json(&cred.secrets_enc, &aad)?;
                        match follow(&mine, &old, new) {
                            Some(next) => {
                                let enc = cp.master.encrypt_json(&next, &aad)?;
                                repos::set_credential_secrets(&mut *tx, &cred.host_id, &repo.id, &enc).await?;
                                if runs_here.contains(&cred.host_id) {
                                    hosts::bump_config_version(&mut *tx, &cred.host_id).await?;
                                    touched.push(cred.host_id.clone());
                                }
                                out.hosts_updated.push(cred.host_id);
                            }
                            None => out.hosts_kept.push(cred.host_id),
                        }
                    }
                }
                out.verified_on = verified.map(|(h, _)| h);
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.update",
                    ("repo", &repo.id),
                    Some(serde_json::json!({
                        "name": name.as_ref().map(|n| serde_json::json!({"from": repo.name, "to": n})),
                        "url": new.as_ref().filter(|n| n.repository != old.repository).map(|n| redact_url(&n.repository)),
                        "password_changed": new.as_ref().is_some_and(|n| n.password != old.password),
                        "env_changed": new.as_ref().is_some_and(|n| n.env != old.env),
                        "verified_on": out.verified_on,
                        "hosts_updated": out.hosts_updated,
                        "hosts_kept": out.hosts_kept,
                    })),
                )
                .await?;
                Ok((out, touched))
            })
        })
        .await?;
    schedules::spawn_push(cp, touched);
    cp.event(Event::RepoChanged, None, None, Some(&repo_id))
        .await;
    Ok(out)
}

/// Removes `host_id`'s credential and, when asked, its schedules on the
/// repository, inside `tx`. Returns the hosts whose config changed and the
/// schedules deleted. Refusals are checked first, so nothing is written
/// when one applies.
async fn detach_in(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    repo: &repos::Repo,
    req: &RepoDetach,
) -> Outcome<(Vec<String>, Vec<String>)> {
    let host_id = req.host_id.as_str();
    let host_name = host_names(&mut *tx, std::slice::from_ref(&req.host_id)).await?;
    match repos::credential(&mut *tx, host_id, &repo.id).await {
        Ok(_) => {}
        Err(rm_store::StoreError::NotFound { .. }) => {
            return Err(refuse(
                "not_found",
                format!(
                    "host {host_name} is not attached to repository {}",
                    repo.name
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let own: Vec<sched_store::Schedule> = sched_store::for_repo(&mut *tx, &repo.id)
        .await?
        .into_iter()
        .filter(|s| s.host_id == host_id)
        .collect();
    if !own.is_empty() && !req.delete_schedules {
        let list = own
            .iter()
            .map(|s| format!("{} \"{}\" ({})", s.kind, s.cron, s.id))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(refuse(
            "has_schedules",
            format!(
                "host {host_name} has {} schedule(s) on repository {}: {list}; delete them with the detach (delete_schedules) or move them first",
                own.len(),
                repo.name
            ),
        ));
    }
    let is_maintenance = repo.maintenance_host_id.as_deref() == Some(host_id);
    if is_maintenance {
        match (&req.new_maintenance_host, req.no_maintenance_host) {
            (Some(h), _) if h == host_id => {
                return Err(refuse(
                    "maintenance_host",
                    "the new maintenance host must be another host",
                ));
            }
            (Some(h), _) => repos::set_maintenance_host(&mut *tx, &repo.id, Some(h)).await?,
            (None, true) => repos::set_maintenance_host(&mut *tx, &repo.id, None).await?,
            (None, false) => {
                return Err(refuse(
                    "maintenance_host",
                    format!(
                        "host {host_name} is the maintenance host of repository {} (it runs forget and prune for append-only hosts); choose another maintenance host with full access, or confirm the repository keeps none",
                        repo.name
                    ),
                ));
            }
        }
    }
    let mut touched = vec![req.host_id.clone()];
    let mut deleted = Vec::new();
    for s in &own {
        let exec = sched_store::delete(&mut *tx, &s.id).await?;
        touched.push(exec);
        deleted.push(s.id.clone());
    }
    repos::detach(&mut *tx, host_id, &repo.id).await?;
    touched.extend(schedules::reroute(cp, &mut *tx, &repo.id).await?);
    touched.sort();
    touched.dedup();
    for h in &touched {
        hosts::bump_config_version(&mut *tx, h).await?;
    }
    Ok((touched, deleted))
}

pub(crate) async fn detach(cp: &Arc<Cp>, actor: &Actor, req: RepoDetach) -> Outcome<Done> {
    let now = cp.now();
    let (c, actor, r) = (cp.clone(), actor.clone(), req.clone());
    let (repo, touched, deleted) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = &*c;
                let repo = repos::get(&mut *tx, &r.repo_id).await?;
                let (touched, deleted) = detach_in(cp, &mut *tx, &repo, &r).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.detach",
                    ("repo", &repo.id),
                    Some(serde_json::json!({
                        "host": r.host_id,
                        "schedules_deleted": deleted,
                        "maintenance_host": (repo.maintenance_host_id.as_deref() == Some(r.host_id.as_str()))
                            .then_some(r.new_maintenance_host.clone()),
                    })),
                )
                .await?;
                Ok((repo, touched, deleted))
            })
        })
        .await?;
    schedules::spawn_push(cp, touched);
    for s in &deleted {
        cp.event(Event::ScheduleChanged, Some(&req.host_id), None, Some(s))
            .await;
    }
    cp.event(Event::RepoChanged, Some(&req.host_id), None, Some(&repo.id))
        .await;
    Ok(Done {})
}

pub(crate) async fn delete(cp: &Arc<Cp>, actor: &Actor, req: RepoDelete) -> Outcome<Done> {
    let now = cp.now();
    let (actor, r) = (actor.clone(), req.clone());
    let (repo, touched) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let repo = repos::get(&mut *tx, &r.repo_id).await?;
                let running = jobs::unfinished_on_repo(&mut *tx, &repo.id).await?;
                if !running.is_empty() {
                    let ids: Vec<String> = running
                        .iter()
                        .map(|j| format!("{} {} ({})", j.kind, j.id, j.status))
                        .collect();
                    return Err(refuse(
                        "jobs_running",
                        format!(
                            "repository {} has jobs that have not ended: {}; wait for them or cancel them first",
                            repo.name,
                            ids.join(", ")
                        ),
                    ));
                }
                let attached: Vec<String> = repos::hosts_of_repo(&mut *tx, &repo.id)
                    .await?
                    .into_iter()
                    .map(|c| c.host_id)
                    .collect();
                if !attached.is_empty() && !r.detach_hosts {
                    let names = host_names(&mut *tx, &attached).await?;
                    return Err(refuse(
                        "hosts_attached",
                        format!(
                            "repository {} still has hosts attached: {names}; detach them first, or delete with detach_hosts to detach them (and delete their schedules on it) too",
                            repo.name
                        ),
                    ));
                }
                // Every host that runs something on it or holds a credential for it
                // gets a config without it.
                let mut touched: Vec<String> = sched_store::for_repo(&mut *tx, &repo.id)
                    .await?
                    .into_iter()
                    .map(|s| s.exec_host_id)
                    .chain(attached.iter().cloned())
                    .collect();
                touched.sort();
                touched.dedup();
                let schedules_deleted: Vec<String> = sched_store::for_repo(&mut *tx, &repo.id)
                    .await?
                    .into_iter()
                    .map(|s| s.id)
                    .collect();
                repos::delete(&mut *tx, &repo.id).await?;
                for h in &touched {
                    hosts::bump_config_version(&mut *tx, h).await?;
                }
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "repo.delete",
                    ("repo", &repo.id),
                    Some(serde_json::json!({
                        "name": repo.name,
                        "url": repo.url_display,
                        "hosts_detached": attached,
                        "schedules_deleted": schedules_deleted,
                        "data": "untouched",
                    })),
                )
                .await?;
                Ok((repo, touched))
            })
        })
        .await?;
    schedules::spawn_push(cp, touched);
    cp.event(Event::RepoChanged, None, None, Some(&repo.id))
        .await;
    Ok(Done {})
}
