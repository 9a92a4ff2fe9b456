//! Heartbeats live in memory: each beat updates its host's entry (never a
//! channel that can fill, never a write); the flusher writes the hosts that
//! beat since the last flush every `Timings::seen_flush` (last-seen and
//! uptime, their vitals only when they changed) through the writer task,
//! in parts of `Timings::flush_rows_per_write` taken in the order of the
//! hosts' rows in the table (each flush learns where they are), so the
//! parts together rewrite each page once. A host not known to be online is
//! flushed at once (it just came online), alone: the others wait for the
//! periodic flush (a bus node restart brings thousands back one by one,
//! and a flush of every host heard since the last one for each of them
//! kept the writer busy for minutes). The offline sweeper asks here
//! for hosts heard from recently, so the stored last-seen may lag by one
//! flush without ever turning a live host offline. A failed flush leaves
//! the entries dirty: the next one writes them.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rm_bus::msg::Heartbeat;
use rm_store::hosts::Vitals;
use tokio::sync::Notify;

use crate::lock;

/// What ingest knows of one host's heartbeats.
#[derive(Debug, Default)]
struct Entry {
    /// Latest beat received (control-plane clock).
    seen: i64,
    /// `seen` as last written.
    flushed: i64,
    uptime: Option<i64>,
    vitals: Vitals,
    /// A hash of `vitals`; `written` is the one last written.
    key: u64,
    written: Option<u64>,
    /// The stored status is online (as far as we know).
    online: bool,
    /// Where the host's row is in the table (its rowid), once a flush
    /// found it: the periodic flush writes in this order, so each part
    /// of it rewrites neighbouring pages.
    rowid: Option<i64>,
    /// How late its beats usually arrive by the two clocks (arrival less
    /// `ts_ms`: its clock's offset and the bus's least delay), for
    /// [`crate::delivery`].
    usual_lag: Option<i64>,
    /// The bus node its latest beat came through, if it said and the
    /// node is tracked ([`crate::delivery::Delivery::node_beat`]).
    node: Option<Arc<str>>,
}

impl Entry {
    /// The row a flush writes for `host`.
    fn row(&self, host: &str) -> Flush {
        Flush {
            host: host.to_owned(),
            seen: self.seen,
            uptime: self.uptime,
            vitals: (self.written != Some(self.key)).then(|| self.vitals.clone()),
            key: self.key,
        }
    }
}

/// One host's row to write.
#[derive(Debug)]
pub(crate) struct Flush {
    pub host: String,
    pub seen: i64,
    pub uptime: Option<i64>,
    /// Only when they changed since the last write.
    pub vitals: Option<Vitals>,
    key: u64,
}

/// Every host's heartbeat state.
#[derive(Default)]
pub(crate) struct Liveness {
    hosts: Mutex<HashMap<String, Entry>>,
    /// Hosts not known to be online that beat since the flusher last
    /// asked: what it writes at once, found without a look at every host.
    back: Mutex<HashSet<String>>,
    /// Wakes the flusher (a host came online).
    pub wake: Notify,
    /// How far behind heartbeat delivery runs (the offline sweep waits
    /// that much longer).
    delivery: Mutex<crate::delivery::Delivery>,
}

fn key_of(v: &Vitals) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &v.agent_version,
        &v.restic_version,
        &v.os,
        &v.arch,
        &v.vitals_json,
    )
        .hash(&mut h);
    h.finish()
}

/// The vitals a heartbeat reports (uptime travels with last-seen).
pub(crate) fn vitals_of(hb: &Heartbeat) -> Vitals {
    Vitals {
        agent_version: Some(hb.agent_version.clone()),
        restic_version: hb.restic_version.clone(),
        os: Some(hb.os.clone()),
        arch: Some(hb.arch.clone()),
        uptime_secs: None,
        vitals_json: serde_json::to_string(&serde_json::json!({
            "disks": hb.disks, "running_jobs": hb.running_jobs, "next_runs": hb.next_runs,
        }))
        .ok(),
    }
}

impl Liveness {
    /// Records a beat received at `at`.
    pub fn beat(&self, host: &str, hb: &Heartbeat, at: i64) {
        let vitals = vitals_of(hb);
        let key = key_of(&vitals);
        let wake = {
            // the hosts' lock, then the delivery figures' (never the
            // other way round)
            let mut hosts = lock(&self.hosts);
            let e = hosts.entry(host.to_owned()).or_default();
            let mut delivery = lock(&self.delivery);
            // a beat with no time of its own says nothing of the bus
            let late = if hb.ts_ms > 0 {
                let (late, usual) =
                    crate::delivery::late_beyond_usual(e.usual_lag, at.saturating_sub(hb.ts_ms));
                e.usual_lag = Some(usual);
                late
            } else {
                0
            };
            delivery.beat(at, late);
            let node = hb
                .bus_node
                .as_deref()
                .and_then(|n| delivery.node_beat(n, at));
            drop(delivery);
            if at >= e.seen {
                e.seen = at;
                e.uptime = i64::try_from(hb.uptime_secs).ok();
                e.vitals = vitals;
                e.key = key;
                e.node = node;
            }
            !e.online
        };
        if wake {
            lock(&self.back).insert(host.to_owned());
            self.wake.notify_one();
        }
    }

    /// Rows to write: hosts heard from since their last flush, in the
    /// order of their rows in the table (hosts whose row was not found
    /// yet last).
    pub fn dirty(&self) -> Vec<Flush> {
        let hosts = lock(&self.hosts);
        let mut rows: Vec<(i64, Flush)> = hosts
            .iter()
            .filter(|(_, e)| e.seen > e.flushed)
            .map(|(host, e)| (e.rowid.unwrap_or(i64::MAX), e.row(host)))
            .collect();
        drop(hosts);
        rows.sort_unstable_by_key(|(rowid, _)| *rowid);
        rows.into_iter().map(|(_, f)| f).collect()
    }

    /// Where hosts' rows are (as a flush found them).
    pub fn placed(&self, rowids: &[(String, i64)]) {
        let mut hosts = lock(&self.hosts);
        for (host, rowid) in rowids {
            if let Some(e) = hosts.get_mut(host) {
                e.rowid = Some(*rowid);
            }
        }
    }

    /// Rows to write at once: hosts heard from since their last flush
    /// that are not known to be online (they just came back). Each is
    /// handed out once per beat that found it so; one whose write fails
    /// waits for its next beat or the periodic flush.
    pub fn came_online(&self) -> Vec<Flush> {
        let back = std::mem::take(&mut *lock(&self.back));
        let hosts = lock(&self.hosts);
        back.iter()
            .filter_map(|host| {
                let e = hosts.get(host)?;
                (e.seen > e.flushed && !e.online).then(|| e.row(host))
            })
            .collect()
    }

    /// `rows` were committed.
    pub fn flushed(&self, rows: &[Flush]) {
        let mut hosts = lock(&self.hosts);
        for f in rows {
            if let Some(e) = hosts.get_mut(&f.host) {
                e.flushed = e.flushed.max(f.seen);
                e.written = Some(f.key);
                e.online = true;
            }
        }
    }

    /// The host went offline (goodbye, missed beats) or is unknown: its
    /// next beat is flushed at once. Beats older than `now` are forgotten.
    pub fn offline(&self, host: &str) {
        if let Some(e) = lock(&self.hosts).get_mut(host) {
            e.online = false;
            e.flushed = e.seen;
        }
    }

    /// A host the control plane no longer needs to track (unknown, revoked).
    pub fn forget(&self, host: &str) {
        lock(&self.hosts).remove(host);
    }

    /// How far behind heartbeat delivery runs at `now` for `online` hosts
    /// beating every `heartbeat_ms` ([`crate::delivery::Delivery::behind`]).
    pub fn delivery_behind(&self, now: i64, online: usize, heartbeat_ms: i64) -> i64 {
        lock(&self.delivery).behind(now, online, heartbeat_ms)
    }

    /// Of `hosts` (offline candidates: silent for the window and the
    /// fleet-wide wait `behind`), those still silent once each also waits
    /// as long as the bus node its latest beat came through has been
    /// quiet, the larger of the two and at most one more window
    /// ([`crate::delivery`]); and how many were kept back so.
    pub fn not_held_by_their_node(
        &self,
        mut hosts: Vec<String>,
        now: i64,
        window_ms: i64,
        behind: i64,
    ) -> (Vec<String>, usize, i64) {
        let quiet = lock(&self.delivery).quiet_nodes(now);
        if quiet.is_empty() || hosts.is_empty() {
            return (hosts, 0, 0);
        }
        let known = lock(&self.hosts);
        let before = hosts.len();
        let mut longest = 0;
        hosts.retain(|h| {
            let Some((e, q)) = known
                .get(h)
                .and_then(|e| Some((e, *quiet.get(e.node.as_ref()?)?)))
            else {
                return true;
            };
            let wait = behind.max(q).min(window_ms);
            let still = e.seen < now - window_ms - wait;
            if !still {
                longest = longest.max(wait);
            }
            still
        });
        let kept_back = before - hosts.len();
        (hosts, kept_back, longest)
    }

    /// Of `hosts`, those not heard at or after `since` (never heard, or
    /// their latest beat is older): the offline sweep's candidates.
    pub fn not_heard_since(&self, mut hosts: Vec<String>, since: i64) -> Vec<String> {
        let known = lock(&self.hosts);
        hosts.retain(|h| known.get(h).is_none_or(|e| e.seen < since));
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(disk_free: u64) -> Heartbeat {
        Heartbeat {
            v: rm_bus::msg::PROTOCOL_VERSION,
            ts_ms: 0,
            agent_version: "test".into(),
            restic_version: None,
            os: "linux".into(),
            arch: "x86_64".into(),
            uptime_secs: disk_free,
            config_version: 0,
            disks: vec![],
            running_jobs: vec![],
            next_runs: vec![],
            bus_node: None,
        }
    }

    #[test]
    fn vitals_are_flushed_only_when_they_change_and_last_seen_only_when_it_moved() {
        let l = Liveness::default();
        l.beat("a", &hb(1), 10);
        let rows = l.dirty();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].vitals.is_some(), "first beat: vitals written");
        l.flushed(&rows);
        assert!(l.dirty().is_empty(), "nothing new");
        // same vitals, later beat, new uptime: last-seen only
        l.beat("a", &hb(2), 20);
        let rows = l.dirty();
        assert_eq!((rows[0].seen, rows[0].uptime), (20, Some(2)));
        assert!(rows[0].vitals.is_none());
        l.flushed(&rows);
        // an older beat arriving late changes nothing
        l.beat("a", &hb(3), 15);
        assert!(l.dirty().is_empty());
        let both = || vec!["a".to_owned(), "never".to_owned()];
        assert_eq!(l.not_heard_since(both(), 20), ["never"]);
        assert_eq!(l.not_heard_since(both(), 21), ["a", "never"]);
    }

    #[test]
    fn the_periodic_flush_comes_in_the_order_of_the_rows_in_the_table() {
        let l = Liveness::default();
        for h in ["a", "b", "c", "d"] {
            l.beat(h, &hb(1), 10);
        }
        l.placed(&[("a".into(), 30), ("b".into(), 10), ("d".into(), 20)]);
        let hosts: Vec<String> = l.dirty().into_iter().map(|f| f.host).collect();
        assert_eq!(hosts, ["b", "d", "a", "c"], "by rowid; not found yet: last");
    }

    #[test]
    fn only_hosts_not_known_online_are_written_at_once() {
        let l = Liveness::default();
        for h in ["a", "b", "c"] {
            l.beat(h, &hb(1), 10);
        }
        let rows = l.came_online();
        assert_eq!(rows.len(), 3, "first beats: all just came online");
        l.flushed(&rows);
        for h in ["a", "b", "c"] {
            l.beat(h, &hb(2), 20);
        }
        assert!(l.came_online().is_empty(), "all known online");
        assert_eq!(l.dirty().len(), 3, "the periodic flush writes them");
        l.offline("b");
        l.beat("b", &hb(3), 30);
        let rows = l.came_online();
        let hosts: Vec<&str> = rows.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(hosts, ["b"], "back online: alone, at once");
        l.flushed(&rows);
        assert!(l.came_online().is_empty());
        let mut rest: Vec<String> = l.dirty().into_iter().map(|f| f.host).collect();
        rest.sort();
        assert_eq!(
            rest,
            ["a", "c"],
            "the others still wait for the periodic flush"
        );
    }

    #[test]
    fn a_silent_host_waits_as_long_as_its_quiet_node_at_most_one_more_window() {
        let l = Liveness::default();
        let through = |node: &str| Heartbeat {
            bus_node: Some(node.into()),
            ..hb(1)
        };
        // node a delivers 20 beats a second for a minute, the last from
        // host "held"; host "b" through node b, "unnamed" through none
        for i in 0..1200 {
            l.beat(&format!("h{}", i % 100), &through("a"), i * 50);
        }
        let last = 1199 * 50;
        l.beat("held", &through("a"), last);
        l.beat("b", &through("b"), last);
        l.beat("unnamed", &hb(1), last);
        let all = || vec!["held".to_owned(), "b".to_owned(), "unnamed".to_owned()];
        let window = 45_000;
        // 50 s on: all three silent for the window; node a quiet 49 s
        let (still, held, wait) = l.not_held_by_their_node(all(), last + 50_000, window, 0);
        assert_eq!(still, ["b", "unnamed"]);
        assert_eq!((held, wait), (1, 45_000), "capped at one more window");
        // past both windows the held host goes too
        let (still, held, _) = l.not_held_by_their_node(all(), last + 90_001, window, 0);
        assert_eq!((still.len(), held), (3, 0));
    }
}
