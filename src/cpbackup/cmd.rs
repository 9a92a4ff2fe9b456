//! The `controlplane-backup` and `controlplane-restore` commands.

use std::path::PathBuf;

use anyhow::{Context, Result};

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
    #[arg(long, conflicts_with = "if_due")]
    pub out: Option<PathBuf>,
    /// Run the daily control-plane backup as `serve` does, if it is due
    /// per the settings page (repository, time of day, time zone): copy,
    /// back up through the agent of --host over the bus at --nats-url,
    /// record the run. Not due: says when it is and exits 0. For split
    /// deployments (the restic-manager-controlplane-backup timer).
    #[arg(long, requires_all = ["nats_urls", "host"])]
    pub if_due: bool,
    /// The bus (with --if-due); several separated by commas.
    #[arg(long = "nats-url", value_delimiter = ',', requires = "if_due")]
    pub nats_urls: Vec<String>,
    /// The enrolled host whose agent backs the copy up (with --if-due): the
    /// agent on this machine, which can read DATA_DIR.
    #[arg(long, requires = "if_due")]
    pub host: Option<String>,
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
    if args.if_due {
        return backup_if_due(args).await;
    }
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

/// `controlplane-backup --if-due`: one look of `serve`'s schedule.
async fn backup_if_due(args: BackupArgs) -> Result<()> {
    use rm_bus::connect::{ConnectSpec, connect};
    use rm_bus_server::creds::{Authority, Role};

    let db = args
        .db
        .clone()
        .unwrap_or_else(|| args.data_dir.join("restic-manager.db"));
    let store = rm_store::Store::open(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let authority = Authority::load_or_create(&args.data_dir.join("bus"), rm_bus::clock::system())
        .with_context(|| {
            format!(
                "loading the credential authority in {}",
                args.data_dir.display()
            )
        })?;
    let creds = authority.mint_new_user("controlplane-backup", Role::Web.permissions())?;
    let mut spec = ConnectSpec::new(String::new(), creds, &Role::Web);
    spec.urls = args.nats_urls.clone();
    spec.tls_ca_pem = rm_controlplane::bus_ca_pem(&args.data_dir)?;
    let (bus, _events) = connect(&spec).await?;
    let task = super::schedule::Task {
        data_dir: args.data_dir.clone(),
        store: store.clone(),
        bus,
        local_host: args.host.clone(),
        poll: std::time::Duration::ZERO,
        warn_every: std::time::Duration::ZERO,
    };
    let pass = super::schedule::once(&task).await;
    store.close().await;
    match pass? {
        super::schedule::Pass::Off => {
            println!(
                "the control-plane backup is off: choose its repository on Settings → Control-plane backup"
            );
            Ok(())
        }
        super::schedule::Pass::NotDue(at) => {
            let when = jiff::Timestamp::from_millisecond(at)
                .map_or_else(|_| at.to_string(), |t| t.to_string());
            println!("the control-plane backup is not due until {when}");
            Ok(())
        }
        super::schedule::Pass::Ran(None) => {
            println!("the control-plane backup succeeded");
            Ok(())
        }
        super::schedule::Pass::Ran(Some(e)) => {
            anyhow::bail!("the control-plane backup failed: {e}")
        }
    }
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
