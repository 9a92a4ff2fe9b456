//! The durable outbox of `started` and `done` messages.
//!
//! Each message is a file `<seq>.<job>.<phase>.json` written durably
//! (fsynced, renamed, directory fsynced) before anything is sent, so a crash
//! or a kill at any point leaves it to be sent after restart. The sender
//! ([`Outbox::drain`]) sends entries in order as request/ack with the
//! `(job, phase)` idempotency key and deletes an entry only once the control
//! plane has acknowledged it (recorded now or earlier). A definitive refusal
//! moves the entry to `rejected/` with its reason (`<entry>.reason`), kept
//! for the operator, never deleted.
//!
//! No entry blocks the ones behind it: a message larger than the server's
//! `max_payload` (read from its INFO at send time) is split — a `done`'s
//! summary travels as numbered parts with a total before the `done` — or,
//! when it cannot be made to fit, set aside and replaced by a small stand-in
//! that tells the control plane why (the job fails with "result too large
//! for the bus").
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
use rm_bus::msg::{
    ErrorKind, JobDone, JobOutcome, JobPart, JobStarted, PROTOCOL_VERSION, PartsRef, decode, encode,
};
use rm_bus::reqack::{IDEMPOTENCY_HEADER, IdempotencyKey, RequestError, RetryPolicy, request_ack};
use rm_bus::size;
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
    /// is away) so a `done` never overtakes its `started`. An entry that can
    /// never be delivered as it is never stops the queue: see
    /// [`Self::send_entry`].
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
                    self.set_aside(&e, &format!("unreadable: {err}"));
                    d.rejected += 1;
                    continue;
                }
            };
            match self.send_entry(client, host, &e, payload, policy).await? {
                Sent::Acked => {
                    self.remove(&e)?;
                    d.sent += 1;
                }
                Sent::Replaced => d.sent += 1,
                Sent::Refused(reason) => {
                    tracing::warn!(job = %e.job, phase = e.topic.as_str(), reason = %reason, "result refused; kept in outbox/rejected");
                    self.set_aside(&e, &reason);
                    d.rejected += 1;
                }
                Sent::NotYet(why) => {
                    tracing::debug!(job = %e.job, phase = e.topic.as_str(), error = %why, "result not acknowledged yet");
                    d.remaining = total - i;
                    return Ok(d);
                }
            }
        }
        Ok(d)
    }

    /// Sends one entry. One that is too large for the bus is made to fit:
    /// a `done`'s summary goes ahead as [`JobPart`]s and the `done` refers
    /// to them; what still cannot fit is set aside under `rejected/` with
    /// its reason and replaced, under the same sequence number, by a small
    /// message that tells the control plane so (the job fails with "result
    /// too large for the bus"), which is then sent.
    async fn send_entry(
        &self,
        client: &Client,
        host: &HostId,
        e: &Entry,
        payload: Vec<u8>,
        policy: &RetryPolicy,
    ) -> Result<Sent> {
        let subj = subject::agent_job(host, &e.job, e.topic);
        let key = IdempotencyKey::job_phase(&e.job, e.topic);
        let max = size::max_payload(client);
        let header = size::header_len([(IDEMPOTENCY_HEADER, key.as_str())]);
        let too_large = match size::check_against(max, header, payload.len()) {
            Ok(()) => {
                match request_ack(client, &subj, &key, payload.clone().into(), policy).await {
                    Ok(ack) => {
                        tracing::debug!(job = %e.job, phase = e.topic.as_str(), duplicate = ack.duplicate, "result acknowledged");
                        return Ok(Sent::Acked);
                    }
                    Err(RequestError::TooLarge { too_large, .. }) => too_large,
                    Err(RequestError::Refused { reason, .. }) => return Ok(Sent::Refused(reason)),
                    Err(RequestError::Invalid { reason, .. }) => return Ok(Sent::Refused(reason)),
                    Err(err) => return Ok(Sent::NotYet(err.to_string())),
                }
            }
            Err(t) => t,
        };
        tracing::info!(job = %e.job, phase = e.topic.as_str(), size = too_large.size, max_payload = too_large.max, "result too large for one message");
        let reason = format!("result too large for the bus: {too_large}");
        let stand_in = match e.topic {
            JobTopic::Done => {
                let Ok(done) = decode::<JobDone>("done", &payload) else {
                    return Ok(Sent::Refused(format!("{reason}; unreadable")));
                };
                if let Some(sent) = self
                    .send_in_parts(client, host, e, &done, too_large.max, policy)
                    .await
                {
                    return Ok(sent);
                }
                stand_in_done(done, &reason)
            }
            JobTopic::Started => {
                let Ok(mut started) = decode::<JobStarted>("started", &payload) else {
                    return Ok(Sent::Refused(format!("{reason}; unreadable")));
                };
                // the control plane takes a scheduled run's parameters
                // from its schedule when the message has none
                started.params = None;
                encode(&started)
            }
            _ => return Ok(Sent::Refused(reason)),
        };
        self.replace(client, host, e, &payload, &reason, &stand_in, policy)
            .await
    }

    /// Sends a `done` whose summary is too large as the summary's parts, in
    /// order, then the `done` naming them. `None` when the `done` does not
    /// fit even without its summary.
    async fn send_in_parts(
        &self,
        client: &Client,
        host: &HostId,
        e: &Entry,
        done: &JobDone,
        max: usize,
        policy: &RetryPolicy,
    ) -> Option<Sent> {
        let summary = done.summary.as_ref()?;
        let text = summary.to_string();
        let chunks = size::split_text(&text, size::chunk_len(max));
        let total = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        let reduced = encode(&JobDone {
            summary: None,
            summary_parts: Some(PartsRef {
                total,
                bytes: text.len() as u64,
            }),
            ..done.clone()
        });
        let key = IdempotencyKey::job_phase(&e.job, e.topic);
        let header = size::header_len([(IDEMPOTENCY_HEADER, key.as_str())]);
        size::check_against(max, header, reduced.len()).ok()?;
        let part_subj = subject::agent_job(host, &e.job, JobTopic::Part);
        for (index, data) in (0u32..).zip(chunks) {
            let part = JobPart {
                v: PROTOCOL_VERSION,
                job_id: e.job.clone(),
                of: "summary".into(),
                index,
                total,
                data: data.to_owned(),
            };
            let part_key = IdempotencyKey::new(format!("{}:part:{index}/{total}", e.job));
            match request_ack(client, &part_subj, &part_key, encode(&part), policy).await {
                Ok(_) => {}
                Err(RequestError::Refused { reason, .. }) => {
                    return Some(Sent::Refused(format!("part {index}: {reason}")));
                }
                Err(err) => return Some(Sent::NotYet(err.to_string())),
            }
        }
        tracing::info!(job = %e.job, parts = total, bytes = text.len(), "summary sent in parts");
        let subj = subject::agent_job(host, &e.job, e.topic);
        Some(
            match request_ack(client, &subj, &key, reduced, policy).await {
                Ok(_) => Sent::Acked,
                Err(RequestError::Refused { reason, .. }) => Sent::Refused(reason),
                Err(err) => Sent::NotYet(err.to_string()),
            },
        )
    }

    /// Sets `original` aside with `reason` and puts `stand_in` in its place
    /// (same sequence number: order is kept), then sends it.
    #[allow(clippy::too_many_arguments)]
    async fn replace(
        &self,
        client: &Client,
        host: &HostId,
        e: &Entry,
        original: &[u8],
        reason: &str,
        stand_in: &[u8],
        policy: &RetryPolicy,
    ) -> Result<Sent> {
        let key = IdempotencyKey::job_phase(&e.job, e.topic);
        let header = size::header_len([(IDEMPOTENCY_HEADER, key.as_str())]);
        if size::check(client, header, stand_in.len()).is_err() {
            return Ok(Sent::Refused(reason.to_owned()));
        }
        let Some(stem) = e.path.file_stem() else {
            return Ok(Sent::Refused(reason.to_owned()));
        };
        // original and reason first: a crash before the stand-in replaces
        // the entry repeats this, harmlessly. Named apart from the entry, so
        // a stand-in refused later does not overwrite it.
        let kept = self
            .dir
            .join("rejected")
            .join(format!("{}.original.json", stem.to_string_lossy()));
        write_durable(&kept, original, true)?;
        write_durable(&reason_path(&kept), reason.as_bytes(), true)?;
        write_durable(&e.path, stand_in, true)?;
        tracing::warn!(job = %e.job, phase = e.topic.as_str(), reason = %reason, "result set aside in outbox/rejected; the control plane is told");
        let subj = subject::agent_job(host, &e.job, e.topic);
        Ok(
            match request_ack(client, &subj, &key, stand_in.to_vec().into(), policy).await {
                Ok(_) => {
                    self.remove(e)?;
                    Sent::Replaced
                }
                Err(RequestError::Refused { reason, .. }) => Sent::Refused(reason),
                Err(err) => Sent::NotYet(err.to_string()),
            },
        )
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

    /// Moves an entry to `rejected/`, with its reason next to it.
    fn set_aside(&self, e: &Entry, reason: &str) {
        if let Some(name) = e.path.file_name() {
            let kept = self.dir.join("rejected").join(name);
            if let Err(err) = write_durable(&reason_path(&kept), reason.as_bytes(), true) {
                tracing::warn!(error = %err, "reason of a rejected result not written");
            }
            let _ = std::fs::rename(&e.path, &kept);
            sync_dir(&self.dir);
        }
    }

    /// Entries set aside under `rejected/`, with their reasons.
    pub fn rejected(&self) -> Vec<(PathBuf, String)> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("rejected")) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, String)> = rd
            .flatten()
            .map(|d| d.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let reason = std::fs::read_to_string(reason_path(&p)).unwrap_or_default();
                (p, reason)
            })
            .collect();
        out.sort();
        out
    }
}

/// What became of one entry.
enum Sent {
    Acked,
    /// Set aside; its stand-in was acknowledged (and removed).
    Replaced,
    Refused(String),
    NotYet(String),
}

/// `rejected/<entry>.reason` next to `rejected/<entry>`.
fn reason_path(kept: &std::path::Path) -> PathBuf {
    let mut s = kept.as_os_str().to_owned();
    s.push(".reason");
    PathBuf::from(s)
}

/// The small `done` that takes the place of one that cannot be sent: the
/// job fails with `reason`, naming restic's own outcome.
fn stand_in_done(orig: JobDone, reason: &str) -> bytes::Bytes {
    encode(&JobDone {
        v: PROTOCOL_VERSION,
        job_id: orig.job_id,
        outcome: JobOutcome::Failed,
        exit_code: orig.exit_code,
        error_kind: Some(ErrorKind::Fatal),
        error: Some(format!(
            "{reason} (restic's outcome: {}); the full result is kept on the agent in outbox/rejected",
            outcome_name(orig.outcome)
        )),
        summary: None,
        stderr_tail: vec![],
        started_ms: orig.started_ms,
        finished_ms: orig.finished_ms,
        restic_version: orig.restic_version,
        summary_parts: None,
    })
}

fn outcome_name(o: JobOutcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
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
        ob.set_aside(&ob.pending().unwrap().remove(0), "refused");
        assert_eq!(ob.len(), 1);
        let rejected = ob.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].1, "refused");
    }
}
