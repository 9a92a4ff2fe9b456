//! The control plane's counters: errors its background loops logged and
//! survived, and load it shed (heartbeats dropped on a full channel, hellos
//! and job results waiting for a handler, dropped when stale). Read over
//! the bus with the `metrics` service verb.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api;
use crate::lock;

/// Live counters; cheap to bump from any task.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Errors per background loop (`sweeper`, `dispatcher`, `goodbye`, ...).
    loop_errors: Mutex<BTreeMap<&'static str, u64>>,
    heartbeats_received: AtomicU64,
    heartbeats_dropped: AtomicU64,
    heartbeat_rows_written: AtomicU64,
    lost_checks: AtomicU64,
    dispatch_passes: AtomicU64,
    offline_sweeps: AtomicU64,
    offline_sweeps_unsettled: AtomicU64,
    offline_sweeps_mass: AtomicU64,
    offline_sweep_last_ms: AtomicU64,
    offline_sweep_max_ms: AtomicU64,
    offline_sweep_behind_ms: AtomicU64,
    offline_sweep_behind_max_ms: AtomicU64,
    offline_sweep_held_by_node: AtomicU64,
    offline_sweep_held_since_start: AtomicU64,
    offline_sweep_held_by_node_last: AtomicU64,
    offline_sweep_node_wait_max_ms: AtomicU64,
    bus_reconnects: AtomicU64,
    results_acked_from_memory: AtomicU64,
    vitals_written: AtomicU64,
    /// Hellos waiting for a handler (`crate::awaited`).
    pub hellos: QueueCounters,
    /// Job results waiting for the writer (`crate::awaited`).
    pub results: QueueCounters,
    replies_refused: AtomicU64,
    svc_replayed: AtomicU64,
    slow_consumer_events: AtomicU64,
    ingest_results: AtomicU64,
    ingest_commits: AtomicU64,
    ingest_commits_cut: AtomicU64,
    ingest_cut_operator: AtomicU64,
    ingest_cut_role: AtomicU64,
    ingest_cut_time: AtomicU64,
    ingest_apply_us: AtomicU64,
    ingest_duplicates: AtomicU64,
    ingest_alone: AtomicU64,
    /// Heartbeats per lag bucket ([`api::HEARTBEAT_LAG_BOUNDS_MS`] + 1).
    heartbeat_lag: [AtomicU64; api::HEARTBEAT_LAG_BOUNDS_MS.len() + 1],
}

/// The counters of one [`crate::awaited::AwaitedQueue`]: requests
/// received, replaced by a later copy, dropped (stale or at the cap; of
/// those, at the cap apart), taken newest first, and how many wait now.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    waiting: AtomicU64,
    queued_total: AtomicU64,
    superseded: AtomicU64,
    expired: AtomicU64,
    displaced: AtomicU64,
    newest_first: AtomicU64,
}

impl QueueCounters {
    /// A request arrived and was queued (or replaced its key's waiting
    /// one, or displaced the oldest); `waiting` wait now.
    pub fn queued(&self, pushed: crate::awaited::Pushed, waiting: usize) {
        self.queued_total.fetch_add(1, Ordering::Relaxed);
        match pushed {
            crate::awaited::Pushed::Queued => {}
            crate::awaited::Pushed::Superseded => {
                self.superseded.fetch_add(1, Ordering::Relaxed);
            }
            crate::awaited::Pushed::Displaced => {
                self.expired.fetch_add(1, Ordering::Relaxed);
                self.displaced.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.waiting.store(waiting as u64, Ordering::Relaxed);
    }

    /// `n` requests were taken (`newest_first`: the handlers were behind);
    /// `waiting` are left.
    pub fn taken(&self, n: usize, waiting: usize, newest_first: bool) {
        self.waiting.store(waiting as u64, Ordering::Relaxed);
        if newest_first {
            self.newest_first.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// `n` requests waited longer than their agents wait and were
    /// dropped; `waiting` are left.
    pub fn expired(&self, n: usize, waiting: usize) {
        self.expired.fetch_add(n as u64, Ordering::Relaxed);
        self.waiting.store(waiting as u64, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Logs a background loop's error and counts it; the loop goes on.
    pub fn loop_error(&self, what: &'static str, error: &anyhow::Error) {
        self.count_error(what);
        tracing::error!(r#loop = what, error = %format!("{error:#}"), "background loop error; continuing");
    }

    /// Counts an error the caller has already logged with its own context.
    pub fn count_error(&self, what: &'static str) {
        *lock(&self.loop_errors).entry(what).or_default() += 1;
    }

    /// A well-formed heartbeat arrived `lag_ms` after its agent sent it
    /// (by the agent's clock: skew shows here too).
    pub fn heartbeat_received(&self, lag_ms: i64) {
        self.heartbeats_received.fetch_add(1, Ordering::Relaxed);
        let bucket = api::HEARTBEAT_LAG_BOUNDS_MS
            .iter()
            .position(|b| lag_ms <= *b)
            .unwrap_or(api::HEARTBEAT_LAG_BOUNDS_MS.len());
        if let Some(b) = self.heartbeat_lag.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A hello found an active job its agent does not hold: a lost check
    /// was started for it.
    pub fn lost_check(&self) {
        self.lost_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// A dispatch pass over one host's queued jobs ended (whatever it sent).
    pub fn dispatch_pass(&self) {
        self.dispatch_passes.fetch_add(1, Ordering::Relaxed);
    }

    /// The offline sweeper looked at the fleet (it was settled), in `took`.
    pub fn offline_sweep(&self, took: std::time::Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.offline_sweep_last_ms.store(ms, Ordering::Relaxed);
        self.offline_sweep_max_ms.fetch_max(ms, Ordering::Relaxed);
        self.offline_sweeps.fetch_add(1, Ordering::Relaxed);
    }

    /// How much longer than the offline window the latest sweep waited
    /// (heartbeat delivery behind, `delivery`).
    pub fn offline_sweep_behind(&self, ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        self.offline_sweep_behind_ms.store(ms, Ordering::Relaxed);
        self.offline_sweep_behind_max_ms
            .fetch_max(ms, Ordering::Relaxed);
    }

    /// The latest sweep kept `hosts` back as silent behind a quiet bus
    /// node, the longest of them waiting `wait_ms` past the window.
    pub fn offline_sweep_held_by_node(&self, hosts: usize, wait_ms: i64) {
        let hosts = u64::try_from(hosts).unwrap_or(u64::MAX);
        self.offline_sweep_held_by_node
            .fetch_add(hosts, Ordering::Relaxed);
        self.offline_sweep_held_by_node_last
            .store(hosts, Ordering::Relaxed);
        self.offline_sweep_node_wait_max_ms
            .fetch_max(u64::try_from(wait_ms).unwrap_or(0), Ordering::Relaxed);
    }

    /// The latest sweep kept `hosts` back as not heard since this control
    /// plane connected, within four windows of that.
    pub fn offline_sweep_held_since_start(&self, hosts: usize) {
        self.offline_sweep_held_since_start
            .fetch_add(u64::try_from(hosts).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The offline sweeper did not look: the bus connection had not been
    /// up for the whole window.
    pub fn offline_sweep_unsettled(&self) {
        self.offline_sweeps_unsettled
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A sweep found a mass silence and used the longer window.
    pub fn offline_sweep_mass(&self) {
        self.offline_sweeps_mass.fetch_add(1, Ordering::Relaxed);
    }

    /// The bus connection came back after a loss.
    pub fn bus_reconnected(&self) {
        self.bus_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A re-send of a result committed lately was acknowledged from memory.
    pub fn result_acked_from_memory(&self) {
        self.results_acked_from_memory
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A heartbeat flush wrote `rows` hosts' last-seen, `vitals` of them
    /// with changed vitals.
    pub fn heartbeats_flushed(&self, rows: usize, vitals: usize) {
        self.heartbeat_rows_written
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.vitals_written
            .fetch_add(vitals as u64, Ordering::Relaxed);
    }

    /// A reply subject an agent supplied was not its own inbox.
    pub fn reply_refused(&self) {
        self.replies_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A service request's retry was answered with its first attempt's
    /// reply (kept, or awaited while it ran) instead of running again.
    pub fn svc_replayed(&self) {
        self.svc_replayed.fetch_add(1, Ordering::Relaxed);
    }

    /// The bus client dropped a message for a subscription whose buffer
    /// was full (an event; at most one counted per drop, fewer when the
    /// events themselves overflow).
    pub fn slow_consumer(&self) {
        self.slow_consumer_events.fetch_add(1, Ordering::Relaxed);
    }

    /// A transaction of job results ended after a part for `cut`, its
    /// batch's rest left for the next one.
    pub fn results_cut_short(&self, cut: crate::ingest::Cut) {
        use crate::ingest::Cut;
        use rm_store::writer::Waiter;
        self.ingest_commits_cut.fetch_add(1, Ordering::Relaxed);
        match cut {
            Cut::Waiting(Waiter::FirstLane) => &self.ingest_cut_operator,
            Cut::Waiting(Waiter::OtherRole) => &self.ingest_cut_role,
            Cut::Time => &self.ingest_cut_time,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The result writer's statements of one transaction took `took`
    /// (inside the writer's transaction: its begin, commit and the other
    /// writes it shares the writer with are not in it).
    pub fn results_applied(&self, took: std::time::Duration) {
        self.ingest_apply_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A batch of job results committed in one transaction: `applied`
    /// results acknowledged, `duplicates` of them re-sends.
    pub fn results_committed(&self, applied: usize, duplicates: usize) {
        self.ingest_commits.fetch_add(1, Ordering::Relaxed);
        self.ingest_results
            .fetch_add(applied as u64, Ordering::Relaxed);
        self.ingest_duplicates
            .fetch_add(duplicates as u64, Ordering::Relaxed);
    }

    /// A batch of `n` results failed together and is applied one at a time.
    pub fn results_alone(&self, n: usize) {
        self.ingest_alone.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn snapshot(
        &self,
        writer: &rm_store::writer::WriterStats,
        db_commits: u64,
        first_queued: usize,
    ) -> api::Metrics {
        use rm_store::writer::WriterStats as W;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        api::Metrics {
            loop_errors: lock(&self.loop_errors)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            heartbeats_received: g(&self.heartbeats_received),
            heartbeats_dropped: g(&self.heartbeats_dropped),
            hellos_waiting: g(&self.hellos.waiting),
            hellos_queued_total: g(&self.hellos.queued_total),
            hellos_superseded: g(&self.hellos.superseded),
            hellos_expired: g(&self.hellos.expired),
            hellos_displaced: g(&self.hellos.displaced),
            hellos_newest_first: g(&self.hellos.newest_first),
            results_waiting: g(&self.results.waiting),
            results_queued_total: g(&self.results.queued_total),
            results_superseded: g(&self.results.superseded),
            results_expired: g(&self.results.expired),
            results_displaced: g(&self.results.displaced),
            results_newest_first: g(&self.results.newest_first),
            replies_refused: g(&self.replies_refused),
            svc_replayed: g(&self.svc_replayed),
            slow_consumer_events: g(&self.slow_consumer_events),
            heartbeat_lag_ms: self.heartbeat_lag.iter().map(g).collect(),
            heartbeat_rows_written: g(&self.heartbeat_rows_written),
            vitals_written: g(&self.vitals_written),
            lost_checks: g(&self.lost_checks),
            dispatch_passes: g(&self.dispatch_passes),
            offline_sweeps: g(&self.offline_sweeps),
            offline_sweeps_unsettled: g(&self.offline_sweeps_unsettled),
            offline_sweeps_mass: g(&self.offline_sweeps_mass),
            offline_sweep_last_ms: g(&self.offline_sweep_last_ms),
            offline_sweep_max_ms: g(&self.offline_sweep_max_ms),
            offline_sweep_behind_ms: g(&self.offline_sweep_behind_ms),
            offline_sweep_behind_max_ms: g(&self.offline_sweep_behind_max_ms),
            offline_sweep_held_by_node: g(&self.offline_sweep_held_by_node),
            offline_sweep_held_by_node_last: g(&self.offline_sweep_held_by_node_last),
            offline_sweep_held_since_start: g(&self.offline_sweep_held_since_start),
            offline_sweep_node_wait_max_ms: g(&self.offline_sweep_node_wait_max_ms),
            bus_reconnects: g(&self.bus_reconnects),
            results_acked_from_memory: g(&self.results_acked_from_memory),
            ingest_results: g(&self.ingest_results),
            ingest_commits: g(&self.ingest_commits),
            ingest_commits_cut: g(&self.ingest_commits_cut),
            ingest_cut_operator: g(&self.ingest_cut_operator),
            ingest_cut_role: g(&self.ingest_cut_role),
            ingest_cut_time: g(&self.ingest_cut_time),
            ingest_apply_ms: g(&self.ingest_apply_us) / 1000,
            ingest_duplicates: g(&self.ingest_duplicates),
            ingest_results_alone: g(&self.ingest_alone),
            write_batches: W::get(&writer.batches),
            writes_committed: W::get(&writer.writes),
            write_batches_failed: W::get(&writer.failed_batches),
            write_batches_first: W::get(&writer.first_batches),
            writes_waiting_first: first_queued as u64,
            write_begin_ms: W::get(&writer.begin_us) / 1000,
            write_apply_ms: W::get(&writer.apply_us) / 1000,
            write_commit_ms: W::get(&writer.commit_us) / 1000,
            db_commits,
            db_commits_outside_writer: W::get(&writer.commits_outside),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_lags_are_counted_in_their_buckets() {
        let m = Metrics::default();
        for lag in [-3, 0, 1, 7, 100, 101, 60_000] {
            m.heartbeat_received(lag);
        }
        let snap = m.snapshot(&rm_store::writer::WriterStats::default(), 0, 0);
        let b = &snap.heartbeat_lag_ms;
        assert_eq!(b.len(), api::HEARTBEAT_LAG_BOUNDS_MS.len() + 1);
        assert_eq!(b[0], 2, "skew below zero and 0 ms share the first bucket");
        assert_eq!(b[1], 1);
        assert_eq!(b[4], 1, "7 ms is in (5, 10]");
        assert_eq!(b[7], 1, "100 ms is in (50, 100]");
        assert_eq!(b[8], 1, "101 ms is in (100, 250]");
        assert_eq!(b[14], 1, "beyond the last bound");
        assert_eq!(snap.heartbeats_received, 7);
    }

    #[test]
    fn a_request_dropped_at_the_queues_cap_counts_as_expired_and_as_displaced_one_aged_out_only_as_expired()
     {
        use crate::awaited::Pushed;
        let m = Metrics::default();
        m.results.queued(Pushed::Queued, 1);
        m.results.queued(Pushed::Superseded, 1);
        m.results.queued(Pushed::Displaced, 1);
        m.results.expired(2, 0);
        m.hellos.queued(Pushed::Displaced, 1);
        let snap = m.snapshot(&rm_store::writer::WriterStats::default(), 0, 0);
        assert_eq!(snap.results_queued_total, 3);
        assert_eq!(snap.results_superseded, 1);
        assert_eq!(snap.results_expired, 3, "one at the cap, two aged out");
        assert_eq!(snap.results_displaced, 1, "only the one at the cap");
        assert_eq!((snap.hellos_expired, snap.hellos_displaced), (1, 1));
    }
}
