//! Heartbeats on their way to the batch writer. They travel through a
//! bounded channel; when a storm fills it, a beat is counted as dropped
//! from the channel and parked here instead, one (the latest) per host, so
//! the overflow is bounded by the fleet and a live host never loses its
//! liveness to a full channel.

use std::collections::HashMap;
use std::sync::Mutex;

use rm_bus::msg::Heartbeat;
use tokio::sync::Notify;

use crate::lock;

/// A heartbeat as ingest saw it: host, message, time received.
pub(crate) type Beat = (String, Heartbeat, i64);

/// The latest parked beat of each host.
#[derive(Default)]
pub(crate) struct Overflow {
    latest: Mutex<HashMap<String, (Heartbeat, i64)>>,
    wake: Notify,
}

impl Overflow {
    /// Parks a beat that did not fit the channel (replacing an older one
    /// of the same host) and wakes the writer.
    pub fn park(&self, (host, hb, at): Beat) {
        {
            let mut latest = lock(&self.latest);
            match latest.get(&host) {
                Some((_, seen)) if *seen > at => {}
                _ => {
                    latest.insert(host, (hb, at));
                }
            }
        }
        self.wake.notify_one();
    }

    /// Everything parked so far.
    pub fn take(&self) -> Vec<Beat> {
        lock(&self.latest)
            .drain()
            .map(|(host, (hb, at))| (host, hb, at))
            .collect()
    }

    /// Resolves once something was parked since the last call.
    pub async fn parked(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(host: &str, at: i64) -> Beat {
        let hb = Heartbeat {
            v: rm_bus::msg::PROTOCOL_VERSION,
            ts_ms: at,
            agent_version: "test".into(),
            restic_version: None,
            os: "linux".into(),
            arch: "x86_64".into(),
            uptime_secs: 1,
            config_version: 0,
            disks: vec![],
            running_jobs: vec![],
            next_runs: vec![],
        };
        (host.into(), hb, at)
    }

    #[test]
    fn keeps_only_the_latest_beat_of_each_host() {
        let o = Overflow::default();
        o.park(beat("a", 1));
        o.park(beat("a", 3));
        o.park(beat("a", 2));
        o.park(beat("b", 5));
        let mut got: Vec<(String, i64)> = o.take().into_iter().map(|(h, _, at)| (h, at)).collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), 3), ("b".into(), 5)]);
        assert!(o.take().is_empty());
    }
}
