//! Jobs: creation with per-kind validation and routing (forget/prune on
//! an append-only credential go to the repository's maintenance host;
//! restore may target another host), cancellation in every state, and the
//! restore browser's `ls` query.

use std::sync::Arc;

use rm_bus::JobId;
use rm_bus::msg::{Actor, CommandBody, JobKind, JobParams, RestoreTarget};
use rm_bus::subject::Event;
use rm_store::jobs::{self, JobStatus, NewJob};
use rm_store::{hosts, repos as repo_store};

use crate::api::{JobCreate, JobCreated, JobRef, JobState, LsReply, LsRequest};
use crate::repos::{access_for, host_secrets};
use crate::schedules::{exec_host, pin_host_name};
use crate::svc::{Fail, Outcome};
use crate::{Cp, audit, dispatch};

fn nonempty(what: &str, s: &str) -> Outcome<()> {
    if s.trim().is_empty() || s.contains('\0') {
        return Err(Fail::invalid(format!("{what} is empty")));
    }
    Ok(())
}

/// Per-kind validation of job parameters.
pub(crate) fn validate_params(p: &JobParams) -> Outcome<()> {
    match p {
        JobParams::Backup {
            paths,
            excludes,
            tags,
            ..
        } => {
            if paths.is_empty() {
                return Err(Fail::invalid("a backup needs at least one path"));
            }
            for x in paths.iter().chain(excludes).chain(tags) {
                nonempty("a path, exclude or tag", x)?;
            }
            if tags.iter().any(|t| t.contains(',')) {
                return Err(Fail::invalid("tags cannot contain ','"));
            }
        }
        JobParams::Forget { retention, .. } | JobParams::ForgetPreview { retention, .. } => {
            let r = retention;
            let any = [
                r.keep_last,
                r.keep_hourly,
                r.keep_daily,
                r.keep_weekly,
                r.keep_monthly,
                r.keep_yearly,
            ]
            .iter()
            .any(|k| k.is_some_and(|n| n > 0))
                || r.keep_within
                    .as_deref()
                    .is_some_and(|w| !w.trim().is_empty());
            if !any {
                return Err(Fail::invalid(
                    "forget needs a retention policy (at least one keep-* option); without one it would remove every snapshot",
                ));
            }
            if let Some(w) = &r.keep_within {
                let ok =
                    !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || "ymdh".contains(c));
                if !ok {
                    return Err(Fail::invalid(format!(
                        "keep-within {w:?} must look like 1y6m3d or 48h"
                    )));
                }
            }
        }
        JobParams::Check { read_data_subset } => {
            if let Some(s) = read_data_subset {
                let pct = s
                    .strip_suffix('%')
                    .is_some_and(|n| n.parse::<f64>().is_ok_and(|v| v > 0.0 && v <= 100.0));
                let frac = s.split_once('/').is_some_and(|(a, b)| {
                    a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok_and(|b| b > 0)
                });
                if !(pct || frac) {
                    return Err(Fail::invalid(format!(
                        "read-data-subset {s:?} must be like 5% or 1/10"
                    )));
                }
            }
        }
        JobParams::Diff { from, to } => {
            nonempty("the first snapshot", from)?;
            nonempty("the second snapshot", to)?;
        }
        JobParams::Restore {
            snapshot,
            include,
            target,
        } => {
            nonempty("the snapshot", snapshot)?;
            for i in include {
                nonempty("an include path", i)?;
            }
            if let RestoreTarget::Path { path } = target
                && !(path.starts_with('/') || path.get(1..3) == Some(":\\"))
            {
                return Err(Fail::invalid("the restore target must be an absolute path"));
            }
        }
        JobParams::Stats { snapshot, .. } => {
            if let Some(s) = snapshot {
                nonempty("the snapshot", s)?;
            }
        }
        JobParams::Prune {}
        | JobParams::Unlock { .. }
        | JobParams::Snapshots { .. }
        | JobParams::Locks {} => {}
        JobParams::Unknown => return Err(Fail::invalid("unknown job kind")),
    }
    Ok(())
}

pub(crate) async fn create(cp: &Arc<Cp>, actor: &Actor, req: JobCreate) -> Outcome<JobCreated> {
    validate_params(&req.params)?;
    let kind = req.params.kind();
    let now = cp.now();
    let (c, actor) = (cp.clone(), actor.clone());
    let (owner_id, id, exec, repo_id) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = c;
                let owner = hosts::get(&mut *tx, &req.host_id).await?;
                if owner.status()? == hosts::HostStatus::Revoked {
                    return Err(Fail::conflict(format!("host {} is revoked", owner.name)));
                }
                let Some(restic_host) = owner.restic_host.clone() else {
                    return Err(Fail::conflict(format!(
                        "host {} is not enrolled yet",
                        owner.name
                    )));
                };
                repo_store::get(&mut *tx, &req.repo_id).await?;
                let exec = match (&req.target_host_id, kind) {
                    (Some(target), JobKind::Restore) => {
                        let t = hosts::get(&mut *tx, target).await?;
                        if t.xkey.is_none() || t.status()? == hosts::HostStatus::Revoked {
                            return Err(Fail::conflict(format!(
                                "restore target {} is not an enrolled host",
                                t.name
                            )));
                        }
                        // the owner must hold a credential the target can borrow
                        repo_store::credential(&mut *tx, &owner.id, &req.repo_id).await?;
                        t.id
                    }
                    (Some(_), _) => return Err(Fail::invalid("only a restore can run on another host")),
                    (None, _) => exec_host(&mut *tx, &owner.id, &req.repo_id, kind).await?,
                };
                let params = pin_host_name(req.params, &restic_host);
                let id = JobId::generate();
                let timeout = req.timeout_secs.map_or_else(
                    || i64::try_from(cp.t.default_job_timeout.as_secs()).unwrap_or(i64::MAX),
                    |s| i64::try_from(s).unwrap_or(i64::MAX),
                );
                jobs::insert(
                    &mut *tx,
                    &NewJob {
                        id: id.as_str(),
                        host_id: &owner.id,
                        exec_host_id: &exec,
                        repo_id: Some(&req.repo_id),
                        params: &params,
                        origin: "operator",
                        schedule_id: None,
                        status: JobStatus::Queued,
                        timeout_secs: timeout,
                        created_by: &actor.name,
                        created_at: now,
                        started_at: None,
                    },
                )
                .await?;
                audit::record(&mut *tx, now, &actor, "job.create", ("job", id.as_str()), Some(serde_json::json!({"host": owner.id, "exec_host": exec, "repo": req.repo_id, "params": params}))).await?;
                Ok((owner.id, id, exec, req.repo_id))
            })
        })
        .await?;
    cp.job_event(Event::JobQueued, &owner_id, id.as_str(), Some(&repo_id))
        .await;
    dispatch::spawn_dispatch(cp, exec.clone());
    Ok(JobCreated {
        job_id: id.to_string(),
        exec_host_id: exec,
    })
}

pub(crate) async fn cancel(cp: &Arc<Cp>, actor: &Actor, req: JobRef) -> Outcome<JobState> {
    let now = cp.now();
    let actor = actor.clone();
    let job = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let job = jobs::request_cancel(&mut *tx, &req.job_id, now).await?;
                audit::record(&mut *tx, now, &actor, "job.cancel", ("job", &job.id), None).await?;
                Ok(job)
            })
        })
        .await?;
    let status = job.status()?;
    if status == JobStatus::Cancelled {
        cp.job_event(
            Event::JobFinished,
            &job.host_id,
            &job.id,
            job.repo_id.as_deref(),
        )
        .await;
    } else if !status.is_terminal() {
        send_cancel(cp, &job.exec_host_id, &job.id).await;
    }
    Ok(JobState {
        job_id: job.id,
        status: status.as_str().into(),
    })
}

/// Tells the agent to cancel; if it is unreachable the flag stays set and
/// the next hello repeats the cancel.
pub(crate) async fn send_cancel(cp: &Cp, exec_host: &str, job_id: &str) {
    let Ok(job) = JobId::parse(job_id) else {
        return;
    };
    if let Err(f) = dispatch::command_ack(
        cp,
        exec_host,
        CommandBody::Cancel { job_id: job },
        &cp.t.dispatch,
    )
    .await
    {
        tracing::info!(job = %job_id, host = %exec_host, reason = %f.message, "cancel not delivered yet; repeated at the next hello");
    }
}

pub(crate) async fn ls(cp: &Cp, req: LsRequest) -> Outcome<LsReply> {
    nonempty("the snapshot", &req.snapshot)?;
    let (host, secrets, access) = {
        let mut c = cp.store.read().await?;
        let host = hosts::get(&mut c, &req.host_id).await?;
        let (s, a) = host_secrets(cp, &mut c, &host.id, &req.repo_id).await?;
        (host, s, a)
    };
    let repo = access_for(cp, &host, &req.repo_id, &secrets, access)?;
    let dir = if req.dir.is_empty() {
        "/".to_owned()
    } else {
        req.dir
    };
    dispatch::query(
        cp,
        &host.id,
        CommandBody::Ls {
            repo,
            snapshot: req.snapshot,
            dir,
        },
    )
    .await
}
