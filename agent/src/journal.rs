//! The job journal: every job this agent accepted, persisted before the
//! dispatch is acknowledged, with its state (accepted, running), until its
//! `done` is in the outbox. A bounded list of finished job ids makes a
//! re-sent dispatch (the control plane retries with one idempotency key)
//! harmless: it is acknowledged again and not run twice.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rm_bus::JobId;
use rm_bus::msg::{JobOrigin, JobSpec};
use serde::{Deserialize, Serialize};

use crate::state::{sync_dir, write_durable};

/// How many finished job ids are remembered.
const FINISHED_KEPT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Accepted,
    Running,
}

/// One job held by this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub origin: JobOrigin,
    pub state: JobState,
    pub accepted_ms: i64,
    pub started_ms: Option<i64>,
    /// Do not start before this time (a scheduled run's jitter).
    #[serde(default)]
    pub not_before_ms: Option<i64>,
}

/// What the journal knows of a job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Held(JobState),
    Finished,
    Unknown,
}

pub struct Journal {
    dir: PathBuf,
    finished: Mutex<VecDeque<JobId>>,
}

impl Journal {
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let finished = match std::fs::read(dir.join("finished.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "finished-jobs list is corrupt; starting a new one");
                VecDeque::new()
            }),
            Err(_) => VecDeque::new(),
        };
        Ok(Self {
            dir,
            finished: Mutex::new(finished),
        })
    }

    fn path(&self, job: &JobId) -> PathBuf {
        self.dir.join(format!("{job}.json"))
    }

    /// Writes (or rewrites) a job durably.
    pub fn put(&self, rec: &JobRecord) -> Result<()> {
        write_durable(
            &self.path(&rec.spec.job_id),
            &serde_json::to_vec(rec)?,
            true,
        )
    }

    pub fn get(&self, job: &JobId) -> Option<JobRecord> {
        let b = std::fs::read(self.path(job)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Every job held, oldest accepted first.
    pub fn all(&self) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name else { continue };
            if name == "finished.json" || name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<JobRecord>(&b).map_err(Into::into))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable job record set aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        out.sort_by_key(|r| r.accepted_ms);
        Ok(out)
    }

    pub fn known(&self, job: &JobId) -> Known {
        if let Some(r) = self.get(job) {
            return Known::Held(r.state);
        }
        let fin = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if fin.contains(job) {
            Known::Finished
        } else {
            Known::Unknown
        }
    }

    /// Forgets a job whose `done` is safely in the outbox.
    pub fn finish(&self, job: &JobId) -> Result<()> {
        {
            let mut fin = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            if !fin.contains(job) {
                fin.push_back(job.clone());
            }
            while fin.len() > FINISHED_KEPT {
                fin.pop_front();
            }
            write_durable(
                &self.dir.join("finished.json"),
                &serde_json::to_vec(&*fin)?,
                true,
            )?;
        }
        match std::fs::remove_file(self.path(job)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("removing a finished job"),
        }
        sync_dir(&self.dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_bus::msg::{JobParams, RepoAccess, Sealed};

    fn rec(id: &str, at: i64) -> JobRecord {
        JobRecord {
            spec: JobSpec {
                job_id: JobId::parse(id).unwrap(),
                params: JobParams::Prune {},
                repo: RepoAccess {
                    repo_id: "r1".into(),
                    secrets: Sealed("x".into()),
                    append_only: false,
                },
                timeout_secs: 60,
            },
            origin: JobOrigin::Dispatch,
            state: JobState::Accepted,
            accepted_ms: at,
            started_ms: None,
            not_before_ms: None,
        }
    }

    #[test]
    fn held_then_finished_across_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path().to_path_buf()).unwrap();
        j.put(&rec("b", 2)).unwrap();
        j.put(&rec("a", 1)).unwrap();
        let mut r = rec("b", 2);
        r.state = JobState::Running;
        j.put(&r).unwrap();
        let ids: Vec<String> = j
            .all()
            .unwrap()
            .iter()
            .map(|r| r.spec.job_id.to_string())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let b = JobId::parse("b").unwrap();
        assert_eq!(j.known(&b), Known::Held(JobState::Running));
        j.finish(&b).unwrap();
        let j = Journal::open(tmp.path().to_path_buf()).unwrap();
        assert_eq!(j.known(&b), Known::Finished);
        assert_eq!(j.known(&JobId::parse("zz").unwrap()), Known::Unknown);
        assert_eq!(j.all().unwrap().len(), 1);
    }

    #[test]
    fn corrupt_records_are_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path().to_path_buf()).unwrap();
        std::fs::write(tmp.path().join("x.json"), b"{oops").unwrap();
        j.put(&rec("a", 1)).unwrap();
        assert_eq!(j.all().unwrap().len(), 1);
        assert!(tmp.path().join("x.corrupt").exists());
    }
}
