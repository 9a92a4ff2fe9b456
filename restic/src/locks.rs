//! Stale-lock removal before a run: a lock left by a restic process of
//! this host that no longer exists (e.g. killed with SIGKILL) blocks
//! exclusive operations; `restic unlock` removes exactly such stale locks.
//! Every failure here is logged and ignored: the run itself reports
//! a lock conflict if one remains.

use std::time::{Duration, Instant};

use rm_bus::msg::JobKind;
use tokio_util::sync::CancellationToken;

use crate::parse;
use crate::session::Session;

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

/// Removes stale locks of `hostname` if there are any. Bounded by
/// `deadline` (and at most `budget` per restic call).
pub(crate) async fn remove_stale(
    session: &Session<'_>,
    hostname: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) {
    if hostname.is_empty() {
        return;
    }
    let budget = |cap: Duration| cap.min(deadline.saturating_duration_since(Instant::now()));
    let listed = session
        .query(
            JobKind::Unlock,
            vec!["list".into(), "locks".into(), "--no-lock".into()],
            budget(Duration::from_secs(30)),
            Some(cancel),
        )
        .await;
    let ids: Vec<String> = match listed {
        Ok(c) => c
            .stdout
            .iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_hexdigit()))
            .take(MAX_LOCKS)
            .collect(),
        Err(f) => {
            tracing::debug!(kind = ?f.kind, error = %f.message, "listing locks failed; skipping stale-lock check");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    let mut stale = 0usize;
    for id in &ids {
        if cancel.is_cancelled() || Instant::now() >= deadline {
            return;
        }
        let got = session
            .query(
                JobKind::Unlock,
                vec!["cat".into(), "lock".into(), id.clone(), "--no-lock".into()],
                budget(Duration::from_secs(15)),
                Some(cancel),
            )
            .await;
        match got.map(|c| parse::lock_info(&c.stdout_text())) {
            Ok(Some(lock)) => {
                if lock.hostname == hostname && !pid_alive(lock.pid) {
                    tracing::info!(lock = %id, pid = lock.pid, "found a stale lock of this host");
                    stale += 1;
                }
            }
            Ok(None) => tracing::debug!(lock = %id, "unparseable lock"),
            // The lock may have vanished in between.
            Err(f) => tracing::debug!(lock = %id, error = %f.message, "reading lock failed"),
        }
    }
    if stale == 0 {
        return;
    }
    match session
        .query(
            JobKind::Unlock,
            vec!["unlock".into()],
            budget(Duration::from_secs(60)),
            Some(cancel),
        )
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
