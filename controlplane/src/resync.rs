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
//!
//! A tick reads only what can be behind, never every online host: the
//! unconfirmed hosts from their own partial index, and the desired
//! versions of hosts whose reported version changed since it was last
//! compared or did not match then. The desired version only moves by a
//! bump, which leaves the host unconfirmed until its agent confirms, so
//! a host whose report matched and has not changed since cannot be behind
//! without being unconfirmed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_store::hosts;
use tokio::time::Instant;

use crate::{Cp, lock};

/// Ids per statement when desired versions are read for a list of hosts.
const COMPARE_CHUNK: usize = 10_000;

/// What resync remembers per host (memory only: a restart starts over,
/// and hello re-syncs anyway).
#[derive(Default)]
pub(crate) struct Resync {
    reported: Mutex<Reported>,
    /// Hosts whose reported version differed from the desired one when
    /// last compared: compared again each tick until they agree.
    mismatched: Mutex<HashSet<String>>,
    /// Per host found behind: not before, and the last wait.
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    /// Hosts a resync push is under way for.
    pushing: Mutex<HashSet<String>>,
}

/// The versions agents report, and which of them the sweep has not
/// compared with the desired one yet.
#[derive(Default)]
struct Reported {
    /// The config version each host's latest heartbeat reported.
    versions: HashMap<String, u64>,
    /// Hosts whose reported version is new since the sweep compared it.
    changed: HashSet<String>,
}

impl Resync {
    /// Notes the version a heartbeat reported (cheap; the sweep compares).
    pub(crate) fn heartbeat(&self, host: &str, version: u64) {
        let mut guard = lock(&self.reported);
        let r = &mut *guard;
        match r.versions.get_mut(host) {
            Some(v) if *v == version => {}
            Some(v) => {
                *v = version;
                r.changed.insert(host.to_owned());
            }
            None => {
                r.versions.insert(host.to_owned(), version);
                r.changed.insert(host.to_owned());
            }
        }
    }

    /// The hosts to compare this tick, with the version each reported.
    fn to_compare(&self) -> Vec<(String, u64)> {
        let r = lock(&self.reported);
        let mismatched = lock(&self.mismatched);
        r.changed
            .iter()
            .chain(mismatched.iter().filter(|h| !r.changed.contains(*h)))
            .filter_map(|h| r.versions.get(h).map(|v| (h.clone(), *v)))
            .collect()
    }

    /// Records a comparison: `compared` (host, version compared) are no
    /// longer changed unless a heartbeat reported another version
    /// meanwhile; `gone` are hosts that no longer exist.
    fn compared(&self, compared: &[(String, u64)], gone: &[String], mismatched: HashSet<String>) {
        {
            let mut guard = lock(&self.reported);
            let r = &mut *guard;
            for (h, v) in compared {
                if r.versions.get(h) == Some(v) {
                    r.changed.remove(h);
                }
            }
            for h in gone {
                r.versions.remove(h);
                r.changed.remove(h);
            }
        }
        *lock(&self.mismatched) = mismatched;
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
    let candidates = cp.resync.to_compare();
    let mut c = cp.store.read().await?;
    let mut behind: HashMap<String, i64> = hosts::config_unconfirmed_online(&mut c)
        .await?
        .into_iter()
        .collect();
    let reported: HashMap<&str, u64> = candidates.iter().map(|(h, v)| (h.as_str(), *v)).collect();
    let (mut compared, mut mismatched, mut gone) = (Vec::new(), HashSet::new(), Vec::new());
    for chunk in candidates.chunks(COMPARE_CHUNK) {
        let ids: Vec<String> = chunk.iter().map(|(h, _)| h.clone()).collect();
        let found = hosts::config_versions_among(&mut c, &ids).await?;
        let found_ids: HashSet<&str> = found.iter().map(|(h, _, _)| h.as_str()).collect();
        gone.extend(
            ids.iter()
                .filter(|h| !found_ids.contains(h.as_str()))
                .cloned(),
        );
        for (id, desired, online) in found {
            let Some(&r) = reported.get(id.as_str()) else {
                continue;
            };
            compared.push((id.clone(), r));
            // An offline host is done with: the hello it says when it is
            // back gets the config if its version differs. Keeping it to
            // compare would read every such host each tick (a 100,000-agent
            // run marked 36,808 hosts offline, stop 42).
            if !online {
                continue;
            }
            if i64::try_from(r).unwrap_or(i64::MAX) != desired {
                mismatched.insert(id.clone());
                behind.entry(id).or_insert(desired);
            }
        }
    }
    drop(c);
    cp.resync.compared(&compared, &gone, mismatched);
    Ok(behind.into_iter().collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts_of(v: &[(String, u64)]) -> Vec<&str> {
        let mut h: Vec<&str> = v.iter().map(|(h, _)| h.as_str()).collect();
        h.sort_unstable();
        h
    }

    #[test]
    fn only_reports_that_changed_since_their_comparison_or_did_not_match_are_compared_again() {
        let r = Resync::default();
        r.heartbeat("a", 1);
        r.heartbeat("b", 1);
        let first = r.to_compare();
        assert_eq!(hosts_of(&first), ["a", "b"]);
        // "b" did not match its desired version
        r.compared(&first, &[], HashSet::from(["b".to_owned()]));
        assert_eq!(hosts_of(&r.to_compare()), ["b"]);
        // the same version again is not news; another one is
        r.heartbeat("a", 1);
        assert_eq!(hosts_of(&r.to_compare()), ["b"]);
        r.heartbeat("a", 2);
        assert_eq!(r.to_compare().len(), 2);
        r.compared(&r.to_compare(), &[], HashSet::new());
        assert!(r.to_compare().is_empty());
    }

    #[test]
    fn a_report_that_changed_while_it_was_compared_is_compared_again() {
        let r = Resync::default();
        r.heartbeat("a", 1);
        let asked = r.to_compare();
        r.heartbeat("a", 2);
        r.compared(&asked, &[], HashSet::new());
        assert_eq!(r.to_compare(), [("a".to_owned(), 2)]);
    }

    #[test]
    fn hosts_not_compared_stay_to_compare_and_hosts_that_are_gone_are_forgotten() {
        let r = Resync::default();
        r.heartbeat("offline", 3);
        r.heartbeat("deleted", 3);
        // neither was compared (the read stopped before one; the other
        // no longer exists)
        r.compared(&[], &["deleted".to_owned()], HashSet::new());
        assert_eq!(r.to_compare(), [("offline".to_owned(), 3)]);
        assert!(!lock(&r.reported).versions.contains_key("deleted"));
    }
}
