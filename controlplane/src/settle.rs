//! What a batch of job results does once rather than once per result.
//!
//! Ingest applies a batch of `started`/`done` messages in one transaction;
//! the follow-up work they share is gathered here and written at the end
//! of that transaction: every host's summary (last job, failures, last
//! backup and snapshot, running/queued counts) in one statement,
//! a never-listed repository's refresh when backups added snapshots to it,
//! a repository refresh queued at most once per repository, and each
//! host's row read at most once.

use std::collections::{BTreeMap, HashMap};

use rm_store::health;
use rm_store::jobs::{self, Finished};
use rm_store::{hosts, snapshots};

use crate::Cp;

/// A repository that took new snapshots in this batch.
struct Snapshotted {
    /// Whether any of those jobs was not the system's own (only those ask
    /// for a refresh of a never-listed repository).
    by_operator_or_schedule: bool,
    exec_host: String,
}

/// The batch's shared follow-up work; [`Settle::write`] writes it.
#[derive(Default)]
pub(crate) struct Settle {
    finished: BTreeMap<String, Vec<Finished>>,
    counts: BTreeMap<String, ()>,
    snapshotted: BTreeMap<String, Snapshotted>,
    refresh: BTreeMap<String, String>,
    restic_hosts: HashMap<String, String>,
    /// Snapshots backups named, written together ([`Settle::write_snapshots`]).
    new_snapshots: Vec<snapshots::Snapshot>,
}

impl Settle {
    /// A job finished: its host's summary is updated at the end.
    pub fn finished(&mut self, f: Finished) {
        self.finished.entry(f.host_id.clone()).or_default().push(f);
    }

    /// A host's running/queued counts changed (a job started).
    pub fn counts(&mut self, host: &str) {
        self.counts.insert(host.to_owned(), ());
    }

    /// A backup's snapshot was added to `repo`'s cache.
    pub fn snapshot_added(&mut self, repo: &str, job: &jobs::Job) {
        let own = job.origin != "system";
        let e = self
            .snapshotted
            .entry(repo.to_owned())
            .or_insert_with(|| Snapshotted {
                by_operator_or_schedule: own,
                exec_host: job.exec_host_id.clone(),
            });
        if own && !e.by_operator_or_schedule {
            e.by_operator_or_schedule = true;
            e.exec_host.clone_from(&job.exec_host_id);
        }
    }

    /// `repo` needs a refresh (queued once, run on `exec_host`).
    pub fn refresh(&mut self, repo: &str, exec_host: &str) {
        self.refresh
            .entry(repo.to_owned())
            .or_insert_with(|| exec_host.to_owned());
    }

    /// Reads the restic host names of `hosts` not read yet, in one query.
    pub async fn prefetch_restic_hosts(
        &mut self,
        tx: &mut rm_store::Conn,
        hosts: &[&str],
    ) -> rm_store::Result<()> {
        let missing: Vec<&str> = hosts
            .iter()
            .copied()
            .filter(|h| !self.restic_hosts.contains_key(*h))
            .collect();
        for (id, name) in hosts::restic_names_of(&mut *tx, &missing).await? {
            self.restic_hosts.insert(id, name.unwrap_or_default());
        }
        Ok(())
    }

    /// A backup's snapshot, for the repository's cache.
    pub fn snapshot(&mut self, s: snapshots::Snapshot) {
        self.new_snapshots.push(s);
    }

    /// Writes the snapshots noted so far, in one statement.
    pub async fn write_snapshots(&mut self, tx: &mut rm_store::Conn) -> rm_store::Result<()> {
        let list = std::mem::take(&mut self.new_snapshots);
        snapshots::upsert_many(&mut *tx, &list).await
    }

    /// The restic host name of `host` (read once per batch).
    pub async fn restic_host(
        &mut self,
        tx: &mut rm_store::Conn,
        host: &str,
    ) -> rm_store::Result<String> {
        if let Some(h) = self.restic_hosts.get(host) {
            return Ok(h.clone());
        }
        let h = hosts::get(&mut *tx, host)
            .await?
            .restic_host
            .unwrap_or_default();
        self.restic_hosts.insert(host.to_owned(), h.clone());
        Ok(h)
    }

    /// Writes it all, in the batch's transaction.
    pub async fn write(self, cp: &Cp, tx: &mut rm_store::Conn) -> anyhow::Result<()> {
        let Self {
            finished,
            mut counts,
            snapshotted,
            mut refresh,
            new_snapshots,
            ..
        } = self;
        // (each run of results writes its own; none is left here)
        snapshots::upsert_many(&mut *tx, &new_snapshots).await?;
        for host in finished.keys() {
            counts.remove(host);
        }
        let hosts: Vec<(&str, &[Finished])> = finished
            .iter()
            .map(|(h, d)| (h.as_str(), d.as_slice()))
            .chain(counts.keys().map(|h| (h.as_str(), &[][..])))
            .collect();
        rm_store::results::summarize_hosts(&mut *tx, &hosts).await?;
        // a listed repository's count is its cache's: nothing to write; a
        // never-listed one is listed once
        let repos: Vec<&str> = snapshotted.keys().map(String::as_str).collect();
        let counted = health::snapshots_counted_among(&mut *tx, &repos).await?;
        for (repo, s) in &snapshotted {
            if !counted.contains(repo) && s.by_operator_or_schedule {
                // never listed: the cache holds only what backups added
                refresh
                    .entry(repo.clone())
                    .or_insert_with(|| s.exec_host.clone());
            }
        }
        for (repo, exec_host) in refresh {
            crate::health::queue_refresh(cp, &mut *tx, &repo, &exec_host).await?;
        }
        Ok(())
    }
}
