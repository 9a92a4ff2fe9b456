//! How far behind heartbeat delivery runs right now, for the offline
//! sweep: a host is marked offline once it has been silent for the
//! offline window *plus* this, at most one more window.
//!
//! Two signs, both from beats the control plane reads:
//! - **Late beats.** Each beat's lateness is its arrival (control-plane
//!   clock) less its `ts_ms` (the agent's clock), less that host's own
//!   usual lateness (the least it has shown, creeping up
//!   [`BASE_CREEP_MS`] a beat), so a host whose clock is minutes off
//!   counts as on time. Per second, the [`LATE_QUANTILE`] of those is
//!   kept for [`HORIZON_SECS`]; the largest is the delay. A bus node
//!   whose read loops froze (Go's collector on a starved node: 8–36 s,
//!   docs/benchmarks.md stop 53) hands over its backlog at once, so
//!   those seconds say how late the bus ran, and it may run as late again
//!   within minutes.
//! - **No beats at all.** With a fleet big enough that beats arrive every
//!   fraction of a second ([`SILENCE_MIN_RATE`]), a silence of more than
//!   a second means this control plane hears nothing (its node frozen,
//!   its reader starved): everyone's silence grows by as much.
//!
//! - **A node gone quiet.** Each beat names the bus node its agent is
//!   connected to (`bus_node`). A node that delivered at least
//!   [`SILENCE_MIN_RATE`] beats a second over the last
//!   [`NODE_RATE_SECS`] and none for more than a second holds its hosts'
//!   beats where the control plane cannot see them (its read loops
//!   frozen): a host whose latest beat came through it waits as long
//!   more. This sees a node's first freeze while it lasts, which the
//!   late beats above learn of only once its backlog arrives (stop 54's
//!   BC: 89 hosts, each silent on its own for part of the window, marked
//!   while their node was frozen for 13.9 s).
//!
//! Before this, at 100,000 agents, hosts whose beats were held up for
//! seconds were marked offline and came back with their next beat
//! (false offline hosts in all five of stop 53's runs).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Seconds of late-beat figures kept: four offline windows at the default
/// 15 s heartbeat, the mass-silence guard's longer window.
const HORIZON_SECS: i64 = 180;
/// The share of a second's beats at or below the figure kept for it: a
/// few hosts late on their own links do not stretch everyone's window.
const LATE_QUANTILE: f64 = 0.9;
/// Latenesses are kept in whole seconds up to this.
const MAX_BUCKET: usize = 120;
/// How fast a host's usual lateness may rise, per beat (a clock stepped
/// back makes every later beat look late until it has crept up).
const BASE_CREEP_MS: i64 = 100;
/// Beats a second the fleet (or one node) must deliver for a silence to count.
const SILENCE_MIN_RATE: f64 = 10.0;
/// A node's rate is its beats over this many seconds.
const NODE_RATE_SECS: i64 = 60;
/// Nodes tracked at most; a beat naming one more counts for the fleet
/// only (a host may name any node it likes: it cannot grow this).
const MAX_NODES: usize = 64;
/// A node name longer than this is not tracked.
const MAX_NODE_NAME: usize = 128;

/// What one bus node delivered.
struct Node {
    /// Its name, shared with the hosts whose beats came through it.
    name: Arc<str>,
    /// Its latest beat's arrival (ms).
    last_at: i64,
    /// Beats since `since` (ms), and in the span of that length before.
    since: i64,
    count: u32,
    prev: u32,
}

impl Node {
    fn beat(&mut self, at: i64) {
        let span = NODE_RATE_SECS * 1000;
        if at - self.since >= span {
            self.prev = if at - self.since < 2 * span {
                self.count
            } else {
                0
            };
            self.count = 0;
            self.since = at;
        }
        self.count = self.count.saturating_add(1);
        self.last_at = self.last_at.max(at);
    }

    /// How long it has been quiet at `now` past a second, if it delivers
    /// often enough for that to mean anything (else 0).
    fn quiet(&self, now: i64) -> i64 {
        let rate = f64::from(self.prev.max(self.count)) / NODE_RATE_SECS as f64;
        if rate >= SILENCE_MIN_RATE {
            (now - self.last_at - 1000).max(0)
        } else {
            0
        }
    }
}

/// One second's late-beat figures.
struct Second {
    at: i64,
    /// Beats per whole second of lateness (the last holds everything later).
    buckets: [u32; MAX_BUCKET + 1],
    n: u32,
}

impl Second {
    fn quantile_secs(&self) -> i64 {
        // n >= 1; the rank of the quantile, 1-based
        let rank = ((f64::from(self.n) * LATE_QUANTILE).ceil() as u32).max(1);
        let mut seen = 0;
        for (s, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return i64::try_from(s).unwrap_or(i64::MAX);
            }
        }
        0
    }
}

/// The delivery figures (behind a lock in [`crate::beats::Liveness`]).
#[derive(Default)]
pub(crate) struct Delivery {
    seconds: VecDeque<Second>,
    /// The latest beat's arrival (control-plane clock, ms).
    last_beat_at: Option<i64>,
    /// Per bus node its beats came through, heard within [`HORIZON_SECS`].
    nodes: HashMap<Arc<str>, Node>,
}

/// A beat `lag` ms late by the clocks (arrival less `ts_ms`), from a host
/// whose usual lateness was `base` (`None`: its first beat): how late it
/// is beyond the usual (never below 0), and the host's usual lateness now.
pub(crate) fn late_beyond_usual(base: Option<i64>, lag: i64) -> (i64, i64) {
    match base {
        None => (0, lag),
        Some(b) => (
            lag.saturating_sub(b).max(0),
            lag.min(b.saturating_add(BASE_CREEP_MS)),
        ),
    }
}

impl Delivery {
    /// A beat arrived at `at` (ms), `late_ms` behind its host's usual.
    pub fn beat(&mut self, at: i64, late_ms: i64) {
        self.last_beat_at = Some(self.last_beat_at.map_or(at, |l| l.max(at)));
        let sec = at.div_euclid(1000);
        if self.seconds.back().is_none_or(|s| s.at < sec) {
            self.seconds.push_back(Second {
                at: sec,
                buckets: [0; MAX_BUCKET + 1],
                n: 0,
            });
        }
        while self
            .seconds
            .front()
            .is_some_and(|s| s.at <= sec - HORIZON_SECS)
        {
            self.seconds.pop_front();
        }
        // a beat whose arrival is older than the newest second (clock
        // stepped back) counts in the newest one
        if let Some(s) = self.seconds.back_mut() {
            let b = usize::try_from(late_ms.max(0) / 1000)
                .unwrap_or(MAX_BUCKET)
                .min(MAX_BUCKET);
            s.buckets[b] += 1;
            s.n += 1;
        }
    }

    /// A beat arrived at `at` (ms) through bus node `name`: the node's
    /// name as kept (one allocation per node, shared by its hosts), or
    /// `None` where it is not tracked (too long, or too many nodes).
    pub fn node_beat(&mut self, name: &str, at: i64) -> Option<Arc<str>> {
        if let Some(node) = self.nodes.get_mut(name) {
            node.beat(at);
            return Some(node.name.clone());
        }
        if name.is_empty() || name.len() > MAX_NODE_NAME {
            return None;
        }
        if self.nodes.len() >= MAX_NODES {
            // room from nodes not heard within the horizon
            let old = at - HORIZON_SECS * 1000;
            self.nodes.retain(|_, n| n.last_at > old);
            if self.nodes.len() >= MAX_NODES {
                return None;
            }
        }
        let key: Arc<str> = Arc::from(name);
        let mut node = Node {
            name: key.clone(),
            last_at: at,
            since: at,
            count: 0,
            prev: 0,
        };
        node.beat(at);
        self.nodes.insert(key.clone(), node);
        Some(key)
    }

    /// The nodes quiet at `now` (ms), and for how long past a second
    /// ([`Node::quiet`]); a node not heard within [`HORIZON_SECS`] is
    /// not counted (gone: its hosts stand on their own).
    pub fn quiet_nodes(&self, now: i64) -> HashMap<Arc<str>, i64> {
        let old = now - HORIZON_SECS * 1000;
        self.nodes
            .iter()
            .filter(|(_, n)| n.last_at > old)
            .map(|(k, n)| (k.clone(), n.quiet(now)))
            .filter(|(_, q)| *q > 0)
            .collect()
    }

    /// How far behind delivery runs at `now` (ms) for a fleet of `online`
    /// hosts beating every `heartbeat_ms`: the larger of the latest
    /// [`HORIZON_SECS`]' worst second and the silence since the last beat
    /// (past a second, and only where the fleet beats often enough).
    pub fn behind(&self, now: i64, online: usize, heartbeat_ms: i64) -> i64 {
        let since = now.div_euclid(1000) - HORIZON_SECS;
        let late = self
            .seconds
            .iter()
            .filter(|s| s.at > since)
            .map(Second::quantile_secs)
            .max()
            .unwrap_or(0)
            .saturating_mul(1000);
        let rate = online as f64 * 1000.0 / heartbeat_ms.max(1) as f64;
        let silent = match self.last_beat_at {
            Some(l) if rate >= SILENCE_MIN_RATE => (now - l - 1000).max(0),
            _ => 0,
        };
        late.max(silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn beats_on_time_put_delivery_nowhere_behind() {
        let mut d = Delivery::default();
        for i in 0..1000 {
            d.beat(T0 + i * 15, 40);
        }
        assert_eq!(d.behind(T0 + 15_000, 1000, 15_000), 0);
    }

    #[test]
    fn a_node_handing_over_a_backlog_puts_delivery_behind_for_the_horizon() {
        let mut d = Delivery::default();
        // one second: 80 beats 20 s late against 20 on time (a node's backlog)
        for i in 0..100 {
            d.beat(T0 + i * 10, if i < 80 { 20_400 } else { 10 });
        }
        assert_eq!(d.behind(T0 + 1_000, 0, 15_000), 20_000);
        // still there near the end of the horizon, gone after it
        assert_eq!(d.behind(T0 + (HORIZON_SECS - 1) * 1000, 0, 15_000), 20_000);
        assert_eq!(d.behind(T0 + (HORIZON_SECS + 1) * 1000, 0, 15_000), 0);
    }

    #[test]
    fn a_few_late_hosts_in_a_second_do_not_put_delivery_behind() {
        let mut d = Delivery::default();
        for i in 0..100 {
            d.beat(T0 + i * 10, if i < 5 { 30_000 } else { 0 });
        }
        assert_eq!(d.behind(T0 + 1_000, 0, 15_000), 0);
    }

    #[test]
    fn silence_counts_only_where_the_fleet_beats_often() {
        let mut d = Delivery::default();
        d.beat(T0, 0);
        // 1,000 hosts at 15 s: 67 beats a second; none for 10 s
        assert_eq!(d.behind(T0 + 10_000, 1000, 15_000), 9_000);
        // 3 hosts: a 10 s pause between beats is ordinary
        assert_eq!(d.behind(T0 + 10_000, 3, 15_000), 0);
    }

    #[test]
    fn a_host_clock_minutes_off_counts_as_on_time_and_a_held_beat_as_late() {
        // arrival less ts_ms: 300 s for a host whose clock is 5 min behind
        let (late, base) = late_beyond_usual(None, 300_000);
        assert_eq!((late, base), (0, 300_000));
        let (late, base) = late_beyond_usual(Some(base), 300_020);
        assert_eq!((late, base), (20, 300_020));
        // a beat held up 20 s on the bus
        let (late, base) = late_beyond_usual(Some(base), 320_020);
        assert_eq!(late, 20_000);
        assert_eq!(base, 300_120, "the usual lateness creeps up 100 ms a beat");
        // the clock stepped forward by a minute: on time from there on
        let (late, base) = late_beyond_usual(Some(base), 240_000);
        assert_eq!((late, base), (0, 240_000));
    }

    #[test]
    fn a_busy_node_gone_quiet_counts_from_its_first_second_and_a_slow_one_never() {
        let mut d = Delivery::default();
        // node a: 20 beats a second for a minute; node b: one every 2 s
        for i in 0..1200 {
            d.node_beat("a", T0 + i * 50);
        }
        for i in 0..30 {
            d.node_beat("b", T0 + i * 2000);
        }
        let last_a = T0 + 1199 * 50;
        assert!(d.quiet_nodes(last_a + 900).is_empty(), "under a second");
        let quiet = d.quiet_nodes(last_a + 5_000);
        assert_eq!(quiet.get("a").copied(), Some(4_000));
        assert_eq!(
            quiet.get("b"),
            None,
            "too few beats for its silence to mean anything"
        );
        // not heard within the horizon: gone, its hosts on their own
        assert!(d.quiet_nodes(last_a + HORIZON_SECS * 1000 + 1).is_empty());
    }

    #[test]
    fn a_node_name_too_long_or_one_node_too_many_is_not_tracked() {
        let mut d = Delivery::default();
        assert!(d.node_beat(&"n".repeat(MAX_NODE_NAME + 1), T0).is_none());
        assert!(d.node_beat("", T0).is_none());
        for i in 0..MAX_NODES {
            assert!(d.node_beat(&format!("n{i}"), T0).is_some());
        }
        assert!(d.node_beat("one-more", T0 + 1_000).is_none());
        let again = d.node_beat("n0", T0 + 1_000);
        assert_eq!(again.as_deref(), Some("n0"), "a node tracked stays tracked");
        // nodes not heard within the horizon make room
        assert!(
            d.node_beat("one-more", T0 + HORIZON_SECS * 1000 + 1)
                .is_some()
        );
    }
}
