//! Jobs: a row for lists (`/jobs`, host pages, `GET /api/v1/jobs`) and
//! the whole job for its page (`/jobs/<id>` and `GET /api/v1/jobs/<id>`):
//! parameters, result summary and table, the classified error with what to
//! do about it, the stderr tail, and the restic command line with secrets
//! removed. The pages and their JSON twins use these types and functions
//! only.

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
        let mut repo_ids: Vec<&str> = jobs.iter().filter_map(|j| j.repo_id.as_deref()).collect();
        repo_ids.sort_unstable();
        repo_ids.dedup();
        let repos = repos::names_of(&mut *conn, &repo_ids)
            .await?
            .into_iter()
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    pub schedule_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub dispatched_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
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
            schedule_id: j.schedule_id.clone(),
            created_by: j.created_by.clone(),
            created_at: j.created_at,
            dispatched_at: j.dispatched_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            exit_code: j.exit_code,
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Fact {
    pub label: String,
    pub value: String,
}

/// The whole job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub row: JobRow,
    /// The job's parameters (`{"kind": ..., ...}`).
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Parameters in words, one per line.
    pub params_facts: Vec<Fact>,
    pub timeout_secs: i64,
    pub cancel_requested: bool,
    /// What restic reported (kind-specific JSON).
    #[schema(value_type = Option<Object>)]
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
    /// The result as a table (snapshots, diff), one page of it.
    pub result: Option<ResultView>,
    pub now: i64,
}

/// Rows of a result table per page.
pub const RESULT_PAGE: usize = 100;

/// One snapshot of a `snapshots` result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotResult {
    pub time: Option<i64>,
    pub id: String,
    pub short_id: String,
    pub hostname: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Bytes the backup that made it processed, when restic recorded it.
    pub size: Option<i64>,
}

/// One changed path of a `diff` result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Change {
    pub path: String,
    /// restic's modifier (`+`, `-`, `M`, `T`, `U`, `?`).
    pub modifier: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// What changed, in words.
    pub what: &'static str,
}

/// Totals of a `diff`: files, directories and bytes added and removed.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DiffTotals {
    pub added_files: i64,
    pub added_dirs: i64,
    pub added_bytes: i64,
    pub removed_files: i64,
    pub removed_dirs: i64,
    pub removed_bytes: i64,
    pub changed_files: i64,
    /// Changed paths of each kind (`added`, `removed`, `changed`).
    pub counts: Vec<ChangeCount>,
}

/// How many changed paths of one kind a diff kept.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ChangeCount {
    pub change: String,
    pub count: usize,
}

/// Which rows of a result table to show: `?page=` (1-based) and, for a
/// diff, `?change=added|removed|changed`.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default)]
pub struct ResultQuery {
    pub page: usize,
    pub change: String,
}

impl ResultQuery {
    /// The query string for page `page` of this filter.
    pub fn for_page(&self, page: usize) -> String {
        let page = if page > 1 {
            page.to_string()
        } else {
            String::new()
        };
        crate::pages::query_string(&[("change", &self.change), ("page", &page)])
    }
}

/// A job's result as a table, one page of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResultView {
    /// `snapshots` or `diff`.
    pub table: &'static str,
    pub snapshots: Vec<SnapshotResult>,
    pub changes: Vec<Change>,
    pub diff: Option<DiffTotals>,
    /// Rows of the whole table (after the `change` filter).
    pub rows: usize,
    pub page: usize,
    pub pages: usize,
    /// Rows restic printed that the result did not keep (a very long diff).
    pub dropped: i64,
    pub query: ResultQuery,
}

fn change_of(modifier: &str) -> (&'static str, &'static str) {
    match modifier {
        "+" => ("added", "added"),
        "-" => ("removed", "removed"),
        "M" => ("changed", "content changed"),
        "T" => ("changed", "type changed"),
        "U" => ("changed", "metadata changed"),
        _ => ("changed", "changed"),
    }
}

fn page_of<T: Clone>(rows: &[T], page: usize) -> (Vec<T>, usize, usize) {
    let pages = rows.len().div_ceil(RESULT_PAGE).max(1);
    let page = page.clamp(1, pages);
    let shown = rows
        .iter()
        .skip((page - 1) * RESULT_PAGE)
        .take(RESULT_PAGE)
        .cloned()
        .collect();
    (shown, page, pages)
}

/// The result table of a `snapshots` or `diff` job (`None` for others).
pub fn result_view(kind: &str, summary: &serde_json::Value, q: &ResultQuery) -> Option<ResultView> {
    use serde_json::Value;
    let int = |v: &Value, a: &str, b: &str| {
        v.get(a)
            .and_then(|x| x.get(b))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    match kind {
        "snapshots" => {
            let mut all: Vec<SnapshotResult> = summary
                .as_array()?
                .iter()
                .filter_map(|s| {
                    let id = s.get("id")?.as_str()?.to_owned();
                    let strings = |k: &str| -> Vec<String> {
                        s.get(k)
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    Some(SnapshotResult {
                        time: s
                            .get("time")
                            .and_then(Value::as_str)
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .map(jiff::Timestamp::as_millisecond),
                        short_id: s
                            .get("short_id")
                            .and_then(Value::as_str)
                            .map_or_else(|| id.chars().take(8).collect(), str::to_owned),
                        id,
                        hostname: s
                            .get("hostname")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        paths: strings("paths"),
                        tags: strings("tags"),
                        size: s
                            .get("summary")
                            .and_then(|x| x.get("total_bytes_processed"))
                            .and_then(Value::as_i64),
                    })
                })
                .collect();
            all.sort_by_key(|s| std::cmp::Reverse(s.time));
            let (snapshots, page, pages) = page_of(&all, q.page);
            Some(ResultView {
                table: "snapshots",
                snapshots,
                changes: Vec::new(),
                diff: None,
                rows: all.len(),
                page,
                pages,
                dropped: 0,
                query: q.clone(),
            })
        }
        "diff" => {
            let all: Vec<Change> = summary
                .get("changes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| {
                            let modifier = c.get("modifier")?.as_str()?.to_owned();
                            let (change, what) = change_of(&modifier);
                            Some(Change {
                                path: c.get("path")?.as_str()?.to_owned(),
                                modifier,
                                change,
                                what,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let count = |k: &str| all.iter().filter(|c| c.change == k).count();
            let totals = DiffTotals {
                added_files: int(summary, "added", "files"),
                added_dirs: int(summary, "added", "dirs"),
                added_bytes: int(summary, "added", "bytes"),
                removed_files: int(summary, "removed", "files"),
                removed_dirs: int(summary, "removed", "dirs"),
                removed_bytes: int(summary, "removed", "bytes"),
                changed_files: summary
                    .get("changed_files")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                counts: ["added", "removed", "changed"]
                    .into_iter()
                    .map(|c| ChangeCount {
                        change: c.into(),
                        count: count(c),
                    })
                    .collect(),
            };
            let kept = i64::try_from(all.len()).unwrap_or(i64::MAX);
            let printed = summary
                .get("changes_total")
                .and_then(Value::as_i64)
                .unwrap_or(kept);
            let filtered: Vec<Change> = all
                .into_iter()
                .filter(|c| q.change.is_empty() || c.change == q.change)
                .collect();
            let (changes, page, pages) = page_of(&filtered, q.page);
            Some(ResultView {
                table: "diff",
                snapshots: Vec::new(),
                changes,
                diff: Some(totals),
                rows: filtered.len(),
                page,
                pages,
                dropped: (printed - kept).max(0),
                query: q.clone(),
            })
        }
        _ => None,
    }
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
    } else if kind == "forget_preview" {
        let plan: Option<rm_bus::msg::RetentionPlan> = serde_json::from_value(v.clone()).ok();
        if let Some(plan) = plan {
            push("Snapshots kept", Some(thousands(plan.kept() as i64)));
            push("Snapshots removed", Some(thousands(plan.removed() as i64)));
        }
    } else if kind == "stats" {
        let raw = v.get("total_uncompressed_size").is_some() || v.get("total_blob_count").is_some();
        push(
            if raw { "Stored" } else { "Restore size" },
            int("total_size").map(crate::ui::fmt::bytes),
        );
        push(
            "Uncompressed",
            int("total_uncompressed_size").map(crate::ui::fmt::bytes),
        );
        push(
            "Compression",
            v.get("compression_ratio")
                .and_then(serde_json::Value::as_f64)
                .map(|r| format!("{r:.2}×")),
        );
        push(
            "Space saved by compression",
            v.get("compression_space_saving")
                .and_then(serde_json::Value::as_f64)
                .map(|p| format!("{p:.1} %")),
        );
        // raw-data mode counts blobs, not files (restic reports 0 files)
        if !raw {
            push("Files", int("total_file_count").map(thousands));
        }
        push("Blobs", int("total_blob_count").map(thousands));
        push("Snapshots", int("snapshots_count").map(thousands));
    } else if kind == "diff" {
        let part = |k: &str| {
            let g = |f: &str| {
                v.get(k)
                    .and_then(|x| x.get(f))
                    .and_then(serde_json::Value::as_i64)
            };
            g("files").map(|files| {
                format!(
                    "{} files, {} directories, {}",
                    thousands(files),
                    thousands(g("dirs").unwrap_or(0)),
                    crate::ui::fmt::bytes(g("bytes").unwrap_or(0))
                )
            })
        };
        push("Added", part("added"));
        push("Removed", part("removed"));
        push("Changed files", int("changed_files").map(thousands));
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

/// Loads one job with the first page of its result table; `NotFound`
/// for an unknown id.
pub async fn load(conn: &mut rm_store::Conn, id: &str, now_ms: i64) -> rm_store::Result<JobView> {
    load_page(conn, id, now_ms, &ResultQuery::default()).await
}

/// Loads one job with page `q` of its result table.
pub async fn load_page(
    conn: &mut rm_store::Conn,
    id: &str,
    now_ms: i64,
    q: &ResultQuery,
) -> rm_store::Result<JobView> {
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
        summary_facts: summary
            .as_ref()
            .map(|s| summary_facts(&j.kind, s))
            .unwrap_or_default(),
        result: summary.as_ref().and_then(|s| result_view(&j.kind, s, q)),
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

pub const KINDS: [&str; 12] = [
    "backup",
    "restore",
    "forget",
    "forget_preview",
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
        crate::pages::query_string(&[
            ("host", &self.host),
            ("kind", &self.kind),
            ("status", &self.status),
            ("since", &self.since),
            ("before", before.unwrap_or("")),
        ])
    }
}

/// A page of jobs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    fn a_snapshots_result_is_a_table_newest_first_in_pages() {
        let snaps: Vec<serde_json::Value> = (0..250)
            .map(|i| {
                serde_json::json!({"time": format!("2026-11-{:02}T10:00:00Z", 1 + i % 28), "id": format!("{i:064}"),
                    "hostname": "web-1", "paths": ["/srv"], "tags": ["daily"], "summary": {"total_bytes_processed": 2048}})
            })
            .collect();
        let v = serde_json::Value::Array(snaps);
        let r = result_view("snapshots", &v, &ResultQuery::default()).unwrap();
        assert_eq!(
            (r.rows, r.page, r.pages, r.snapshots.len()),
            (250, 1, 3, 100)
        );
        assert!(r.snapshots[0].time >= r.snapshots[99].time, "newest first");
        assert_eq!(r.snapshots[0].size, Some(2048));
        assert_eq!(r.snapshots[0].tags, vec!["daily"]);
        let last = result_view(
            "snapshots",
            &v,
            &ResultQuery {
                page: 9,
                change: String::new(),
            },
        )
        .unwrap();
        assert_eq!(
            (last.page, last.snapshots.len()),
            (3, 50),
            "a page past the end shows the last"
        );
        assert!(
            summary_facts("snapshots", &v).is_empty(),
            "the table says it all"
        );
    }

    #[test]
    fn a_diff_result_lists_added_removed_and_changed_paths_with_totals() {
        let v = serde_json::json!({"changed_files": 1,
            "added": {"files": 2, "dirs": 1, "bytes": 3_145_728}, "removed": {"files": 1, "dirs": 0, "bytes": 1024},
            "changes": [{"path": "/srv/new/", "modifier": "+"}, {"path": "/srv/new/a", "modifier": "+"},
                        {"path": "/srv/old", "modifier": "-"}, {"path": "/srv/conf", "modifier": "M"}],
            "changes_total": 6});
        let r = result_view("diff", &v, &ResultQuery::default()).unwrap();
        let t = r.diff.as_ref().unwrap();
        assert_eq!(
            (t.added_bytes, t.removed_files, t.changed_files),
            (3_145_728, 1, 1)
        );
        assert_eq!(
            (t.counts[0].change.as_str(), t.counts[0].count),
            ("added", 2)
        );
        assert_eq!((r.rows, r.dropped), (4, 2));
        assert_eq!(r.changes[3].what, "content changed");
        let removed = result_view(
            "diff",
            &v,
            &ResultQuery {
                page: 1,
                change: "removed".into(),
            },
        )
        .unwrap();
        assert_eq!(removed.changes.len(), 1);
        assert_eq!(removed.changes[0].path, "/srv/old");
        let facts = summary_facts("diff", &v);
        assert_eq!(facts[0].value, "2 files, 1 directories, 3.0 MiB");
    }

    #[test]
    fn stats_read_as_figures_with_units() {
        let raw = serde_json::json!({"total_size": 1_503_238_553_i64, "total_uncompressed_size": 3_006_477_106_i64,
            "compression_ratio": 2.0, "compression_space_saving": 50.0, "total_blob_count": 1204, "snapshots_count": 3});
        let f: Vec<(String, String)> = summary_facts("stats", &raw)
            .into_iter()
            .map(|f| (f.label, f.value))
            .collect();
        assert_eq!(f[0], ("Stored".into(), "1.4 GiB".into()));
        assert_eq!(f[1], ("Uncompressed".into(), "2.8 GiB".into()));
        assert_eq!(f[2], ("Compression".into(), "2.00×".into()));
        assert_eq!(f[3], ("Space saved by compression".into(), "50.0 %".into()));
        assert!(f.contains(&("Blobs".into(), "1,204".into())));
        let restore = serde_json::json!({"total_size": 4096, "total_file_count": 12});
        assert_eq!(summary_facts("stats", &restore)[0].label, "Restore size");
        assert!(
            !f.iter().any(|(l, _)| l == "Files"),
            "raw data has no file count"
        );
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
