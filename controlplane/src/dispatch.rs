//! Commands out to agents: queued jobs are dispatched (request/ack; the
//! agent persists the job before it acknowledges) when the host says hello,
//! when a job is queued, and periodically for jobs whose repository became
//! free; cancels and queries go the same way.

use std::sync::Arc;
use std::time::Duration;

use async_nats::RequestErrorKind;
use rm_bus::msg::{
    Ack, Command, CommandBody, JobKind, JobSpec, QueryReply, RepoAccess, decode, encode,
};
use rm_bus::reqack::{IdempotencyKey, RequestError, RetryPolicy, request_with_retry};
use rm_bus::seal::RepoSecrets;
use rm_bus::{HostId, JobId, subject};
use rm_store::repos::Access;
use rm_store::{hosts, jobs};

use crate::repos::{access_for, host_secrets, seal_to_host};
use crate::svc::{Fail, Outcome};
use crate::{Cp, lock};

fn host_id(h: &str) -> Outcome<HostId> {
    HostId::parse(h).map_err(|e| Fail::invalid(e.to_string()))
}

/// Sends a command that the agent answers with an [`Ack`], retrying per
/// `policy` with one idempotency key.
pub(crate) async fn command_ack(
    cp: &Cp,
    host: &str,
    body: CommandBody,
    policy: &RetryPolicy,
) -> Outcome<Ack> {
    let key = IdempotencyKey::new(format!("cmd:{}", rm_bus::ids::random_token(10)));
    command_ack_keyed(cp, host, body, policy, &key).await
}

async fn command_ack_keyed(
    cp: &Cp,
    host: &str,
    body: CommandBody,
    policy: &RetryPolicy,
    key: &IdempotencyKey,
) -> Outcome<Ack> {
    let subj = subject::cmd(&host_id(host)?);
    let msg = request_with_retry(&cp.client, &subj, key, encode(&Command::new(body)), policy)
        .await
        .map_err(|e| match e {
            // retrying cannot help: the caller fails what it was sending
            RequestError::TooLarge { too_large, .. } => {
                Fail::invalid(format!("the command is too large for the bus: {too_large}"))
            }
            e => Fail::unavailable(format!("host {host} did not answer: {e}")),
        })?;
    decode::<Ack>("ack", &msg.payload).map_err(|e| Fail::unavailable(e.to_string()))
}

/// A query the agent answers with a [`QueryReply`]. One attempt: queries
/// such as `init` must not run twice.
pub(crate) async fn query(cp: &Cp, host: &str, body: CommandBody) -> Outcome<QueryReply> {
    let subj = subject::cmd(&host_id(host)?);
    let req = async_nats::Request::new()
        .payload(encode(&Command::new(body)))
        .timeout(Some(cp.t.query_timeout));
    match cp.client.send_request(subj, req).await {
        Ok(msg) => decode::<QueryReply>("query reply", &msg.payload)
            .map_err(|e| Fail::unavailable(e.to_string())),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Err(Fail::unavailable(format!(
            "host {host} is offline (its agent is not connected)"
        ))),
        Err(e) if e.kind() == RequestErrorKind::TimedOut => Err(Fail::unavailable(format!(
            "host {host} did not answer within {:?}",
            cp.t.query_timeout
        ))),
        Err(e) if e.kind() == RequestErrorKind::MaxPayloadExceeded => Err(Fail::invalid(format!(
            "the query is too large for the bus: {e}"
        ))),
        Err(e) => Err(Fail::unavailable(format!("host {host}: {e}"))),
    }
}

/// The dispatcher loop: woken by new jobs and hellos, and periodically.
pub(crate) async fn serve(cp: Arc<Cp>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(cp.t.dispatch_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cp.dispatch_wake.notified() => {}
        }
        let hosts = match queued_hosts(&cp).await {
            Ok(h) => h,
            Err(e) => {
                cp.metrics.loop_error("dispatcher", &e.into());
                continue;
            }
        };
        for h in hosts {
            spawn_dispatch(&cp, h);
        }
    }
}

async fn queued_hosts(cp: &Cp) -> rm_store::Result<Vec<String>> {
    let mut c = cp.store.read().await?;
    jobs::hosts_with_queued(&mut c).await
}

/// Dispatches `host`'s queued jobs. When a pass for it is under way, that
/// pass runs once more when it ends (what woke us, e.g. a job finishing
/// and freeing its repository, may have come after it read the queue).
pub(crate) fn spawn_dispatch(cp: &Arc<Cp>, host: String) {
    {
        let mut d = lock(&cp.dispatching);
        if let Some(again) = d.get_mut(&host) {
            *again = true;
            return;
        }
        d.insert(host.clone(), false);
    }
    let cp = cp.clone();
    tokio::spawn(async move {
        loop {
            if let Err(f) = dispatch_host(&cp, &host).await {
                tracing::info!(host = %host, reason = %f.message, "dispatch postponed");
            }
            cp.metrics.dispatch_pass();
            let mut d = lock(&cp.dispatching);
            if d.get(&host).copied().unwrap_or(false) {
                d.insert(host.clone(), false);
                continue;
            }
            d.remove(&host);
            break;
        }
    });
}

async fn dispatch_host(cp: &Cp, exec_host: &str) -> Outcome<()> {
    let (host, queued) = {
        let mut c = cp.store.read().await?;
        let host = hosts::get(&mut c, exec_host).await?;
        (
            host,
            jobs::dispatchable_for(&mut c, exec_host, cp.now()).await?,
        )
    };
    if host.status()? != hosts::HostStatus::Online {
        return Ok(());
    }
    for job in queued {
        // The repository is claimed in one conditional statement before
        // the job leaves: prune, check and forget have it to themselves,
        // whichever dispatcher or agent asks at the same moment.
        let (id, now) = (job.id.clone(), cp.now());
        let claimed = cp
            .writer
            .run(move |tx| Box::pin(async move { jobs::claim_for_dispatch(tx, &id, now).await }))
            .await?;
        if !claimed {
            tracing::debug!(job = %job.id, repo = ?job.repo_id, "waiting for the repository");
            continue;
        }
        // Every way `dispatch_one` ends well also ends the claim, in the
        // transaction that records the outcome: marked dispatched (the
        // claim is dropped there), requeued (released there), or failed.
        // Only a dispatch that did not get that far (not sent, no answer,
        // a store error) still holds it and gives it up here.
        if let Err(f) = dispatch_one(cp, &host, &job).await {
            release(cp, &job.id).await;
            return Err(f);
        }
    }
    Ok(())
}

/// Gives up `job`'s dispatch claim; jobs that waited for its repository
/// (an exclusive check or forget of another host) may go now.
async fn release(cp: &Cp, job: &str) {
    let id = job.to_owned();
    let released = cp
        .writer
        .run(move |tx| Box::pin(async move { jobs::release_claim(tx, &id).await }))
        .await;
    match released {
        Ok(true) => cp.dispatch_wake.notify_one(),
        Ok(false) => {}
        Err(e) => tracing::warn!(job = %job, error = %e, "dispatch claim not released"),
    }
}

/// Sends one claimed job and records the agent's answer.
async fn dispatch_one(cp: &Cp, host: &hosts::Host, job: &jobs::Job) -> Outcome<()> {
    let exec_host = host.id.as_str();
    let spec = {
        let mut c = cp.store.read().await?;
        build_spec(cp, &mut c, host, job).await
    };
    let spec = match spec {
        Ok(s) => s,
        // A job that can never be dispatched fails now with the reason.
        Err(f) => return fail_job(cp, job, f.message).await,
    };
    let key = IdempotencyKey::new(format!("dispatch:{}", job.id));
    let ack = match command_ack_keyed(
        cp,
        exec_host,
        CommandBody::Dispatch { job: spec },
        &cp.t.dispatch,
        &key,
    )
    .await
    {
        Ok(ack) => ack,
        // never dispatchable (too large for the bus): fail it now rather
        // than retry it every tick
        Err(f) if f.code == "invalid" => return fail_job(cp, job, f.message).await,
        Err(f) => return Err(f),
    };
    if !ack.ok && ack.retry {
        return requeue(cp, job, ack.error.unwrap_or_default()).await;
    }
    if !ack.ok {
        tracing::warn!(job = %job.id, reason = ?ack.error, "agent refused the job");
        let reason = format!(
            "the agent refused the job: {}",
            ack.error.unwrap_or_default()
        );
        return fail_job(cp, job, reason).await;
    }
    if let Some(mark) = ack.accepted {
        // before the job shows as dispatched to a hello being handled
        lock(&cp.accept_marks).insert(job.id.clone(), mark);
    }
    let (id, now) = (job.id.clone(), cp.now());
    let now_status = cp
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let recorded = jobs::set_dispatched(&mut *tx, &id, now).await?;
                // Not recorded: the job moved on while the dispatch was in
                // flight — the agent already reported it, or an operator
                // cancelled it.
                if recorded {
                    return Ok(None);
                }
                Ok::<_, rm_store::StoreError>(Some(jobs::get(&mut *tx, &id).await?.status()?))
            })
        })
        .await?;
    match now_status {
        None => {
            tracing::info!(job = %job.id, host = %exec_host, kind = %job.kind, "job dispatched")
        }
        Some(jobs::JobStatus::Cancelled) => {
            // The agent holds it now, so it must hear about the cancel.
            tracing::info!(job = %job.id, host = %exec_host, "job cancelled during dispatch; telling the agent");
            crate::jobs::send_cancel(cp, exec_host, &job.id).await;
        }
        Some(status) => {
            tracing::info!(job = %job.id, host = %exec_host, status = status.as_str(), "job dispatched; the agent already reported on it");
        }
    }
    Ok(())
}

/// The agent refused the job for now: it stays queued and goes again
/// after a backoff, the reason visible on the job meanwhile.
async fn requeue(cp: &Cp, job: &jobs::Job, reason: String) -> Outcome<()> {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let reason = format!("the agent did not take the job for now: {reason}");
    let (id, why, now) = (job.id.clone(), reason.clone(), cp.now());
    let (first, most) = (
        millis(cp.t.requeue_backoff),
        millis(cp.t.requeue_backoff_max),
    );
    let (r, released) = cp
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let r = jobs::requeue(&mut *tx, &id, &why, now, first, most).await?;
                // it waits now: the repository is free meanwhile
                let released = jobs::release_claim(&mut *tx, &id).await?;
                Ok::<_, rm_store::StoreError>((r, released))
            })
        })
        .await?;
    if released {
        cp.dispatch_wake.notify_one();
    }
    if let Some((refusals, not_before)) = r {
        tracing::info!(job = %job.id, host = %job.exec_host_id, refusals, not_before, reason = %reason, "job requeued");
        cp.job_event(
            rm_bus::subject::Event::JobQueued,
            &job.host_id,
            &job.id,
            job.repo_id.as_deref(),
        )
        .await;
    }
    Ok(())
}

/// Fails a job that can never run, with the reason for the operator.
async fn fail_job(cp: &Cp, job: &jobs::Job, reason: String) -> Outcome<()> {
    let finish = jobs::Finish {
        error_kind: Some("invalid_request".into()),
        error: Some(reason),
        finished_at: cp.now(),
        ..jobs::Finish::default()
    };
    let id = job.id.clone();
    cp.writer
        .run(move |tx| {
            Box::pin(
                async move { jobs::finish(&mut *tx, &id, jobs::JobStatus::Failed, &finish).await },
            )
        })
        .await?;
    // its claim (if it held the repository) ended with it
    cp.dispatch_wake.notify_one();
    cp.job_event(
        rm_bus::subject::Event::JobFinished,
        &job.host_id,
        &job.id,
        job.repo_id.as_deref(),
    )
    .await;
    Ok(())
}

/// The job as the agent gets it: repository access sealed to the executing
/// host. A restore onto another host (that holds no credential of its own
/// for the repository) borrows a credential that cannot delete data — the
/// owner's if append-only, else another attached host's append-only one —
/// sealed to the target together with this job's id and parameters, so
/// the target's agent uses it for this restore only and a captured copy
/// cannot be replayed in a forged command.
async fn build_spec(
    cp: &Cp,
    conn: &mut rm_store::Conn,
    exec: &hosts::Host,
    job: &jobs::Job,
) -> Outcome<JobSpec> {
    let params = job.params()?;
    let job_id = JobId::parse(&job.id).map_err(|e| Fail::invalid(e.to_string()))?;
    let repo_id = job
        .repo_id
        .clone()
        .ok_or_else(|| Fail::invalid("the job's repository was deleted"))?;
    let repo = match host_secrets(cp, &mut *conn, &exec.id, &repo_id).await {
        Ok((secrets, access)) => access_for(cp, exec, &repo_id, &secrets, access)?,
        Err(_) if params.kind() == JobKind::Restore && job.host_id != exec.id => {
            let secrets = borrowed_read_credential(cp, &mut *conn, &job.host_id, &repo_id).await?;
            let sealed = rm_bus::seal::SealedSecrets {
                secrets,
                bound: Some(rm_bus::seal::JobBinding {
                    job_id: job.id.clone(),
                    params_sha256: rm_bus::seal::params_digest(&params),
                    read_only: true,
                }),
            };
            RepoAccess {
                repo_id: repo_id.clone(),
                secrets: seal_to_host(cp, exec, &sealed)?,
                append_only: true,
            }
        }
        Err(f) => return Err(f),
    };
    Ok(JobSpec {
        job_id,
        params,
        repo,
        timeout_secs: u64::try_from(job.timeout_secs).unwrap_or(0),
    })
}

/// A credential of `repo_id` that cannot delete data, for a restore onto
/// another host: `owner`'s when it is append-only, else any attached
/// host's append-only one. A full-access credential never leaves its host.
async fn borrowed_read_credential(
    cp: &Cp,
    conn: &mut rm_store::Conn,
    owner: &str,
    repo_id: &str,
) -> Outcome<RepoSecrets> {
    let mut candidates = vec![owner.to_owned()];
    for hr in rm_store::repos::hosts_of_repo(&mut *conn, repo_id).await? {
        if hr.host_id != owner {
            candidates.push(hr.host_id);
        }
    }
    for host in candidates {
        if let Ok((secrets, Access::AppendOnly)) =
            host_secrets(cp, &mut *conn, &host, repo_id).await
        {
            return Ok(secrets);
        }
    }
    Err(Fail::conflict(
        "a restore onto another host needs a credential that cannot delete data: attach an append-only credential for this repository (to the owner or another host), or give the target host its own",
    ))
}
