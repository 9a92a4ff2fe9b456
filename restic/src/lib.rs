//! restic-manager's restic runner.
//!
//! Builds restic command lines per job kind, runs restic with secrets in the
//! environment and a private password file, streams progress and log lines,
//! enforces timeouts and cancellation (killing the whole process tree),
//! parses restic's JSON tolerantly across 0.14–0.19 and classifies failures
//! into [`ErrorKind`]s.

use std::path::Path;
use std::time::Duration;

use rm_bus::msg::{ErrorKind, JobOutcome, JobParams, LogLine, LsEntry, Progress};
use rm_bus::seal::RepoSecrets;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

mod classify;
mod command;
#[cfg(test)]
mod fixture_tests;
mod locks;
mod parse;
mod plan;
mod process;
mod progress;
mod run;
mod session;
mod version;

use rm_bus::msg::JobKind;
use session::Session;

pub use version::{Restic, Version};

/// How to reach one repository for one run.
pub struct Repo<'a> {
    pub secrets: &'a RepoSecrets,
    /// restic cache directory (`--cache-dir`); `None` = restic's default.
    pub cache_dir: Option<&'a Path>,
    /// A private directory (0700) where the runner may write the 0600
    /// password file for the duration of the run; it deletes the file
    /// afterwards.
    pub scratch_dir: &'a Path,
}

/// Per-run knobs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub timeout: Duration,
    /// Minimum spacing between two Progress events (default 500 ms).
    pub progress_interval: Duration,
    /// This host's name as restic records it in locks (stale-lock removal).
    pub lock_hostname: String,
    /// Remove this host's stale locks before the run (`restic list locks`
    /// and `cat lock`, then `unlock` if one is stale): only where one can
    /// be (a restic of this host died or was killed there), since it opens
    /// the repository once more.
    pub remove_stale_locks: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(24 * 3600),
            progress_interval: Duration::from_millis(500),
            lock_hostname: String::new(),
            remove_stale_locks: false,
        }
    }
}

/// What a running job reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Progress(Progress),
    Log(LogLine),
}

/// The end of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub outcome: JobOutcome,
    pub exit_code: Option<i32>,
    pub error_kind: Option<ErrorKind>,
    /// One clear human sentence.
    pub error: Option<String>,
    pub summary: Option<serde_json::Value>,
    /// The last ~40 stderr lines.
    pub stderr_tail: Vec<String>,
}

/// A failed query or probe.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    pub exit_code: Option<i32>,
}

/// Runs one job to completion. Never panics, never hangs past
/// `opts.timeout` (then kills the whole process tree: outcome Failed,
/// [`ErrorKind::Timeout`]). When `cancel` fires, kills the process tree:
/// outcome Cancelled, [`ErrorKind::Cancelled`]. With `append_only`, forget
/// and prune are refused before restic runs ([`ErrorKind::AppendOnly`]);
/// [`JobParams::Unknown`] and invalid parameters are
/// [`ErrorKind::InvalidRequest`]. Events go to `events` (send errors are
/// ignored).
pub async fn run_job(
    restic: &Restic,
    repo: &Repo<'_>,
    params: &JobParams,
    append_only: bool,
    opts: &RunOptions,
    events: UnboundedSender<RunEvent>,
    cancel: CancellationToken,
) -> RunResult {
    run::run_job(restic, repo, params, append_only, opts, events, cancel).await
}

/// One directory level of a snapshot for the restore browser
/// (`restic ls --json SNAP DIR`): only the direct children of `dir`.
pub async fn ls(
    restic: &Restic,
    repo: &Repo<'_>,
    snapshot: &str,
    dir: &str,
    timeout: Duration,
) -> Result<Vec<LsEntry>, Failure> {
    if snapshot.trim().is_empty() || snapshot.contains('\0') || dir.contains('\0') {
        return Err(invalid("ls needs a snapshot id and a directory."));
    }
    let dir = parse::normalize_dir(dir);
    let session = Session::open(restic, repo)?;
    let args = vec![
        "ls".into(),
        "--json".into(),
        "--no-lock".into(),
        "--".into(),
        snapshot.to_owned(),
        dir.clone(),
    ];
    let out = session
        .query(JobKind::Snapshots, args, timeout, None)
        .await?;
    let mut saw_snapshot = false;
    let mut entries = Vec::new();
    for line in &out.stdout {
        let Some(v) = parse::json_line(line) else {
            continue;
        };
        if parse::message_type(&v) == Some("snapshot") {
            saw_snapshot = true;
        } else if let Some(e) = parse::ls_child(&v, &dir) {
            entries.push(e);
        }
    }
    if !saw_snapshot {
        // 0.14 exits 0 for an unknown snapshot id.
        return Err(Failure {
            kind: ErrorKind::InvalidRequest,
            message: format!(
                "Snapshot {snapshot:?} was not found in the repository.{}",
                classify::restic_said(None, &out.stderr)
                    .map(|s| format!(" restic said: {s}"))
                    .unwrap_or_default()
            ),
            exit_code: Some(0),
        });
    }
    Ok(entries)
}

/// `restic snapshots --json [--host H]`: the JSON array as restic printed it.
pub async fn snapshots(
    restic: &Restic,
    repo: &Repo<'_>,
    host_name: Option<&str>,
    timeout: Duration,
) -> Result<serde_json::Value, Failure> {
    let mut args: Vec<String> = vec!["snapshots".into(), "--json".into(), "--no-lock".into()];
    if let Some(h) = host_name {
        if h.trim().is_empty() {
            return Err(invalid("The host name must not be empty."));
        }
        args.push(format!("--host={h}"));
    }
    let session = Session::open(restic, repo)?;
    let out = session
        .query(JobKind::Snapshots, args, timeout, None)
        .await?;
    out.stdout
        .iter()
        .filter_map(|l| parse::json_line(l))
        .find(serde_json::Value::is_array)
        .or_else(|| {
            serde_json::from_str::<serde_json::Value>(out.stdout_text().trim())
                .ok()
                .filter(|v| v.is_array())
        })
        .ok_or_else(|| Failure {
            kind: ErrorKind::Fatal,
            message: "restic snapshots printed no JSON array.".into(),
            exit_code: Some(0),
        })
}

/// `restic init` (JSON on 0.15+, text on 0.14); returns restic's
/// repository id (from `cat config` if the init output does not carry it).
pub async fn init(restic: &Restic, repo: &Repo<'_>, timeout: Duration) -> Result<String, Failure> {
    let started = std::time::Instant::now();
    let session = Session::open(restic, repo)?;
    let out = session
        .query(
            JobKind::Unknown,
            vec!["init".into(), "--json".into()],
            timeout,
            None,
        )
        .await?;
    if let Some(id) = out
        .stdout
        .iter()
        .filter_map(|l| parse::json_line(l))
        .find_map(|v| parse::init_id(&v))
    {
        return Ok(id);
    }
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(5));
    config_id(&session, left).await
}

/// `restic cat config`: verifies reachability and password; returns the
/// repository id.
pub async fn verify(
    restic: &Restic,
    repo: &Repo<'_>,
    timeout: Duration,
) -> Result<String, Failure> {
    let session = Session::open(restic, repo)?;
    config_id(&session, timeout).await
}

async fn config_id(session: &Session<'_>, timeout: Duration) -> Result<String, Failure> {
    let args = vec!["cat".into(), "config".into(), "--no-lock".into()];
    let out = session.query(JobKind::Unknown, args, timeout, None).await?;
    parse::config_id(&out.stdout_text()).ok_or_else(|| Failure {
        kind: ErrorKind::Fatal,
        message: "restic cat config printed no repository id.".into(),
        exit_code: Some(0),
    })
}

fn invalid(message: &str) -> Failure {
    Failure {
        kind: ErrorKind::InvalidRequest,
        message: message.to_owned(),
        exit_code: None,
    }
}

/// The command line a job runs, as an operator would type it to reproduce
/// it by hand: `restic --repo=<url> <args>`, shell-quoted. Secrets are not
/// part of it (restic reads them from the environment and a password
/// file). Invalid parameters give the reason instead.
pub fn display_command(repo_url: &str, params: &JobParams) -> Result<String, String> {
    let args = command::job_args(params).map_err(|e| e.0)?;
    let mut words = vec![
        "restic".to_owned(),
        shell_quote(&format!("--repo={repo_url}")),
    ];
    words.extend(args.iter().map(|a| shell_quote(a)));
    Ok(words.join(" "))
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn display_command_quotes_words_and_carries_no_secret() {
        let params = JobParams::Backup {
            paths: vec!["/srv/my data".into()],
            excludes: vec!["*.tmp".into()],
            tags: vec![],
            one_file_system: false,
            host_name: Some("h-1".into()),
        };
        let line = display_command("rest:http://127.0.0.1:8000/r", &params).unwrap();
        assert_eq!(
            line,
            "restic --repo=rest:http://127.0.0.1:8000/r backup --json '--exclude=*.tmp' --host=h-1 -- '/srv/my data'"
        );
    }
}
