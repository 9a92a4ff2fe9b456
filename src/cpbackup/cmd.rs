//! The `controlplane-backup` and `controlplane-restore` commands.

use std::path::PathBuf;

use anyhow::Result;

use super::{restore, snapshot};

/// `restic-manager controlplane-backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The installation's data directory.
    #[arg(long, default_value = "/var/lib/restic-manager")]
    pub data_dir: PathBuf,
    /// The SQLite database (default DATA_DIR/restic-manager.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The staging directory the copy replaces [default:
    /// DATA_DIR/controlplane-backup].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `restic-manager controlplane-restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A copy written by `controlplane-backup` (restored from its restic
    /// repository first: see docs/install.md, "Disaster recovery").
    #[arg(long)]
    pub from: PathBuf,
    /// The new installation's data directory: missing or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub async fn backup(args: BackupArgs) -> Result<()> {
    let out = args
        .out
        .unwrap_or_else(|| snapshot::default_out(&args.data_dir));
    let s = snapshot::snapshot(&snapshot::Options {
        data_dir: args.data_dir,
        db: args.db,
        out,
    })
    .await?;
    println!(
        "control-plane copy written to {}: {} files, {} bytes, schema version {}, {}",
        s.out.display(),
        s.manifest.files.len(),
        s.bytes(),
        s.manifest.schema_version,
        s.manifest.created_at
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<()> {
    let r = restore::restore(&args.from, &args.data_dir).await?;
    println!(
        "restored {} files (schema version {}, copy of {}) into {}",
        r.manifest.files.len(),
        r.manifest.schema_version,
        r.manifest.created_at,
        r.data_dir.display()
    );
    println!(
        "start it with: restic-manager serve --data-dir {}",
        r.data_dir.display()
    );
    Ok(())
}
