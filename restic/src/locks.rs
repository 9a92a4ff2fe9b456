//! Repository locks: the `locks` job (every lock and whether it is
//! stale, for repository health), and stale-lock removal before a run
//! where the caller knows one can be stale — a
//! lock left by a restic process of this host that no longer exists (e.g.
//! killed with SIGKILL) blocks exclusive operations; `restic unlock`
//! removes exactly such stale locks. Failures of the removal are logged and
//! ignored: the run itself reports a lock conflict if one remains.

use std::time::{Duration, Instant};

use rm_bus::msg::{ErrorKind, JobKind, JobOutcome};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::parse;
use crate::session::Session;
use crate::{Failure, RunResult};

/// Most locks inspected per run.
const MAX_LOCKS: usize = 32;

/// Whether a process with this pid exists on this host. Windows: always
/// "alive" (never removes a lock it cannot judge).
#[cfg(not(unix))]
pub(crate) fn pid_alive(_pid: i64) -> bool {
    true
}

/// Whether a process with this pid exists on this host.
#[cfg(unix)]
pub(crate) fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // Not a real pid: never treat it as dead (we would not know).
        return true;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Lists the repository's locks (at most [`MAX_LOCKS`]) with what each
/// says of itself (`cat lock`: time, exclusive, hostname, username, pid).
/// Bounded by `deadline`. A lock that vanished between the two calls is
/// left out.
async fn list(
    session: &Session<'_>,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<Vec<(String, Value)>, Failure> {
    let budget = |cap: Duration| cap.min(deadline.saturating_duration_since(Instant::now()));
    let listed = session
        .query(
            JobKind::Locks,
            vec!["list".into(), "locks".into(), "--no-lock".into()],
            budget(Duration::from_secs(30)),
            Some(cancel),
        )
        .await?;
    let ids: Vec<String> = listed
        .stdout
        .iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_hexdigit()))
        .take(MAX_LOCKS)
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if cancel.is_cancelled() || Instant::now() >= deadline {
            break;
        }
        let got = session
            .query(
                JobKind::Locks,
                vec!["cat".into(), "lock".into(), id.clone(), "--no-lock".into()],
                budget(Duration::from_secs(15)),
                Some(cancel),
            )
            .await;
        match got.map(|c| serde_json::from_str::<Value>(c.stdout_text().trim())) {
            Ok(Ok(v)) if v.is_object() => out.push((id, v)),
            Ok(_) => tracing::debug!(lock = %id, "unparseable lock"),
            // The lock may have vanished in between.
            Err(f) => tracing::debug!(lock = %id, error = %f.message, "reading lock failed"),
        }
    }
    Ok(out)
}

fn is_stale(lock: &Value, hostname: &str) -> bool {
    let info = parse::lock_info(&lock.to_string());
    !hostname.is_empty() && info.is_some_and(|l| l.hostname == hostname && !pid_alive(l.pid))
}

/// The `locks` job: every lock with a `stale` flag (this host's, its
/// process gone).
pub(crate) async fn report(
    session: &Session<'_>,
    hostname: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) -> RunResult {
    match list(session, deadline, cancel).await {
        Ok(locks) => {
            let summary: Vec<Value> = locks
                .into_iter()
                .map(|(id, v)| {
                    json!({
                        "id": id,
                        "time": v.get("time"),
                        "exclusive": v.get("exclusive").and_then(Value::as_bool).unwrap_or(false),
                        "hostname": v.get("hostname"),
                        "username": v.get("username"),
                        "pid": v.get("pid"),
                        "stale": is_stale(&v, hostname),
                    })
                })
                .collect();
            RunResult {
                outcome: JobOutcome::Succeeded,
                exit_code: Some(0),
                error_kind: None,
                error: None,
                summary: Some(Value::Array(summary)),
                stderr_tail: Vec::new(),
            }
        }
        Err(f) => RunResult {
            outcome: if f.kind == ErrorKind::Cancelled {
                JobOutcome::Cancelled
            } else {
                JobOutcome::Failed
            },
            exit_code: f.exit_code,
            error_kind: Some(f.kind),
            error: Some(f.message),
            summary: None,
            stderr_tail: Vec::new(),
        },
    }
}

/// Removes stale locks of `hostname` if there are any. Bounded by
/// `deadline`.
pub(crate) async fn remove_stale(
    session: &Session<'_>,
    hostname: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) {
    if hostname.is_empty() {
        return;
    }
    let locks = match list(session, deadline, cancel).await {
        Ok(l) => l,
        Err(f) => {
            tracing::debug!(kind = ?f.kind, error = %f.message, "listing locks failed; skipping stale-lock check");
            return;
        }
    };
    let stale = locks
        .iter()
        .filter(|(id, v)| {
            let s = is_stale(v, hostname);
            if s {
                tracing::info!(lock = %id, "found a stale lock of this host");
            }
            s
        })
        .count();
    if stale == 0 || cancel.is_cancelled() {
        return;
    }
    let budget = Duration::from_secs(60).min(deadline.saturating_duration_since(Instant::now()));
    match session
        .query(JobKind::Unlock, vec!["unlock".into()], budget, Some(cancel))
        .await
    {
        Ok(_) => tracing::info!(stale, "removed stale locks"),
        Err(f) => tracing::warn!(kind = ?f.kind, error = %f.message, "restic unlock failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_liveness() {
        assert!(pid_alive(i64::from(std::process::id())));
        assert!(pid_alive(0));
        assert!(!pid_alive(i64::from(i32::MAX)));
        assert!(!pid_alive(i64::MAX));
    }
}
