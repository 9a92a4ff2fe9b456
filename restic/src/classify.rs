//! Classification of a finished restic run: exit code (0.17+ codes 10/11/12,
//! 0.19's 130) and, where the code is the generic 1 (always on 0.14),
//! restic's stderr text, into an outcome, an [`ErrorKind`] and one clear
//! sentence followed by restic's own last fatal line.

use rm_bus::msg::{ErrorKind, JobKind, JobOutcome};

/// The verdict on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub outcome: JobOutcome,
    pub kind: Option<ErrorKind>,
    pub message: Option<String>,
}

impl Verdict {
    pub(crate) fn ok() -> Self {
        Verdict {
            outcome: JobOutcome::Succeeded,
            kind: None,
            message: None,
        }
    }
    pub(crate) fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        Verdict {
            outcome: JobOutcome::Failed,
            kind: Some(kind),
            message: Some(message.into()),
        }
    }
}

/// Whether a stderr line reports HTTP 403 from the backend (an append-only
/// REST server refusing a delete). 0.14: `... server response: 403
/// Forbidden (403)`; later: `unexpected HTTP response (403): 403 Forbidden`.
pub(crate) fn is_forbidden(line: &str) -> bool {
    line.contains("unexpected HTTP response (403)")
        || line.contains("403 Forbidden")
        || line.contains("(403)")
}

fn contains_any(hay: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| hay.contains(n))
}

fn is_server_error(text: &str) -> bool {
    // `unexpected HTTP response (5xx)`
    let key = "unexpected HTTP response (5";
    text.contains(key)
}

/// The base sentence when nothing more specific is known.
const GENERIC: &str = "restic failed.";

/// Classifies stderr text alone (exit code 1, or to refine another code).
pub(crate) fn from_text(job: JobKind, text: &str) -> (ErrorKind, &'static str) {
    let lower = text.to_ascii_lowercase();
    if lower.contains("wrong password or no key found") {
        return (
            ErrorKind::WrongPassword,
            "restic could not open the repository: wrong password or no matching key.",
        );
    }
    if contains_any(
        text,
        &["repository is already locked", "unable to create lock"],
    ) {
        return (
            ErrorKind::Locked,
            "The repository is locked by another restic process.",
        );
    }
    if text.lines().any(is_forbidden) {
        if matches!(job, JobKind::Forget | JobKind::Prune) {
            return (
                ErrorKind::AppendOnly,
                "The repository server refused to delete data (HTTP 403): this credential is append-only, so forget/prune must run on the repository's maintenance host.",
            );
        }
        return (
            ErrorKind::Fatal,
            "The repository server refused the operation (HTTP 403).",
        );
    }
    if text.contains("unexpected HTTP response (401)") {
        return (
            ErrorKind::Fatal,
            "The repository server refused the credentials (HTTP 401).",
        );
    }
    if is_server_error(text)
        || contains_any(
            &lower,
            &[
                "connection refused",
                "no such host",
                "dial tcp",
                "timeout",
                "network is unreachable",
                "connection reset",
            ],
        )
    {
        return (
            ErrorKind::Network,
            "restic could not reach the repository (network error).",
        );
    }
    if contains_any(
        text,
        &[
            "unable to open config file",
            "Is there a repository at the following location?",
            "repository does not exist",
        ],
    ) {
        return (
            ErrorKind::RepoMissing,
            "There is no restic repository at the configured location.",
        );
    }
    (ErrorKind::Fatal, GENERIC)
}

/// restic's own last fatal line: the `exit_error` message (first line), or
/// the last stderr line starting with `Fatal:`, or the last stderr line.
pub(crate) fn restic_said(exit_error: Option<&str>, stderr: &[String]) -> Option<String> {
    if let Some(m) = exit_error.and_then(|m| m.lines().find(|l| !l.trim().is_empty())) {
        return Some(m.trim().to_owned());
    }
    if let Some(l) = stderr
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with("Fatal:"))
    {
        return Some(l.trim().to_owned());
    }
    // 0.14 prints some fatal errors without the prefix, followed by hints
    // (`unable to create lock ...` then `the unlock command can be used`).
    let errorish = |l: &&String| {
        let l = l.to_ascii_lowercase();
        ["unable to", "error", "failed", "refused"]
            .iter()
            .any(|k| l.contains(k))
    };
    if let Some(l) = stderr.iter().rev().find(errorish) {
        return Some(l.trim().to_owned());
    }
    stderr
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

fn sentence(base: &str, said: Option<&str>) -> String {
    match said {
        Some(s) if !s.is_empty() => {
            crate::parse::truncate(format!("{base} restic said: {s}"), 1000)
        }
        _ => base.to_owned(),
    }
}

/// Input for [`classify`].
pub(crate) struct Finished<'a> {
    pub job: JobKind,
    pub code: i32,
    /// All stderr lines we kept (rendered to text).
    pub stderr: &'a [String],
    /// 0.18+ `exit_error` message.
    pub exit_error: Option<&'a str>,
    /// Whether we cancelled the run ourselves (relevant for 130).
    pub cancelled: bool,
}

/// Classifies a run that exited with a code.
pub(crate) fn classify(f: &Finished<'_>) -> Verdict {
    let said = restic_said(f.exit_error, f.stderr);
    let said = said.as_deref();
    let text = {
        let mut t = f.stderr.join("\n");
        if let Some(m) = f.exit_error {
            t.push('\n');
            t.push_str(m);
        }
        t
    };
    match f.code {
        0 => {
            // 0.18's forget reports a refused delete on stderr and exits 0.
            if matches!(f.job, JobKind::Forget | JobKind::Prune)
                && f.stderr.iter().any(|l| is_forbidden(l))
            {
                let (kind, base) = from_text(f.job, &text);
                return Verdict::failed(kind, sentence(base, said));
            }
            Verdict::ok()
        }
        3 if f.job == JobKind::Backup => Verdict {
            outcome: JobOutcome::Warning,
            kind: Some(ErrorKind::Partial),
            message: Some(sentence(
                "The backup finished and a snapshot was recorded, but some source files could not be read, so the snapshot is incomplete.",
                f.stderr
                    .iter()
                    .find(|l| l.starts_with("error"))
                    .map(String::as_str)
                    .or(said),
            )),
        },
        10 => Verdict::failed(
            ErrorKind::RepoMissing,
            sentence(
                "There is no restic repository at the configured location.",
                said,
            ),
        ),
        11 => Verdict::failed(
            ErrorKind::Locked,
            sentence("The repository is locked by another restic process.", said),
        ),
        12 => Verdict::failed(
            ErrorKind::WrongPassword,
            sentence(
                "restic could not open the repository: wrong password or no matching key.",
                said,
            ),
        ),
        130 if f.cancelled => Verdict {
            outcome: JobOutcome::Cancelled,
            kind: Some(ErrorKind::Cancelled),
            message: Some("The job was cancelled.".to_owned()),
        },
        130 => Verdict::failed(
            ErrorKind::Fatal,
            sentence("restic was interrupted (exit code 130).", said),
        ),
        code => {
            let (kind, base) = from_text(f.job, &text);
            let base = if base == GENERIC {
                format!("restic failed (exit code {code}).")
            } else {
                base.to_owned()
            };
            Verdict::failed(kind, sentence(&base, said))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: JobKind, code: i32, stderr: &[&str], exit_error: Option<&str>) -> Verdict {
        let stderr: Vec<String> = stderr.iter().map(|s| s.to_string()).collect();
        classify(&Finished {
            job,
            code,
            stderr: &stderr,
            exit_error,
            cancelled: false,
        })
    }

    #[test]
    fn success_and_partial() {
        assert_eq!(run(JobKind::Backup, 0, &[], None), Verdict::ok());
        let v = run(
            JobKind::Backup,
            3,
            &[
                "error during archival on /proc/self/mem: read /proc/self/mem: errno 5",
                "Warning: at least one source file could not be read",
            ],
            None,
        );
        assert_eq!(v.outcome, JobOutcome::Warning);
        assert_eq!(v.kind, Some(ErrorKind::Partial));
        let m = v.message.unwrap();
        assert!(
            m.contains("incomplete") && m.contains("/proc/self/mem"),
            "{m}"
        );
        // exit 3 is not a warning for other kinds (0.19 failed forget)
        assert_eq!(
            run(JobKind::Forget, 3, &["Fatal: x"], None).outcome,
            JobOutcome::Failed
        );
    }

    #[test]
    fn v014_texts() {
        let k = |job, s: &str| run(job, 1, &[s], None).kind.unwrap();
        assert_eq!(
            k(JobKind::Backup, "Fatal: wrong password or no key found"),
            ErrorKind::WrongPassword
        );
        assert_eq!(
            k(
                JobKind::Backup,
                "Fatal: unable to open config file: stat /r/config: no such file or directory"
            ),
            ErrorKind::RepoMissing
        );
        assert_eq!(
            k(
                JobKind::Check,
                "Is there a repository at the following location?"
            ),
            ErrorKind::RepoMissing
        );
        assert_eq!(
            k(
                JobKind::Prune,
                "unable to create lock in backend: repository is already locked exclusively by PID 1 on vm"
            ),
            ErrorKind::Locked
        );
        assert_eq!(
            k(
                JobKind::Forget,
                "Remove(<snapshot/7612e47050>) returned error, retrying after 552ms: blob not removed, server response: 403 Forbidden (403)"
            ),
            ErrorKind::AppendOnly
        );
        assert_eq!(
            k(
                JobKind::Prune,
                "unexpected HTTP response (403): 403 Forbidden"
            ),
            ErrorKind::AppendOnly
        );
        assert_eq!(
            k(
                JobKind::Backup,
                "unexpected HTTP response (403): 403 Forbidden"
            ),
            ErrorKind::Fatal
        );
        let v = run(
            JobKind::Backup,
            1,
            &[
                "Fatal: unable to open config file: unexpected HTTP response (401): 401 Unauthorized",
            ],
            None,
        );
        // a 401 while opening the config is not a missing repository
        assert_eq!(v.kind, Some(ErrorKind::Fatal));
        let v = run(
            JobKind::Backup,
            1,
            &[
                "Fatal: create repository at rest:http://x failed: unexpected HTTP response (401): 401 Unauthorized",
            ],
            None,
        );
        assert_eq!(v.kind, Some(ErrorKind::Fatal));
        assert!(
            v.message
                .unwrap()
                .contains("refused the credentials (HTTP 401)")
        );
        for s in [
            "Fatal: dial tcp 127.0.0.1:1: connect: connection refused",
            "Fatal: lookup nope: no such host",
            "unexpected HTTP response (502): 502 Bad Gateway",
            "net/http: TLS handshake timeout",
            "Fatal: unable to open config file: client.Head: Head \"http://127.0.0.1:1/x/config\": dial tcp 127.0.0.1:1: connect: connection refused",
        ] {
            assert_eq!(k(JobKind::Backup, s), ErrorKind::Network, "{s}");
        }
        let v = run(
            JobKind::Backup,
            1,
            &["something odd", "Fatal: odd failure"],
            None,
        );
        assert_eq!(v.kind, Some(ErrorKind::Fatal));
        assert_eq!(
            v.message.as_deref(),
            Some("restic failed (exit code 1). restic said: Fatal: odd failure")
        );
    }

    #[test]
    fn exit_codes() {
        let ee = "Fatal: wrong password or no key found";
        let v = run(JobKind::Snapshots, 12, &[ee], Some(ee));
        assert_eq!(v.kind, Some(ErrorKind::WrongPassword));
        assert!(
            v.message
                .unwrap()
                .ends_with("restic said: Fatal: wrong password or no key found")
        );
        let missing = "Fatal: repository does not exist: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r";
        let v = run(JobKind::Backup, 10, &[], Some(missing));
        assert_eq!(v.kind, Some(ErrorKind::RepoMissing));
        assert!(!v.message.unwrap().contains('\n'));
        assert_eq!(
            run(JobKind::Prune, 11, &[], None).kind,
            Some(ErrorKind::Locked)
        );
        assert_eq!(
            run(JobKind::Backup, 130, &[], None).kind,
            Some(ErrorKind::Fatal)
        );
        let stderr: Vec<String> = vec![];
        let v = classify(&Finished {
            job: JobKind::Backup,
            code: 130,
            stderr: &stderr,
            exit_error: None,
            cancelled: true,
        });
        assert_eq!(v.outcome, JobOutcome::Cancelled);
        let v = run(JobKind::Backup, 42, &[], None);
        assert_eq!(
            (v.outcome, v.kind),
            (JobOutcome::Failed, Some(ErrorKind::Fatal))
        );
        assert!(v.message.unwrap().contains("exit code 42"));
    }

    #[test]
    fn forbidden_forget_exiting_zero_is_append_only() {
        let v = run(
            JobKind::Forget,
            0,
            &[
                "Remove(<snapshot/ac2c20777c>) failed: unexpected HTTP response (403): 403 Forbidden",
                "unable to remove snapshot/ac2c from the repository",
            ],
            None,
        );
        assert_eq!(
            (v.outcome, v.kind),
            (JobOutcome::Failed, Some(ErrorKind::AppendOnly))
        );
        assert!(v.message.unwrap().contains("maintenance host"));
    }

    #[test]
    fn restic_said_prefers_exit_error_then_fatal() {
        let s = vec!["Fatal: a".to_owned(), "trailing".to_owned()];
        assert_eq!(
            restic_said(Some("first\nsecond"), &s).as_deref(),
            Some("first")
        );
        assert_eq!(restic_said(None, &s).as_deref(), Some("Fatal: a"));
        assert_eq!(restic_said(None, &["x".to_owned()]).as_deref(), Some("x"));
        assert_eq!(restic_said(None, &[]), None);
    }
}
