//! The deadline sweeper: every job reaches a terminal state. Run on each
//! sweeper tick, it ends jobs that would otherwise never end:
//!
//! - queued jobs of a revoked executing host: `cancelled`;
//! - dispatched or running jobs of a revoked host: `lost`;
//! - dispatched or running jobs an operator cancelled whose host has been
//!   silent for the grace: `cancelled` (the agent is told at its next hello
//!   if it still holds them);
//! - dispatched jobs that never started on a host offline for the grace:
//!   `lost` at once, not at their timeout, so the repository they hold
//!   (an exclusive prune elsewhere waits for it) is free again;
//! - dispatched or running jobs with no result past their timeout plus the
//!   grace (a host that never came back, a `started` that never arrived, a
//!   silent agent): `lost`. A late real result still wins.
//!
//! The reason goes in the job's `error`; `rm.evt.job.finished` is published
//! for each after the commit.

use std::sync::Arc;

use rm_bus::subject::Event;
use rm_store::jobs::{self, Finish, JobStatus, Overdue};

use crate::{Cp, lock};

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What the sweeper makes of one overdue job, and why.
fn verdict(o: &Overdue, grace_secs: u64) -> (JobStatus, String) {
    let host = &o.host_name;
    if o.host_status == "revoked" {
        if o.status == "queued" {
            return (
                JobStatus::Cancelled,
                format!("host {host} was revoked before the job reached it"),
            );
        }
        return (
            JobStatus::Lost,
            format!(
                "host {host} was revoked while the job was {}; its result will not arrive",
                o.status
            ),
        );
    }
    if o.cancel_requested && o.host_status != "online" {
        return (
            JobStatus::Cancelled,
            format!(
                "cancelled while host {host} was {}; ended after a grace of {grace_secs}s without an answer",
                o.host_status
            ),
        );
    }
    if o.offline_before_start {
        return (
            JobStatus::Lost,
            format!(
                "host {host} went offline before the job started and stayed away for the grace of {grace_secs}s; \
                 its repository is released for other jobs; its result may still arrive"
            ),
        );
    }
    (
        JobStatus::Lost,
        format!(
            "no result within the job's timeout ({}s) plus a grace of {grace_secs}s (host {host} is {}); its result may still arrive",
            o.timeout_secs, o.host_status
        ),
    )
}

/// One pass: ends every overdue job in one transaction, then publishes.
pub(crate) async fn sweep(cp: &Arc<Cp>) -> anyhow::Result<()> {
    let now = cp.now();
    let grace = cp.t.job_deadline_grace;
    let (grace_ms, default_ms) = (millis(grace), millis(cp.t.default_job_timeout));
    // A look on a read connection first: most ticks find nothing and
    // queue no write.
    let seen = {
        let mut c = cp.store.read().await?;
        jobs::overdue(&mut c, now, grace_ms, default_ms).await?
    };
    if seen.is_empty() {
        return Ok(());
    }
    // Decided again inside the write: a result may have come meanwhile.
    let ended = cp
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let overdue = jobs::overdue(&mut *tx, now, grace_ms, default_ms).await?;
                let mut ended = Vec::with_capacity(overdue.len());
                for o in overdue {
                    let (status, reason) = verdict(&o, grace.as_secs());
                    let f = Finish {
                        error: Some(reason.clone()),
                        finished_at: now,
                        ..Finish::default()
                    };
                    if jobs::finish(&mut *tx, &o.id, status, &f).await? {
                        ended.push((o, status, reason));
                    }
                }
                Ok::<_, anyhow::Error>(ended)
            })
        })
        .await?;
    for (o, status, reason) in &ended {
        lock(&cp.accept_marks).remove(&o.id);
        tracing::warn!(job = %o.id, host = %o.exec_host_id, status = status.as_str(), reason = %reason, "job ended by the deadline sweeper");
        cp.job_event(Event::JobFinished, &o.host_id, &o.id, o.repo_id.as_deref())
            .await;
    }
    if !ended.is_empty() {
        // a repository may have become free
        cp.dispatch_wake.notify_one();
    }
    Ok(())
}
