//! Schedules and agent config: create, edit, enable/disable and delete
//! schedules; route forget/prune to the repository's maintenance host when
//! the owner's credential is append-only; every change bumps the executing
//! host's config version and pushes `config changed` (hello re-syncs a host
//! that missed the push).

use std::sync::Arc;

use rm_bus::msg::{Ack, Actor, AgentConfig, CommandBody, JobKind, JobParams, ScheduleSpec, encode};
use rm_bus::subject::Event;
use rm_store::repos::Access;
use rm_store::{hosts, repos as repo_store, schedules};

use crate::api::{Done, SchedulePut, ScheduleRef, ScheduleSaved};
use crate::repos::{access_for, host_secrets};
use crate::svc::{Fail, Outcome};
use crate::{Cp, audit, dispatch};

/// Validates a cron expression and an IANA time zone with the shared cron
/// module (the one the agent's scheduler and the stale-schedule rule use).
pub(crate) fn check_cron(cron: &str, tz: &str) -> Outcome<()> {
    rm_cron::CronSchedule::parse(cron, tz)
        .map(|_| ())
        .map_err(|e| Fail::invalid(e.to_string()))
}

/// Which host runs a job or schedule of `kind` for `owner` on `repo`:
/// forget and prune go to the maintenance host when the owner's credential
/// is append-only; a retention preview runs where the real forget would
/// (the maintenance host when there is one, with its full credential),
/// else on the owner.
pub(crate) async fn exec_host(
    conn: &mut rm_store::Conn,
    owner: &str,
    repo_id: &str,
    kind: JobKind,
) -> Outcome<String> {
    let cred = repo_store::credential(&mut *conn, owner, repo_id)
        .await
        .map_err(|e| match e {
            rm_store::StoreError::NotFound { .. } => Fail::conflict(format!(
                "host {owner} has no credential for repository {repo_id}; attach it first"
            )),
            other => Fail::from(other),
        })?;
    if kind == JobKind::ForgetPreview {
        let repo = repo_store::get(&mut *conn, repo_id).await?;
        return Ok(repo.maintenance_host_id.unwrap_or_else(|| owner.to_owned()));
    }
    let destructive = matches!(kind, JobKind::Forget | JobKind::Prune);
    if !destructive || cred.access()? == Access::Full {
        return Ok(owner.to_owned());
    }
    let repo = repo_store::get(conn, repo_id).await?;
    repo.maintenance_host_id.ok_or_else(|| {
        Fail::conflict(format!(
            "{} needs a maintenance host: host {owner} holds an append-only credential for repository {}, which cannot delete data; choose a maintenance host with full access for the repository",
            if kind == JobKind::Forget { "forget" } else { "prune" },
            repo.name
        ))
    })
}

/// Fills in what the control plane decides, not the client: the restic
/// `--host` of forget (so one host's retention never touches another's
/// snapshots) and of backup.
pub(crate) fn pin_host_name(params: JobParams, restic_host: &str) -> JobParams {
    match params {
        JobParams::Forget {
            retention, prune, ..
        } => JobParams::Forget {
            retention,
            host_name: restic_host.to_owned(),
            prune,
        },
        JobParams::ForgetPreview { retention, .. } => JobParams::ForgetPreview {
            retention,
            host_name: restic_host.to_owned(),
        },
        JobParams::Backup {
            paths,
            excludes,
            tags,
            one_file_system,
            ..
        } => JobParams::Backup {
            paths,
            excludes,
            tags,
            one_file_system,
            host_name: Some(restic_host.to_owned()),
        },
        other => other,
    }
}

pub(crate) async fn put(cp: &Arc<Cp>, actor: &Actor, req: SchedulePut) -> Outcome<ScheduleSaved> {
    let kind = req.params.kind();
    if !matches!(
        kind,
        JobKind::Backup | JobKind::Forget | JobKind::Prune | JobKind::Check
    ) {
        return Err(Fail::invalid(
            "schedules run backup, forget, prune or check",
        ));
    }
    crate::jobs::validate_params(&req.params)?;
    check_cron(&req.cron, &req.timezone)?;
    let now = cp.now();
    let (c, actor, r) = (cp.clone(), actor.clone(), req);
    let (owner, id, version, touched) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = &*c;
                let owner = hosts::get(&mut *tx, &r.host_id).await?;
                let Some(restic_host) = owner.restic_host.clone() else {
                    return Err(Fail::conflict(format!(
                        "host {} is not enrolled yet",
                        owner.name
                    )));
                };
                let exec = exec_host(&mut *tx, &owner.id, &r.repo_id, kind).await?;
                let (id, created_at, old_exec) = match &r.schedule_id {
                    Some(id) => {
                        let old = schedules::get(&mut *tx, id).await?;
                        if old.host_id != owner.id {
                            return Err(Fail::invalid("a schedule cannot move to another host"));
                        }
                        (id.clone(), old.created_at, Some(old.exec_host_id))
                    }
                    None => (format!("s{}", rm_bus::ids::random_token(10)), now, None),
                };
                let version = hosts::bump_config_version(&mut *tx, &exec).await?;
                let params = pin_host_name(r.params, &restic_host);
                let row = schedules::Schedule {
                    id: id.clone(),
                    host_id: owner.id.clone(),
                    repo_id: r.repo_id.clone(),
                    kind: serde_json::to_value(kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    cron: r.cron.trim().to_owned(),
                    timezone: r.timezone.clone(),
                    params_json: serde_json::to_string(&params).map_err(anyhow::Error::from)?,
                    enabled: r.enabled,
                    jitter_secs: i64::try_from(r.jitter_secs).unwrap_or(i64::MAX),
                    timeout_secs: r.timeout_secs.map_or_else(
                        || secs(cp.t.default_job_timeout),
                        |s| i64::try_from(s).unwrap_or(i64::MAX),
                    ),
                    grace_secs: r
                        .grace_secs
                        .map_or(3600, |s| i64::try_from(s).unwrap_or(i64::MAX)),
                    exec_host_id: exec.clone(),
                    config_version: version,
                    created_at,
                    updated_at: now,
                };
                schedules::upsert(&mut *tx, &row).await?;
                let mut touched = vec![exec.clone()];
                if let Some(old) = old_exec.filter(|o| *o != exec) {
                    hosts::bump_config_version(&mut *tx, &old).await?;
                    touched.push(old);
                }
                let action = if r.schedule_id.is_some() {
                    "schedule.edit"
                } else {
                    "schedule.create"
                };
                audit::record(&mut *tx, now, &actor, action, ("schedule", &id), Some(serde_json::json!({"host": owner.id, "cron": row.cron, "timezone": row.timezone, "enabled": row.enabled}))).await?;
                Ok((owner, id, version, touched))
            })
        })
        .await?;
    spawn_push(cp, touched);
    cp.event(Event::ScheduleChanged, Some(&owner.id), None, Some(&id))
        .await;
    Ok(ScheduleSaved {
        schedule_id: id,
        config_version: version,
    })
}

pub(crate) async fn delete(cp: &Arc<Cp>, actor: &Actor, req: ScheduleRef) -> Outcome<Done> {
    let now = cp.now();
    let (actor, schedule_id) = (actor.clone(), req.schedule_id.clone());
    let exec = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let exec = schedules::delete(&mut *tx, &schedule_id).await?;
                hosts::bump_config_version(&mut *tx, &exec).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "schedule.delete",
                    ("schedule", &schedule_id),
                    None,
                )
                .await?;
                Ok(exec)
            })
        })
        .await?;
    spawn_push(cp, vec![exec.clone()]);
    cp.event(Event::ScheduleChanged, None, None, Some(&req.schedule_id))
        .await;
    Ok(Done {})
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Recomputes where each schedule of a repository runs (after a credential
/// or maintenance-host change); bumps the config of hosts that gain or lose
/// one. Returns those hosts.
pub(crate) async fn reroute(
    _cp: &Cp,
    conn: &mut rm_store::Conn,
    repo_id: &str,
) -> Outcome<Vec<String>> {
    let all = schedules::for_repo(&mut *conn, repo_id).await?;
    let mut touched = Vec::new();
    for mut s in all {
        let kind = s.params()?.kind();
        let exec = match exec_host(&mut *conn, &s.host_id, repo_id, kind).await {
            Ok(e) => e,
            Err(f) => {
                tracing::warn!(schedule = %s.id, reason = %f.message, "schedule cannot be routed; it stays where it was");
                continue;
            }
        };
        if exec != s.exec_host_id {
            let old = std::mem::replace(&mut s.exec_host_id, exec.clone());
            hosts::bump_config_version(&mut *conn, &old).await?;
            s.config_version = hosts::bump_config_version(&mut *conn, &exec).await?;
            schedules::upsert(&mut *conn, &s).await?;
            touched.push(old);
            touched.push(exec);
        }
    }
    touched.sort();
    touched.dedup();
    Ok(touched)
}

/// The config an agent runs: every schedule it executes, with repository
/// access sealed to it.
pub(crate) async fn build_config(
    cp: &Cp,
    conn: &mut rm_store::Conn,
    host: &hosts::Host,
) -> Outcome<AgentConfig> {
    let mut specs = Vec::new();
    for s in schedules::executed_by(&mut *conn, &host.id).await? {
        let built = async {
            let (secrets, access) = host_secrets(cp, &mut *conn, &host.id, &s.repo_id).await?;
            Ok::<_, Fail>(ScheduleSpec {
                schedule_id: s.id.clone(),
                cron: s.cron.clone(),
                timezone: s.timezone.clone(),
                enabled: s.enabled,
                jitter_secs: u64::try_from(s.jitter_secs).unwrap_or(0),
                params: s.params()?,
                repo: access_for(cp, host, &s.repo_id, &secrets, access)?,
                timeout_secs: u64::try_from(s.timeout_secs).unwrap_or(0),
            })
        }
        .await;
        match built {
            Ok(spec) => specs.push(spec),
            Err(f) => {
                tracing::warn!(schedule = %s.id, host = %host.id, reason = %f.message, "schedule left out of the agent's config")
            }
        }
    }
    Ok(AgentConfig {
        version: u64::try_from(host.config_version).unwrap_or(0),
        heartbeat_secs: Some(cp.t.heartbeat.as_secs().max(1)),
        schedules: specs,
    })
}

/// Sends a config as one `ConfigChanged`, or — too large for the bus's
/// `max_payload` — as `ConfigPart`s in order; the answer to the last part
/// says whether the agent applied it.
async fn send_config(cp: &Cp, host_id: &str, config: AgentConfig) -> Outcome<Ack> {
    let max = rm_bus::size::max_payload(&cp.client);
    let version = config.version;
    let text = encode(&config);
    // the command around the config adds a few bytes and a header
    if rm_bus::size::check_against(max, rm_bus::size::ENVELOPE_RESERVE, text.len()).is_ok() {
        let whole = CommandBody::ConfigChanged { config };
        return dispatch::command_ack(cp, host_id, whole, &cp.t.config_push).await;
    }
    let text = String::from_utf8_lossy(&text);
    let chunks = rm_bus::size::split_text(&text, rm_bus::size::chunk_len(max));
    let total = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    tracing::info!(host = %host_id, version, bytes = text.len(), parts = total, "config too large for one message; sending it in parts");
    let mut last = Ack::ok();
    for (index, data) in (0u32..).zip(chunks) {
        let part = CommandBody::ConfigPart {
            version,
            index,
            total,
            data: data.to_owned(),
        };
        last = dispatch::command_ack(cp, host_id, part, &cp.t.config_push).await?;
        if !last.ok {
            break;
        }
    }
    Ok(last)
}

/// Pushes the current config to each host in the background.
pub(crate) fn spawn_push(cp: &Arc<Cp>, hosts: Vec<String>) {
    let cp = cp.clone();
    tokio::spawn(async move { push_configs(&cp, hosts).await });
}

/// Pushes the current config to each (online) host and records the
/// version it confirms. A failure is retried by the resync sweep
/// (`resync`) and by the host's next hello.
pub(crate) async fn push_configs(cp: &Cp, host_ids: Vec<String>) {
    for id in host_ids {
        if let Err(e) = push_config(cp, &id).await {
            tracing::info!(host = %id, reason = %e.message, "config push not confirmed; the resync sweep tries again");
        }
    }
}

/// Pushes `host_id`'s current config; true once the agent confirmed it
/// (false: offline, or the agent did not apply it).
pub(crate) async fn push_config(cp: &Cp, host_id: &str) -> Outcome<bool> {
    let (host, config) = {
        let mut c = cp.store.read().await?;
        let host = hosts::get(&mut c, host_id).await?;
        if host.status()? != hosts::HostStatus::Online {
            return Ok(false);
        }
        let config = build_config(cp, &mut c, &host).await?;
        (host, config)
    };
    let version = config.version;
    let ack = send_config(cp, &host.id, config).await?;
    if ack.ok {
        let applied = i64::try_from(version).unwrap_or(0);
        let id = host.id.clone();
        cp.writer
            .run(move |tx| {
                Box::pin(async move { hosts::set_applied_config(tx, &id, applied).await })
            })
            .await?;
    }
    Ok(ack.ok)
}
