//! Background upkeep, two loops each on a task of its own: one marks
//! hosts offline after missed heartbeats (only once the control plane
//! itself has been connected long enough, so a restart never flags a
//! healthy fleet); the other pushes the account JWT at start (revocations
//! survive restarts of either side), ends jobs that will never end on
//! their own (`deadlines`), pushes configs an agent does not run yet
//! again (`resync`), applies retention, and queues the repository health
//! refreshes that are due (`health::refresh_due`). Apart, a slow step of
//! the second (a fleet-wide read on a starved host) never delays offline
//! detection. Errors are logged and counted; the loops go on.

use std::collections::HashSet;
use std::sync::Arc;

use rm_bus::subject::Event;
use rm_store::{hosts, retention};

use crate::{Cp, lock};

/// Both loops. A store error (database busy, read-only, full) is logged
/// and counted and the loop goes on with the next tick: only a shutdown
/// ends them (dropping this future aborts both tasks).
pub(crate) async fn serve(cp: Arc<Cp>) -> anyhow::Result<()> {
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(offline_loop(cp.clone()));
    loops.spawn(upkeep_loop(cp));
    match loops.join_next().await {
        Some(Err(e)) => Err(anyhow::anyhow!("an upkeep loop ended abnormally: {e}")),
        _ => Err(anyhow::anyhow!("an upkeep loop ended")),
    }
}

/// Marks silent hosts offline every heartbeat interval.
async fn offline_loop(cp: Arc<Cp>) {
    let mut tick = tokio::time::interval(cp.t.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_offline(&cp).await {
            cp.metrics.loop_error("sweeper", &e);
        }
    }
}

/// Everything else the sweeper does, every heartbeat interval.
async fn upkeep_loop(cp: Arc<Cp>) {
    push_account_until_ok(&cp).await;
    let mut tick = tokio::time::interval(cp.t.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if let Err(e) = crate::deadlines::sweep(&cp).await {
            cp.metrics.loop_error("deadline sweeper", &e);
        }
        if let Err(e) = crate::resync::sweep(&cp).await {
            cp.metrics.loop_error("config resync", &e);
        }
        match crate::health::refresh_due(&cp).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(repositories = n, "repository health refresh queued");
                cp.dispatch_wake.notify_one();
            }
            Err(e) => cp.metrics.loop_error("health refresh", &e),
        }
        if last_purge.elapsed() >= cp.t.retention_every {
            last_purge = tokio::time::Instant::now();
            if let Err(e) = purge(&cp).await {
                cp.metrics.loop_error("retention", &e);
            }
        }
    }
}

/// Marks hosts offline whose heartbeats stopped, once the control plane
/// has itself been connected for the whole window; a host not heard since
/// it connected, for [`MASS_SILENCE_WINDOWS`] windows.
async fn sweep_offline(cp: &Arc<Cp>) -> anyhow::Result<()> {
    let window = cp.t.heartbeat * cp.t.offline_after_missed;
    let connected_for = lock(&cp.connected_since).map(|since| since.elapsed());
    let settled = connected_for.is_some_and(|d| d >= window);
    if !settled {
        cp.metrics.offline_sweep_unsettled();
        return Ok(());
    }
    let began = tokio::time::Instant::now();
    let now = cp.now();
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    // Read first, write only the hosts that really went silent: every
    // online host's id (from an index alone), less those the memory heard
    // since (the stored last-seen lags by up to one flush), less those
    // whose stored last-seen is fresh (a hello writes it; the memory does
    // not see hellos).
    let (silent, before) = {
        let mut c = cp.store.read().await?;
        let online = hosts::online_ids(&mut c).await?;
        let fleet = online.len();
        // Silent for the window and for as long as delivery runs behind
        // (at most one more window): a beat held up on the bus or in this
        // process is not a host gone (`delivery`).
        let heartbeat_ms = i64::try_from(cp.t.heartbeat.as_millis()).unwrap_or(i64::MAX);
        let behind = cp
            .beats
            .delivery_behind(now, fleet, heartbeat_ms)
            .min(window_ms);
        cp.metrics.offline_sweep_behind(behind);
        if behind > 0 {
            tracing::debug!(
                behind_ms = behind,
                "heartbeat delivery behind: the offline window waits as long"
            );
        }
        let before = now - window_ms - behind;
        let unheard = cp.beats.not_heard_since(online, before);
        // a host whose beats came through a bus node quiet right now
        // waits as long as the node has been (its first freeze, which the
        // late beats above learn of only when its backlog arrives)
        let (unheard, held, held_ms) = cp
            .beats
            .not_held_by_their_node(unheard, now, window_ms, behind);
        cp.metrics.offline_sweep_held_by_node(held, held_ms);
        if held > 0 {
            tracing::debug!(
                hosts = held,
                wait_ms = held_ms,
                "hosts silent behind a quiet bus node: they wait as long as it"
            );
        }
        let mut silent = hosts::stale_among(&mut c, &unheard, before).await?;
        // After a start (or a reconnect to the bus), every host not heard
        // again yet was last heard before this control plane stopped (or
        // lost the bus), and it may still be reconnecting: it goes offline
        // only once this control plane has listened for the longer window.
        // (Its report came late anyway: the stop delayed it.)
        let listened = connected_for.unwrap_or_default();
        let longer_window = window * MASS_SILENCE_WINDOWS;
        if listened < longer_window && !silent.is_empty() {
            let start = now - i64::try_from(listened.as_millis()).unwrap_or(i64::MAX);
            let unheard_since_start = cp.beats.not_heard_since(silent.clone(), start);
            let waiting: HashSet<String> = hosts::stale_among(&mut c, &unheard_since_start, start)
                .await?
                .into_iter()
                .collect();
            cp.metrics.offline_sweep_held_since_start(waiting.len());
            if !waiting.is_empty() {
                tracing::debug!(
                    hosts = waiting.len(),
                    "hosts not heard since this control plane started: offline only \
                     {MASS_SILENCE_WINDOWS} offline windows after the start"
                );
                silent.retain(|h| !waiting.contains(h));
            }
        }
        if mass_silence(silent.len(), fleet) {
            // More likely the bus or this control plane than the hosts:
            // only those silent for the longer window go.
            let longer = now - i64::try_from(longer_window.as_millis()).unwrap_or(i64::MAX);
            cp.metrics.offline_sweep_mass();
            tracing::warn!(
                silent = silent.len(),
                online = fleet,
                "many hosts silent at once: heartbeat delivery is behind, or a mass outage; \
                 marking only those silent for {MASS_SILENCE_WINDOWS} offline windows"
            );
            (cp.beats.not_heard_since(silent, longer), longer)
        } else {
            (silent, before)
        }
    };
    if silent.is_empty() {
        cp.metrics.offline_sweep(began.elapsed());
        return Ok(());
    }
    // Asked again when the write begins: the reads above take seconds at
    // 100,000 hosts, and the write may wait for the lock, while a beat
    // that arrives meanwhile is only in memory until the next flush (a
    // 100,000-agent run marked 139 live hosts offline after a 10 s read).
    let c = cp.clone();
    let gone = cp
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let silent = c.beats.not_heard_since(silent, before);
                if silent.is_empty() {
                    return Ok(Vec::new());
                }
                hosts::mark_offline_if_stale(&mut *tx, &silent, before, now).await
            })
        })
        .await?;
    // A line per host while few go; past that one line per sweep (a bus
    // node restart marked 9,208 hosts offline in a minute, and their lines
    // pushed everything else out of the logs), each host at debug.
    let many = gone.len() > OFFLINE_LINES_PER_SWEEP;
    if many {
        let first: Vec<&str> = gone
            .iter()
            .take(OFFLINE_LINES_PER_SWEEP)
            .map(String::as_str)
            .collect();
        tracing::warn!(hosts = gone.len(), first = ?first, "hosts offline: heartbeats missed");
    }
    for h in gone {
        cp.beats.offline(&h);
        if many {
            tracing::debug!(host = %h, "host offline: heartbeats missed");
        } else {
            tracing::warn!(host = %h, "host offline: heartbeats missed");
        }
        cp.event(Event::HostOffline, Some(&h), None, None).await;
    }
    // counted once its events are out: a reader of the counter sees them
    cp.metrics.offline_sweep(began.elapsed());
    Ok(())
}

/// Silent hosts that make a sweep a mass silence: at least this many ...
const MASS_SILENCE_MIN_HOSTS: usize = 50;
/// ... and at least this share of the online hosts (1/`_DIVISOR`).
const MASS_SILENCE_SHARE_DIVISOR: usize = 20;
/// In a mass silence a host goes offline after this many offline windows.
const MASS_SILENCE_WINDOWS: u32 = 4;

/// Are `silent` of `online` hosts going silent at once a mass silence?
/// Then the bus or the control plane is more likely behind than the hosts
/// gone: at 100,000 agents on a saturated host, with most heartbeats
/// arriving more than 10 s late, sweeps marked 87,855 live hosts offline
/// in four minutes, and the storm of hosts coming back held the database
/// (docs/benchmarks.md, stop 41). A real mass outage is still reported,
/// [`MASS_SILENCE_WINDOWS`] windows after its hosts' last heartbeats.
/// Hosts not heard since this control plane started wait as long from
/// the start, mass silence or not: a 19,000-agent fleet reconnecting at
/// 300 a second after a 13-minute stop had 5,129 hosts marked offline one
/// window after the start (docs/benchmarks.md, stop 57).
fn mass_silence(silent: usize, online: usize) -> bool {
    silent >= MASS_SILENCE_MIN_HOSTS && silent >= online.div_ceil(MASS_SILENCE_SHARE_DIVISOR)
}

/// Hosts a sweep names one line each; more are summed up in one line.
const OFFLINE_LINES_PER_SWEEP: usize = 10;

async fn purge(cp: &Arc<Cp>) -> anyhow::Result<()> {
    let (now, keep) = (cp.now(), cp.t.retention);
    let purged = cp
        .writer
        .run(move |tx| Box::pin(async move { retention::purge(tx, now, keep).await }))
        .await?;
    tracing::info!(
        jobs = purged.jobs,
        audit = purged.audit,
        "retention applied"
    );
    Ok(())
}

/// The bus must know every revocation even after either side restarted.
async fn push_account_until_ok(cp: &Arc<Cp>) {
    let cp = cp.clone();
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match rm_bus_server::creds::push::push_account(&cp.system, &cp.authority).await {
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

#[cfg(test)]
mod tests {
    use super::mass_silence;

    #[test]
    fn a_mass_silence_is_at_least_50_hosts_and_a_twentieth_of_those_online() {
        assert!(!mass_silence(49, 60), "fewer than 50: never");
        assert!(mass_silence(50, 60));
        assert!(mass_silence(50, 1_000), "50 of 1,000: a twentieth");
        assert!(
            !mass_silence(100, 100_000),
            "100 killed of 100,000: one by one"
        );
        assert!(!mass_silence(4_999, 100_000));
        assert!(mass_silence(5_000, 100_000));
    }
}
