//! The recovery kit: what an operator needs, besides the backup itself, to
//! bring the installation back on a new machine. The control-plane backup
//! holds the master key, but the password of the repository it is stored
//! in is kept encrypted *by that master key* — so the kit carries the
//! master key and that repository's location and credentials in the
//! clear, as a shell-sourceable file, plus the restore commands
//! (docs/install.md, "Disaster recovery"). One computation for the web
//! download and `restic-manager recovery-kit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::Store;
use crate::cpbackup::{STAGING_DIR, TAG};
use crate::secrets::{MasterKey, repo_aad};
use anyhow::{Context, Result, bail};

/// The kit's suggested file name.
pub const FILE_NAME: &str = "restic-manager-recovery-kit.env";

/// The control-plane backup repository, in the clear.
#[derive(Debug, Clone)]
pub struct KitRepo {
    pub id: String,
    pub name: String,
    pub url: String,
    pub password: String,
    pub env: BTreeMap<String, String>,
}

/// A recovery kit.
#[derive(Debug, Clone)]
pub struct Kit {
    pub created_at: String,
    /// base64 of the 32-byte master key.
    pub master_key: String,
    /// The configured control-plane backup repository, if any.
    pub repo: Option<KitRepo>,
    /// Where the copy lives on this machine (and so inside the snapshot).
    pub staging_dir: String,
}

/// Assembles the kit from the data directory's master key and the
/// database; fails when this process has no master key.
pub async fn kit(store: &Store, data_dir: &Path) -> Result<Kit> {
    let Some(master_key) = MasterKey::text(data_dir)? else {
        bail!(
            "no master key here ({} has no master.key and RM_MASTER_KEY is not set): make the kit on the machine that runs the control plane (`restic-manager recovery-kit`)",
            data_dir.display()
        );
    };
    let master = MasterKey::from_bytes(
        &data_encoding::BASE64
            .decode(master_key.as_bytes())
            .context("the master key is not base64")?,
    )?;
    let mut c = store.read().await?;
    let status = crate::cpbackup::status(&mut c).await?;
    let repo = match status.repo_id() {
        Some(id) => {
            let r = crate::repos::get(&mut c, id).await?;
            let s: rm_bus::seal::RepoSecrets = master
                .decrypt_json(&r.secrets_enc, &repo_aad(&r.id))
                .context("decrypting the control-plane backup repository's secrets")?;
            Some(KitRepo {
                id: r.id,
                name: r.name,
                url: s.repository,
                password: s.password,
                env: s.env,
            })
        }
        None => None,
    };
    let staging_dir = status
        .last_success
        .as_ref()
        .and_then(|r| r.staging_dir.clone())
        .unwrap_or_else(|| {
            std::path::absolute(data_dir)
                .unwrap_or_else(|_| data_dir.to_path_buf())
                .join(STAGING_DIR)
                .display()
                .to_string()
        });
    Ok(Kit {
        created_at: jiff::Timestamp::now().to_string(),
        master_key,
        repo,
        staging_dir,
    })
}

/// Single-quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Kit {
    /// The kit as a file a POSIX shell can source (`set -a; . ./kit`).
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# restic-manager recovery kit, made {}", self.created_at);
        let _ = writeln!(
            o,
            "# Keep it offline (a password manager, a printed copy in a safe): it\n# opens every secret this installation stores. Restore: docs/install.md,\n# \"Disaster recovery\".\n#"
        );
        let _ = writeln!(
            o,
            "# The master key (also inside every control-plane backup)."
        );
        let _ = writeln!(o, "RM_MASTER_KEY={}", quote(&self.master_key));
        let _ = writeln!(
            o,
            "# Where the control-plane copy is on the server, and so in the snapshot."
        );
        let _ = writeln!(
            o,
            "RM_CONTROLPLANE_BACKUP_PATH={}",
            quote(&self.staging_dir)
        );
        match &self.repo {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "# The control-plane backup repository: {} ({}).",
                    r.name.replace('\n', " "),
                    r.id
                );
                let _ = writeln!(o, "RESTIC_REPOSITORY={}", quote(&r.url));
                let _ = writeln!(o, "RESTIC_PASSWORD={}", quote(&r.password));
                for (k, v) in &r.env {
                    if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        let _ = writeln!(o, "{k}={}", quote(v));
                    }
                }
                let _ = writeln!(
                    o,
                    "#\n# On the new machine:\n#   set -a; . ./{FILE_NAME}; set +a\n#   restic restore latest --tag {TAG} --target /tmp/rm-restore\n#   restic-manager controlplane-restore --from \"/tmp/rm-restore$RM_CONTROLPLANE_BACKUP_PATH\" --data-dir /var/lib/restic-manager\n#   restic-manager serve --data-dir /var/lib/restic-manager ..."
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "# No control-plane backup repository is configured yet: choose one\n# (Settings, Control-plane backup) and export a new kit."
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_the_shell() {
        assert_eq!(quote("a'b $x"), r"'a'\''b $x'");
    }
}
