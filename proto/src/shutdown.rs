//! Stopping a process on SIGTERM or Ctrl-C (SIGINT), for every binary.
//!
//! The handlers are installed when [`signal`] is called, not when its
//! future is first polled: a role that is still starting when the service
//! manager stops it must still stop cleanly instead of dying to the
//! signal's default action.

use std::future::Future;

/// Resolves on SIGTERM or SIGINT (Ctrl-C on Windows). Call it inside the
/// tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let installed = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match installed {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                tracing::warn!(error = %e, "cannot watch one of SIGTERM/SIGINT");
                one.recv().await;
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot watch SIGTERM or SIGINT; stop this process with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
