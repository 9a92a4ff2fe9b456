//! `GET /download/agent/{file}`: the agent binaries the web service hands
//! to endpoints (the install scripts in `deploy/` fetch them), and
//! `{file}.sha256` with each one's SHA-256 in `sha256sum` format. Files
//! are named `restic-manager-agent-<os>-<arch>` (`.exe` on Windows) and
//! come from one directory: `--agent-dir`, else
//! `/usr/lib/restic-manager/agents` when it exists, else the running
//! binary's own directory, where a plain `restic-manager-agent` stands for
//! this machine's platform. Public: a binary is no secret, and the script
//! fetching it holds no account; the script pins the web certificate and
//! checks the hash before running anything.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// The packaged location of the agent binaries.
pub const PACKAGED_DIR: &str = "/usr/lib/restic-manager/agents";
const PREFIX: &str = "restic-manager-agent-";

/// Where the agent binaries are.
#[derive(Debug, Default)]
pub struct Downloads {
    dir: RwLock<Option<PathBuf>>,
}

impl Downloads {
    /// Serve from `dir` (`None`: the defaults above).
    pub fn set_dir(&self, dir: Option<PathBuf>) {
        if let Ok(mut d) = self.dir.write() {
            *d = dir;
        }
    }

    fn dir(&self) -> Option<PathBuf> {
        if let Some(d) = self.dir.read().ok().and_then(|d| d.clone()) {
            return Some(d);
        }
        let packaged = Path::new(PACKAGED_DIR);
        if packaged.is_dir() {
            return Some(packaged.to_path_buf());
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
    }

    /// The file for a download name, if it exists.
    fn find(&self, name: &str) -> Option<PathBuf> {
        let dir = self.dir()?;
        let path = dir.join(name);
        if path.is_file() {
            return Some(path);
        }
        // the plain build output stands for this machine's platform
        (name == native_name())
            .then(|| dir.join("restic-manager-agent"))
            .filter(|p| p.is_file())
    }
}

/// This machine's download name.
pub fn native_name() -> String {
    let ext = if cfg!(windows) { ".exe" } else { "" };
    format!(
        "{PREFIX}{}-{}{ext}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// A name we serve: the prefix, then `[a-z0-9_.-]`, no `..`.
fn valid(name: &str) -> bool {
    name.starts_with(PREFIX)
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

pub(crate) async fn agent(
    State(state): State<AppState>,
    UrlPath(file): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (name, want_hash) = match file.strip_suffix(".sha256") {
        Some(n) => (n, true),
        None => (file.as_str(), false),
    };
    let missing = || {
        ApiError::not_found(format!(
            "no agent binary {name:?} on this server (this machine's is {:?}; put others in {PACKAGED_DIR} or --agent-dir)",
            native_name()
        ))
    };
    if !valid(name) {
        return Err(missing());
    }
    let path = state.downloads.find(name).ok_or_else(missing)?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        tracing::warn!(path = %path.display(), error = %e, "reading an agent binary");
        missing()
    })?;
    let hash = data_encoding::HEXLOWER.encode(&Sha256::digest(&bytes));
    if want_hash {
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{hash}  {name}\n"),
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::HeaderName::from_static("x-checksum-sha256"), hash),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agent_names_are_served() {
        assert!(valid("restic-manager-agent-linux-x86_64"));
        assert!(valid("restic-manager-agent-windows-x86_64.exe"));
        assert!(!valid("restic-manager"));
        assert!(!valid("restic-manager-agent-../../etc/passwd"));
        assert!(!valid("restic-manager-agent-Linux"));
        assert!(native_name().starts_with(PREFIX));
    }
}
