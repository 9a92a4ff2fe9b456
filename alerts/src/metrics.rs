//! The alerts role's counters: rule-engine passes (and how many of them
//! wrote anything), deliveries suppressed (by reason) and the writer
//! task's batches. Read over the bus with the `metrics` service verb.

use std::sync::atomic::{AtomicU64, Ordering};

use rm_store::writer::WriterStats;

use crate::api;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    passes: AtomicU64,
    passes_written: AtomicU64,
    pass_errors: AtomicU64,
    host_muted: AtomicU64,
    maintenance_window: AtomicU64,
    never_notified: AtomicU64,
    channel_disabled: AtomicU64,
}

impl Metrics {
    /// A pass completed; `wrote` when it opened a write.
    pub fn pass(&self, wrote: bool) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        if wrote {
            self.passes_written.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn pass_failed(&self) {
        self.pass_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries a committed change did not queue.
    pub fn suppressed(&self, s: &api::Suppressed) {
        for (counter, n) in [
            (&self.host_muted, s.host_muted),
            (&self.maintenance_window, s.maintenance_window),
            (&self.never_notified, s.never_notified),
            (&self.channel_disabled, s.channel_disabled),
        ] {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self, w: &WriterStats, db_commits: u64) -> api::Metrics {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        api::Metrics {
            passes: g(&self.passes),
            passes_written: g(&self.passes_written),
            pass_errors: g(&self.pass_errors),
            write_batches: WriterStats::get(&w.batches),
            writes_committed: WriterStats::get(&w.writes),
            write_batches_failed: WriterStats::get(&w.failed_batches),
            write_batches_first: WriterStats::get(&w.first_batches),
            db_commits,
            db_commits_outside_writer: WriterStats::get(&w.commits_outside),
            suppressed: api::Suppressed {
                host_muted: g(&self.host_muted),
                maintenance_window: g(&self.maintenance_window),
                never_notified: g(&self.never_notified),
                channel_disabled: g(&self.channel_disabled),
            },
        }
    }
}
