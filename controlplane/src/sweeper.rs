//! Background upkeep: marks hosts offline after missed heartbeats (only
//! once the control plane itself has been connected long enough, so a
//! restart never flags a healthy fleet), pushes the account JWT at start
//! (revocations survive restarts of either side), applies retention, and
//! records repository state from finished jobs.

use std::sync::Arc;

use rm_bus::msg::{JobDone, JobOutcome};
use rm_bus::subject::Event;
use rm_store::{hosts, jobs, retention, snapshots};

use crate::{Cp, lock};

pub(crate) async fn serve(cp: Arc<Cp>) -> anyhow::Result<()> {
    push_account_until_ok(&cp).await;
    let mut tick = tokio::time::interval(cp.t.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let window = cp.t.heartbeat * cp.t.offline_after_missed;
        let settled = lock(&cp.connected_since).is_some_and(|since| since.elapsed() >= window);
        if settled {
            let now = cp.now();
            let before = now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
            let mut tx = cp.store.write().await?;
            let gone = hosts::mark_stale_offline(&mut tx, before, now).await?;
            tx.commit().await?;
            for h in gone {
                tracing::warn!(host = %h, "host offline: heartbeats missed");
                cp.event(Event::HostOffline, Some(&h), None, None).await;
            }
        }
        if last_purge.elapsed() >= cp.t.retention_every {
            last_purge = tokio::time::Instant::now();
            let mut tx = cp.store.write().await?;
            let purged = retention::purge(&mut tx, cp.now(), cp.t.retention).await?;
            tx.commit().await?;
            tracing::info!(
                jobs = purged.jobs,
                audit = purged.audit,
                deliveries = purged.deliveries,
                "retention applied"
            );
        }
    }
}

/// The bus must know every revocation even after either side restarted.
async fn push_account_until_ok(cp: &Arc<Cp>) {
    let cp = cp.clone();
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match rm_bus::creds::push::push_account(&cp.system, &cp.authority).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "account JWT not pushed yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    });
}

/// Repository state from a finished job, in the ingest transaction: the
/// snapshot a backup made goes into the snapshots cache.
pub(crate) async fn after_done(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    job: &jobs::Job,
    done: &JobDone,
) -> anyhow::Result<()> {
    let Some(repo) = &job.repo_id else {
        return Ok(());
    };
    if job.kind == "backup" && matches!(done.outcome, JobOutcome::Succeeded | JobOutcome::Warning) {
        let Some(summary) = &done.summary else {
            return Ok(());
        };
        let Some(id) = summary.get("snapshot_id").and_then(|s| s.as_str()) else {
            return Ok(());
        };
        let host = hosts::get(&mut *tx, &job.host_id).await?;
        let params = job.params()?;
        let (paths, tags) = match &params {
            rm_bus::msg::JobParams::Backup { paths, tags, .. } => (paths.clone(), tags.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        snapshots::upsert(
            &mut *tx,
            &snapshots::Snapshot {
                repo_id: repo.clone(),
                snapshot_id: id.to_owned(),
                short_id: id.chars().take(8).collect(),
                hostname: host.restic_host.unwrap_or_default(),
                time: done.finished_ms,
                paths_json: serde_json::to_string(&paths)?,
                tags_json: serde_json::to_string(&tags)?,
                summary_json: Some(summary.to_string()),
                seen_at: cp.now(),
            },
        )
        .await?;
    }
    Ok(())
}
