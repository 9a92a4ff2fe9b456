//! Jobs: a row for lists (`/jobs`, host pages) and the whole job for its
//! page (`/jobs/<id>` and `GET /api/v1/jobs/<id>`): parameters, result
//! summary, the classified error with what to do about it, the stderr tail,
//! and the restic command line with secrets removed.

use std::collections::HashMap;

use rm_store::{jobs, repos};

use serde::Serialize;

/// Host and repository names by id, for labelling job rows.
#[derive(Debug, Default)]
pub struct Names {
    hosts: HashMap<String, String>,
    repos: HashMap<String, String>,
}

impl Names {
    /// The names the rows of `jobs` need (their hosts, every repository):
    /// never the whole fleet's.
    pub async fn for_jobs(
        conn: &mut rm_store::Conn,
        jobs: &[rm_store::jobs::Job],
    ) -> rm_store::Result<Self> {
        let mut ids: Vec<&str> = jobs
            .iter()
            .flat_map(|j| [j.host_id.as_str(), j.exec_host_id.as_str()])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let hosts = rm_store::hosts::names_of(&mut *conn, &ids).await?;
        let repos = repos::list(&mut *conn)
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        Ok(Self {
            hosts: hosts.into_iter().collect(),
            repos,
        })
    }

    pub fn host(&self, id: &str) -> String {
        self.hosts.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }

    pub fn repo(&self, id: &str) -> String {
        self.repos.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }
}

/// One job in a list.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub host_id: String,
    pub host_name: String,
    pub exec_host_id: String,
    pub exec_host_name: String,
    pub repo_id: Option<String>,
    pub repo_name: Option<String>,
    /// `operator`, `schedule` or `system`.
    pub origin: String,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

impl JobRow {
    pub fn new(j: &jobs::Job, names: &Names) -> Self {
        Self {
            id: j.id.clone(),
            kind: j.kind.clone(),
            status: j.status.clone(),
            host_id: j.host_id.clone(),
            host_name: names.host(&j.host_id),
            exec_host_id: j.exec_host_id.clone(),
            exec_host_name: names.host(&j.exec_host_id),
            repo_id: j.repo_id.clone(),
            repo_name: j.repo_id.as_deref().map(|r| names.repo(r)),
            origin: j.origin.clone(),
            created_by: j.created_by.clone(),
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            error_kind: j.error_kind.clone(),
            error: j.error.clone(),
        }
    }

    pub fn status_class(&self) -> &'static str {
        super::fleet::job_status_class(&self.status)
    }

    pub fn status_word(&self) -> &'static str {
        super::fleet::job_status_word(&self.status)
    }

    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "queued" | "dispatched" | "running")
    }

    /// Run time so far or in total, in words.
    pub fn duration(&self, now_ms: impl crate::ui::fmt::Int) -> String {
        let now_ms = now_ms.get();
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => crate::ui::fmt::duration_secs((f - s) / 1000),
            (Some(s), None) => crate::ui::fmt::duration_secs((now_ms - s) / 1000),
            _ => "—".into(),
        }
    }
}

/// A fact of a job's result, e.g. ("Files new", "1,204").
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    pub label: String,
    pub value: String,
}

/// The whole job.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub row: JobRow,
    pub params: serde_json::Value,
    /// Parameters in words, one per line.
    pub params_facts: Vec<Fact>,
    pub timeout_secs: i64,
    pub cancel_requested: bool,
    pub exit_code: Option<i64>,
    pub summary: Option<serde_json::Value>,
    /// The summary in words.
    pub summary_facts: Vec<Fact>,
    /// What to do about the error, by its kind.
    pub advice: Option<String>,
    pub stderr_tail: Option<String>,
    pub restic_version: Option<String>,
    /// The restic command line, secrets removed.
    pub command: Option<String>,
    pub log_lines: i64,
    pub log_truncated: bool,
    pub now: i64,
}

/// What an operator should do about an error of this kind.
pub fn advice(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "wrong_password" => {
            "The repository password is wrong: edit the repository's credentials, then run the job again."
        }
        "repo_missing" => {
            "No repository at that location: check the repository URL, or initialise it from the repository page."
        }
        "locked" => {
            "The repository is locked by another restic process: wait for it, or look at the repository's locks and unlock stale ones."
        }
        "partial" => {
            "Some files could not be read (permissions, files changing during the backup); the snapshot was made without them. The log lists them."
        }
        "network" => {
            "The repository could not be reached: check the network path and the storage server from this host."
        }
        "append_only" => {
            "This host's credential is append-only, which cannot delete data: run forget and prune on the repository's maintenance host."
        }
        "timeout" => {
            "The job ran past its time limit and was stopped: raise the timeout or narrow the job."
        }
        "cancelled" => "The job was cancelled.",
        "invalid_request" => "The job's parameters were refused: correct them and run it again.",
        "fatal" => "restic stopped with an error: the stderr tail below says why.",
        _ => return None,
    })
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn summary_facts(kind: &str, v: &serde_json::Value) -> Vec<Fact> {
    let mut out = Vec::new();
    let int = |k: &str| v.get(k).and_then(serde_json::Value::as_i64);
    let mut push = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push(Fact {
                label: label.into(),
                value,
            });
        }
    };
    if kind == "backup" {
        push(
            "Snapshot",
            v.get("snapshot_id")
                .and_then(|s| s.as_str())
                .map(|s| s.chars().take(8).collect()),
        );
        push("Files new", int("files_new").map(thousands));
        push("Files changed", int("files_changed").map(thousands));
        push("Files unmodified", int("files_unmodified").map(thousands));
        push("Data added", int("data_added").map(crate::ui::fmt::bytes));
        push(
            "Processed",
            int("total_bytes_processed").map(crate::ui::fmt::bytes),
        );
        push(
            "Files processed",
            int("total_files_processed").map(thousands),
        );
    } else if kind == "restore" {
        push("Files restored", int("files_restored").map(thousands));
        push(
            "Bytes restored",
            int("bytes_restored").map(crate::ui::fmt::bytes),
        );
        push("Files skipped", int("files_skipped").map(thousands));
    } else if kind == "stats" {
        push("Total size", int("total_size").map(crate::ui::fmt::bytes));
        push("Files", int("total_file_count").map(thousands));
        push("Blobs", int("total_blob_count").map(thousands));
        push("Snapshots", int("snapshots_count").map(thousands));
    }
    out
}

fn params_facts(v: &serde_json::Value) -> Vec<Fact> {
    let Some(obj) = v.as_object() else {
        return Vec::new();
    };
    obj.iter()
        .filter(|(k, _)| k.as_str() != "kind")
        .map(|(k, val)| Fact {
            label: {
                let l = k.replace('_', " ");
                let mut c = l.chars();
                c.next()
                    .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
            },
            value: match val {
                serde_json::Value::Null => "—".into(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) if a.is_empty() => "none".into(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            },
        })
        .collect()
}

/// The restic command line a job runs, as an operator would type it (secrets
/// removed: restic reads them from the environment and a password file;
/// credentials inside the repository URL appear as `***`). `None` for a job
/// without a repository or with parameters that make no command.
pub async fn command_line(
    conn: &mut rm_store::Conn,
    j: &jobs::Job,
) -> rm_store::Result<Option<String>> {
    let Some(repo_id) = j.repo_id.as_deref() else {
        return Ok(None);
    };
    let Ok(params) = j.params() else {
        return Ok(None);
    };
    let repo = match repos::get(&mut *conn, repo_id).await {
        Ok(r) => r,
        Err(rm_store::StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(rm_restic::display_command(&repo.url_display, &params).ok())
}

/// Loads one job; `NotFound` for an unknown id.
pub async fn load(conn: &mut rm_store::Conn, id: &str, now_ms: i64) -> rm_store::Result<JobView> {
    let j = jobs::get(&mut *conn, id).await?;
    let names = Names::for_jobs(&mut *conn, std::slice::from_ref(&j)).await?;
    let params: serde_json::Value =
        serde_json::from_str(&j.params_json).unwrap_or(serde_json::Value::Null);
    let summary: Option<serde_json::Value> = j
        .summary_json
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let command = command_line(&mut *conn, &j).await?;
    Ok(JobView {
        row: JobRow::new(&j, &names),
        params_facts: params_facts(&params),
        params,
        timeout_secs: j.timeout_secs,
        cancel_requested: j.cancel_requested,
        exit_code: j.exit_code,
        summary_facts: summary
            .as_ref()
            .map(|s| summary_facts(&j.kind, s))
            .unwrap_or_default(),
        summary,
        advice: j.error_kind.as_deref().and_then(advice).map(str::to_owned),
        stderr_tail: j.stderr_tail,
        restic_version: j.restic_version,
        command,
        log_lines: j.log_lines,
        log_truncated: j.log_truncated,
        now: now_ms,
    })
}

/// Jobs per page of the list.
pub const JOBS_PAGE: i64 = 50;

/// Query-string filters of `/jobs` and `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct JobFilter {
    pub host: String,
    pub kind: String,
    pub status: String,
    /// `1h`, `24h`, `7d` or `30d`.
    pub since: String,
    /// The cursor from a previous page's `next_cursor`.
    pub before: String,
}

pub const KINDS: [&str; 11] = [
    "backup",
    "restore",
    "forget",
    "prune",
    "check",
    "unlock",
    "snapshots",
    "stats",
    "diff",
    "ls",
    "locks",
];
pub const STATUSES: [&str; 8] = [
    "queued",
    "dispatched",
    "running",
    "succeeded",
    "warning",
    "failed",
    "cancelled",
    "lost",
];
pub const SINCES: [(&str, &str); 4] = [
    ("1h", "last hour"),
    ("24h", "last 24 h"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

impl JobFilter {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.kind.is_empty() && !KINDS.contains(&self.kind.as_str()) {
            return Err(("kind", format!("unknown job kind {:?}", self.kind)));
        }
        if !self.status.is_empty() && !STATUSES.contains(&self.status.as_str()) {
            return Err(("status", format!("unknown job state {:?}", self.status)));
        }
        if !self.since.is_empty() && self.since_ms().is_none() {
            return Err((
                "since",
                format!("unknown period {:?}: one of 1h, 24h, 7d, 30d", self.since),
            ));
        }
        if !self.before.is_empty() && self.cursor().is_none() {
            return Err((
                "before",
                "this page cursor is not valid; start from the newest jobs".into(),
            ));
        }
        Ok(())
    }

    fn since_ms(&self) -> Option<i64> {
        Some(match self.since.as_str() {
            "1h" => 3_600_000,
            "24h" => 86_400_000,
            "7d" => 7 * 86_400_000,
            "30d" => 30 * 86_400_000,
            _ => return None,
        })
    }

    fn cursor(&self) -> Option<(i64, String)> {
        let (at, id) = self.before.split_once(':')?;
        Some((at.parse().ok()?, id.to_owned()))
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
            && self.kind.is_empty()
            && self.status.is_empty()
            && self.since.is_empty()
    }

    pub fn is_first(&self) -> bool {
        self.before.is_empty()
    }

    /// The query string of this filter at cursor `before`.
    pub fn query(&self, before: Option<&str>) -> String {
        let enc = super::fleet::urlencode;
        let parts: Vec<String> = [
            ("host", self.host.as_str()),
            ("kind", &self.kind),
            ("status", &self.status),
            ("since", &self.since),
            ("before", before.unwrap_or("")),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// A page of jobs.
#[derive(Debug, Clone, Serialize)]
pub struct JobsPage {
    pub jobs: Vec<JobRow>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
    pub now: i64,
}

pub async fn list(
    conn: &mut rm_store::Conn,
    f: &JobFilter,
    now_ms: i64,
) -> rm_store::Result<JobsPage> {
    let cursor = f.cursor();
    let filter = rm_store::listing::JobFilter {
        host_id: non_empty(&f.host),
        kind: non_empty(&f.kind),
        status: non_empty(&f.status),
        repo_id: None,
        since: f.since_ms().map(|d| now_ms - d),
        before: cursor.as_ref().map(|(at, id)| (*at, id.as_str())),
    };
    let mut rows = rm_store::listing::jobs(&mut *conn, &filter, JOBS_PAGE + 1).await?;
    let more = i64::try_from(rows.len()).unwrap_or(0) > JOBS_PAGE;
    rows.truncate(usize::try_from(JOBS_PAGE).unwrap_or(50));
    let next_cursor = more
        .then(|| rows.last().map(|j| format!("{}:{}", j.created_at, j.id)))
        .flatten();
    let names = Names::for_jobs(&mut *conn, &rows).await?;
    Ok(JobsPage {
        jobs: rows.iter().map(|j| JobRow::new(j, &names)).collect(),
        next_cursor,
        now: now_ms,
    })
}

/// `None` for an empty query value.
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_summary_reads_as_facts() {
        let v = serde_json::json!({"files_new": 1204, "data_added": 1_503_238_553_i64, "snapshot_id": "abcdef0123"});
        let f = summary_facts("backup", &v);
        assert_eq!(f[0].value, "abcdef01");
        assert_eq!(f[1].value, "1,204");
        assert_eq!(f[2].value, "1.4 GiB");
    }

    #[test]
    fn every_error_kind_has_advice() {
        for k in [
            "wrong_password",
            "repo_missing",
            "locked",
            "partial",
            "network",
            "append_only",
            "timeout",
            "cancelled",
            "invalid_request",
            "fatal",
        ] {
            assert!(advice(k).is_some(), "{k}");
        }
        assert!(advice("something_new").is_none());
    }
}
