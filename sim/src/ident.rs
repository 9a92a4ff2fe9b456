//! Enrolled identities: host id, JWT, nkey seed and xkey seed, one JSON
//! object per line. Written by `restic-manager-sim enroll`, read by `run`.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One enrolled simulated agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub host_id: rm_bus::HostId,
    /// The user JWT the control plane minted at enrollment.
    pub jwt: String,
    /// The agent's nkey seed (generated here, never sent anywhere).
    pub seed: String,
    /// The agent's xkey seed (repository secrets are sealed to it).
    pub xkey_seed: String,
}

impl Identity {
    pub fn creds(&self) -> rm_bus::creds::UserCreds {
        rm_bus::creds::UserCreds::new(self.jwt.clone(), self.seed.clone())
    }
}

/// Reads every identity in `path`.
pub fn read(path: &Path) -> Result<Vec<Identity>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// Appends identities to `path`.
pub fn append(path: &Path, ids: &[Identity]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for id in ids {
        writeln!(f, "{}", serde_json::to_string(id)?)?;
    }
    f.sync_all()?;
    Ok(())
}
