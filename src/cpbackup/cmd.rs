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

/// `restic-manager recovery-kit`.
#[derive(Debug, clap::Args)]
pub struct KitArgs {
    /// The installation's data directory (holds the master key).
    #[arg(long, default_value = "/var/lib/restic-manager")]
    pub data_dir: PathBuf,
    /// The SQLite database (default DATA_DIR/restic-manager.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Write the kit to this file (0600) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints (or writes) the recovery kit and records the export.
pub async fn kit(args: KitArgs) -> Result<()> {
    use anyhow::Context as _;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| args.data_dir.join(super::manifest::DB_FILE));
    let store = rm_store::Store::open(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let kit = rm_controlplane::recovery::kit(&store, &args.data_dir).await?;
    match &args.out {
        Some(path) => {
            rm_bus_server::creds::authority::write_private(path, kit.render().as_bytes())?
        }
        None => print!("{}", kit.render()),
    }
    let actor = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "cli".into());
    let mut tx = store.write().await?;
    rm_store::cpbackup::kit_exported(
        &mut tx,
        &actor,
        "cli",
        kit.repo.as_ref().map(|r| r.id.as_str()),
        jiff::Timestamp::now().as_millisecond(),
    )
    .await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    store.close().await;
    if let Some(path) = &args.out {
        eprintln!(
            "recovery kit written to {} (keep it offline)",
            path.display()
        );
    }
    if kit.repo.is_none() {
        eprintln!(
            "note: no control-plane backup repository is configured yet; the kit holds the master key only"
        );
    }
    Ok(())
}
