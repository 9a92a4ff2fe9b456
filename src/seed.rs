//! `restic-manager seed`: fills a database with a made-up fleet (hosts in
//! every state, daily schedules, a job history, snapshots, repository
//! health, open alerts) to look at the UI and measure it at fleet scale.
//! Never point it at a production database: seeded repositories carry
//! placeholder credentials.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The database file to fill (created if missing; must hold no hosts).
    #[arg(long)]
    pub db: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Backup jobs per host, one a day going back from now.
    #[arg(long, default_value_t = 100)]
    pub jobs_per_host: usize,
    /// Snapshot rows per host.
    #[arg(long, default_value_t = 100)]
    pub snapshots_per_host: usize,
    /// Varies the made-up data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub async fn run(args: SeedArgs) -> Result<()> {
    let store = rm_store::Store::open(&args.db)
        .await
        .with_context(|| format!("opening {}", args.db.display()))?;
    let mut conn = store.read().await?;
    if !rm_store::hosts::names(&mut conn).await?.is_empty() {
        bail!(
            "{} already has hosts: seed only an empty database",
            args.db.display()
        );
    }
    drop(conn);
    let spec = rm_store::seed::Spec {
        hosts: args.hosts,
        jobs_per_host: args.jobs_per_host,
        snapshots_per_host: args.snapshots_per_host,
        now_ms: jiff::Timestamp::now().as_millisecond(),
        seed: args.seed,
        ..rm_store::seed::Spec::default()
    };
    let started = Instant::now();
    let report = rm_store::seed::fleet(&store, &spec).await?;
    println!(
        "seeded {}: {} hosts, {} jobs, {} snapshots, {} repositories, {} open alerts in {:.1} s",
        args.db.display(),
        report.hosts,
        report.jobs,
        report.snapshots,
        report.repositories,
        report.alerts,
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}
