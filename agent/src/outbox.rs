//! The durable outbox of `started` and `done` messages.
//!
//! Each message is a file `<seq>.<job>.<phase>.json` written durably
//! (fsynced, renamed, directory fsynced) before anything is sent, so a crash
//! or a kill at any point leaves it to be sent after restart. The sender
//! ([`Outbox::drain`]) sends entries in order as request/ack with the
//! `(job, phase)` idempotency key and deletes an entry only once the control
//! plane has acknowledged it (recorded now or earlier). A definitive refusal
//! moves the entry to `rejected/`, kept for the operator, never deleted.
//!
//! The outbox is bounded: at `max_entries` the agent stops accepting new
//! work ([`Outbox::is_full`]), but a result is never dropped — `done`
//! messages of jobs already running are always written.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use async_nats::Client;
use rm_bus::reqack::{IdempotencyKey, RequestError, RetryPolicy, request_ack};
use rm_bus::subject::{self, JobTopic};
use rm_bus::{HostId, JobId};
use tokio::sync::Notify;

use crate::state::{sync_dir, write_durable};

/// One message waiting for its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub job: JobId,
    pub topic: JobTopic,
    pub path: PathBuf,
}

/// What one pass of the sender achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub sent: usize,
    pub rejected: usize,
    /// Entries still waiting (the pass stopped at the first one that got
    /// no answer, so order is kept).
    pub remaining: usize,
}

pub struct Outbox {
    dir: PathBuf,
    next_seq: AtomicU64,
    max_entries: usize,
    /// Serialises pushes so sequence numbers match file order.
    write: Mutex<()>,
    pub(crate) wake: Notify,
}

fn topic_of(s: &str) -> Option<JobTopic> {
    match s {
        "started" => Some(JobTopic::Started),
        "done" => Some(JobTopic::Done),
        _ => None,
    }
}

impl Outbox {
    /// Opens the outbox in `dir` (created if missing), removing partial
    /// writes a crash may have left.
    pub fn open(dir: PathBuf, max_entries: usize) -> Result<Self> {
        std::fs::create_dir_all(dir.join("rejected"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let ob = Self {
            dir,
            next_seq: AtomicU64::new(1),
            max_entries,
            write: Mutex::new(()),
            wake: Notify::new(),
        };
        let mut max = 0;
        for entry in std::fs::read_dir(&ob.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(ob.dir.join(&name));
            }
        }
        for e in ob.pending()? {
            max = max.max(e.seq);
        }
        ob.next_seq.store(max + 1, Ordering::SeqCst);
        Ok(ob)
    }

    /// Writes a message durably; it is sent by the next [`Self::drain`].
    pub fn push(&self, job: &JobId, topic: JobTopic, payload: &[u8]) -> Result<()> {
        {
            let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            let path = self
                .dir
                .join(format!("{seq:016}.{job}.{}.json", topic.as_str()));
            write_durable(&path, payload, true)?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Entries waiting, oldest first.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            let (Some(seq), Some(job), Some(topic), Some("json"), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            let (Ok(seq), Ok(job), Some(topic)) =
                (seq.parse::<u64>(), JobId::parse(job), topic_of(topic))
            else {
                continue;
            };
            out.push(Entry {
                seq,
                job,
                topic,
                path: entry.path(),
            });
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.pending().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At the bound: accept no new work until the control plane catches up.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_entries
    }

    /// Jobs whose `done` still waits for its acknowledgement.
    pub fn jobs_with_done_pending(&self) -> HashSet<JobId> {
        self.pending()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.topic == JobTopic::Done)
            .map(|e| e.job)
            .collect()
    }

    /// Sends every waiting entry in order. Stops at the first entry that
    /// gets no answer within `policy` (the bus is down or the control plane
    /// is away) so a `done` never overtakes its `started`.
    pub async fn drain(
        &self,
        client: &Client,
        host: &HostId,
        policy: &RetryPolicy,
    ) -> Result<Drained> {
        let mut d = Drained::default();
        let entries = self.pending()?;
        let total = entries.len();
        for (i, e) in entries.into_iter().enumerate() {
            let payload = match std::fs::read(&e.path) {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(path = %e.path.display(), error = %err, "unreadable outbox entry set aside");
                    self.set_aside(&e);
                    d.rejected += 1;
                    continue;
                }
            };
            let subj = subject::agent_job(host, &e.job, e.topic);
            let key = IdempotencyKey::job_phase(&e.job, e.topic);
            match request_ack(client, &subj, &key, payload.into(), policy).await {
                Ok(ack) => {
                    tracing::debug!(job = %e.job, phase = e.topic.as_str(), duplicate = ack.duplicate, "result acknowledged");
                    self.remove(&e)?;
                    d.sent += 1;
                }
                Err(RequestError::Refused { reason, .. }) => {
                    tracing::warn!(job = %e.job, phase = e.topic.as_str(), reason = %reason, "control plane refused a result; kept in outbox/rejected");
                    self.set_aside(&e);
                    d.rejected += 1;
                }
                Err(err) => {
                    tracing::debug!(job = %e.job, phase = e.topic.as_str(), error = %err, "result not acknowledged yet");
                    d.remaining = total - i;
                    return Ok(d);
                }
            }
        }
        Ok(d)
    }

    fn remove(&self, e: &Entry) -> Result<()> {
        match std::fs::remove_file(&e.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).context("removing an acknowledged outbox entry"),
        }
        sync_dir(&self.dir);
        Ok(())
    }

    fn set_aside(&self, e: &Entry) {
        if let Some(name) = e.path.file_name() {
            let _ = std::fs::rename(&e.path, self.dir.join("rejected").join(name));
            sync_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(s: &str) -> JobId {
        JobId::parse(s).unwrap()
    }

    #[test]
    fn entries_survive_reopen_in_order_and_partial_writes_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("outbox");
        {
            let ob = Outbox::open(dir.clone(), 10).unwrap();
            ob.push(&job("j1"), JobTopic::Started, b"{\"a\":1}")
                .unwrap();
            ob.push(&job("j1"), JobTopic::Done, b"{\"a\":2}").unwrap();
            ob.push(&job("j2"), JobTopic::Started, b"{\"a\":3}")
                .unwrap();
        }
        std::fs::write(dir.join(".0000000000000009.j3.done.json.tmp"), b"{\"tru").unwrap();
        std::fs::write(dir.join("garbage.txt"), b"x").unwrap();
        let ob = Outbox::open(dir.clone(), 10).unwrap();
        let p = ob.pending().unwrap();
        let got: Vec<(u64, &str, JobTopic)> =
            p.iter().map(|e| (e.seq, e.job.as_str(), e.topic)).collect();
        assert_eq!(
            got,
            [
                (1, "j1", JobTopic::Started),
                (2, "j1", JobTopic::Done),
                (3, "j2", JobTopic::Started)
            ]
        );
        assert!(!dir.join(".0000000000000009.j3.done.json.tmp").exists());
        assert_eq!(std::fs::read(&p[1].path).unwrap(), b"{\"a\":2}");
        assert_eq!(ob.jobs_with_done_pending(), HashSet::from([job("j1")]));
        // numbering continues after the highest entry
        ob.push(&job("j2"), JobTopic::Done, b"{}").unwrap();
        assert_eq!(ob.pending().unwrap().last().unwrap().seq, 4);
    }

    #[test]
    fn full_at_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = Outbox::open(tmp.path().to_path_buf(), 2).unwrap();
        assert!(ob.is_empty() && !ob.is_full());
        ob.push(&job("a"), JobTopic::Started, b"{}").unwrap();
        ob.push(&job("a"), JobTopic::Done, b"{}").unwrap();
        assert!(ob.is_full());
        // still written past the bound: results are never dropped
        ob.push(&job("b"), JobTopic::Done, b"{}").unwrap();
        assert_eq!(ob.len(), 3);
        let e = ob.pending().unwrap().remove(0);
        ob.remove(&e).unwrap();
        ob.set_aside(&ob.pending().unwrap().remove(0));
        assert_eq!(ob.len(), 1);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("rejected"))
                .unwrap()
                .count(),
            1
        );
    }
}
