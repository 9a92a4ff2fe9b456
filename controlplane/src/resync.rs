//! Config resync: every agent ends up running its current config.
//!
//! A config change is pushed at once (`schedules::push_configs`); a push
//! that fails is not the end of it. Each sweeper tick pushes again to
//! online hosts whose confirmed (`applied_config_version`) version is
//! behind the desired one, and to hosts whose latest heartbeat reported a
//! version other than the desired one (an agent that lost its state, or a
//! push it never applied). A host found behind first waits
//! `Timings::resync_first` (the immediate push or its next hello may still
//! land), then each try waits twice as long as the last, up to
//! `Timings::resync_max`, so a host that cannot take its config is not
//! hammered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_store::hosts;
use tokio::time::Instant;

use crate::{Cp, lock};

/// What resync remembers per host (memory only: a restart starts over,
/// and hello re-syncs anyway).
#[derive(Default)]
pub(crate) struct Resync {
    /// The config version each host's latest heartbeat reported.
    reported: Mutex<HashMap<String, u64>>,
    /// Per host found behind: not before, and the last wait.
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    /// Hosts a resync push is under way for.
    pushing: Mutex<HashSet<String>>,
}

impl Resync {
    /// Notes the version a heartbeat reported (cheap; the sweep compares).
    pub(crate) fn heartbeat(&self, host: &str, version: u64) {
        let mut r = lock(&self.reported);
        match r.get_mut(host) {
            Some(v) => *v = version,
            None => {
                r.insert(host.to_owned(), version);
            }
        }
    }

    /// Should `host`, found behind now, be pushed now? The first sighting
    /// only starts its wait: the immediate push or the next hello may
    /// still land.
    fn due(&self, host: &str, now: Instant, first: Duration) -> bool {
        let mut b = lock(&self.backoff);
        match b.get(host) {
            None => {
                b.insert(host.to_owned(), (now + first, first));
                false
            }
            Some((not_before, _)) => *not_before <= now,
        }
    }

    fn failed(&self, host: &str, now: Instant, max: Duration) {
        let mut b = lock(&self.backoff);
        let wait = b.get(host).map_or(max, |(_, w)| (*w * 2).min(max));
        b.insert(host.to_owned(), (now + wait, wait));
    }

    /// Forgets the waits of hosts that are no longer behind.
    fn keep_only(&self, behind: &HashSet<&str>) {
        lock(&self.backoff).retain(|h, _| behind.contains(h.as_str()));
    }
}

/// Online hosts whose agent is not known to run the desired config.
async fn behind(cp: &Cp) -> rm_store::Result<Vec<(String, i64)>> {
    let online = {
        let mut c = cp.store.read().await?;
        hosts::config_versions_online(&mut c).await?
    };
    let reported = lock(&cp.resync.reported).clone();
    Ok(online
        .into_iter()
        .filter(|(id, desired, applied)| {
            applied < desired
                || reported
                    .get(id)
                    .is_some_and(|r| i64::try_from(*r).unwrap_or(i64::MAX) != *desired)
        })
        .map(|(id, desired, _)| (id, desired))
        .collect())
}

/// One pass: starts a push to every host that is behind and due (in the
/// background: a slow agent never holds up the sweeper).
pub(crate) async fn sweep(cp: &Arc<Cp>) -> anyhow::Result<()> {
    let now = Instant::now();
    let behind = behind(cp).await?;
    cp.resync
        .keep_only(&behind.iter().map(|(h, _)| h.as_str()).collect());
    for (host, desired) in behind {
        if !cp.resync.due(&host, now, cp.t.resync_first) {
            continue;
        }
        if !lock(&cp.resync.pushing).insert(host.clone()) {
            continue;
        }
        // until it fails, the next try waits like after a failure
        cp.resync.failed(&host, now, cp.t.resync_max);
        tracing::info!(host = %host, desired, "config behind on the agent; pushing it again");
        let cp = cp.clone();
        tokio::spawn(async move {
            match crate::schedules::push_config(&cp, &host).await {
                Ok(true) => {
                    // until its next heartbeat says otherwise
                    cp.resync
                        .heartbeat(&host, u64::try_from(desired).unwrap_or(0));
                    tracing::info!(host = %host, desired, "config resync confirmed");
                }
                Ok(false) => {
                    tracing::info!(host = %host, "config resync not applied; trying again later")
                }
                Err(f) => {
                    tracing::info!(host = %host, reason = %f.message, "config resync not confirmed; trying again later")
                }
            }
            lock(&cp.resync.pushing).remove(&host);
        });
    }
    Ok(())
}
