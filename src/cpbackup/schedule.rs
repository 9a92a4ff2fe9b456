//! The daily control-plane backup of `serve`: a copy of the installation
//! ([`super::snapshot`]) into `<data-dir>/controlplane-backup`, backed up
//! with restic by the local agent into the repository chosen on the
//! settings page (Settings, Control-plane backup), each run recorded
//! (`controlplane_backups`: this task, or in a split deployment the
//! `controlplane-backup --if-due` command its timer runs, is its writer).
//! A run is due per [`rm_store::cpbackup::next_run`]: at once when none
//! ran or an admin asked, else at the configured time of day (a time
//! missed while nothing ran: once, at the next look), an hour after a
//! failure. [`once`] is one such look, for the command.
//!
//! Until a recovery kit was exported the task also warns in the server's
//! log, at start and then every few hours: without the master key outside
//! this machine, no backup can be restored.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::Client;
use rm_bus::msg::JobParams;
use rm_controlplane::api;
use rm_store::cpbackup::{self as cpb, RunUpdate};

/// How long the restic run of a control-plane backup may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the task needs from `serve`.
pub struct Task {
    pub data_dir: PathBuf,
    pub store: rm_store::Store,
    /// A client with the web role's permissions (job requests).
    pub bus: Client,
    /// The local agent's host name; `None`: no local agent, warn only.
    pub local_host: Option<String>,
    /// How often the task looks whether a run is due.
    pub poll: Duration,
    /// How often the missing-kit warning repeats.
    pub warn_every: Duration,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Runs until `stop` completes; errors are logged and the next pass
/// tries again.
pub async fn run(t: Task, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    if let Ok(mut tx) = t.store.write().await {
        // runs a stopped server left behind
        if cpb::fail_unfinished(&mut tx, now_ms()).await.is_ok() {
            let _ = tx.commit().await;
        }
    }
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = pass(&t, &mut warned) => if let Err(e) = r {
                tracing::warn!(error = format!("{e:#}"), "control-plane backup pass failed; trying again");
            },
            () = &mut stop => return,
        }
        tokio::select! {
            () = tokio::time::sleep(t.poll) => {}
            () = &mut stop => return,
        }
    }
}

/// What one look at the schedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// No repository chosen, or no local agent to run it.
    Off,
    /// Not due before this time (ms).
    NotDue(i64),
    /// It ran; `Some` is why it failed.
    Ran(Option<String>),
}

/// One look: runs the backup if it is due (the command a split
/// deployment's timer runs; `serve` loops over the same look).
pub async fn once(t: &Task) -> Result<Pass> {
    pass(t, &mut None).await
}

async fn pass(t: &Task, warned: &mut Option<tokio::time::Instant>) -> Result<Pass> {
    let status = {
        let mut c = t.store.read().await?;
        cpb::status(&mut c).await?
    };
    if !status.master_key_backed_up() && warned.is_none_or(|w| w.elapsed() >= t.warn_every) {
        tracing::warn!(
            page = "/settings/controlplane-backup",
            command = "restic-manager recovery-kit",
            "no backup of the master key exists: without it no stored secret and no control-plane backup can be recovered; export the recovery kit (an admin, on the settings page, or the command) and keep it offline"
        );
        *warned = Some(tokio::time::Instant::now());
    }
    let (Some(repo_id), Some(host)) = (status.repo_id(), t.local_host.as_deref()) else {
        return Ok(Pass::Off);
    };
    match status.next_run() {
        Some(due) if due <= now_ms() => Ok(Pass::Ran(run_once(t, repo_id, host).await?)),
        Some(due) => Ok(Pass::NotDue(due)),
        None => Ok(Pass::Off),
    }
}

/// One run: copy, back up through the local agent, record the outcome
/// (`Some`: why it failed).
async fn run_once(t: &Task, repo_id: &str, host: &str) -> Result<Option<String>> {
    let staging = t.data_dir.join(cpb::STAGING_DIR);
    let staging = std::path::absolute(&staging).unwrap_or(staging);
    let id = {
        let mut tx = t.store.write().await?;
        let id = cpb::run_started(&mut tx, repo_id, &staging.to_string_lossy(), now_ms()).await?;
        tx.commit().await.map_err(rm_store::StoreError::from)?;
        id
    };
    tracing::info!(run = id, repo = repo_id, "control-plane backup started");
    let outcome = backup(t, id, repo_id, host, &staging).await;
    let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
    let mut tx = t.store.write().await?;
    cpb::run_finished(&mut tx, id, error.as_deref(), now_ms()).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    match &error {
        None => tracing::info!(run = id, "control-plane backup succeeded"),
        Some(e) => tracing::warn!(run = id, error = e, "control-plane backup failed"),
    }
    Ok(error)
}

async fn progress(t: &Task, id: i64, u: RunUpdate<'_>) -> Result<()> {
    let mut tx = t.store.write().await?;
    cpb::run_progress(&mut tx, id, &u).await?;
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    Ok(())
}

async fn backup(
    t: &Task,
    id: i64,
    repo_id: &str,
    host: &str,
    staging: &std::path::Path,
) -> Result<()> {
    let copy = super::snapshot::snapshot(&super::snapshot::Options {
        data_dir: t.data_dir.clone(),
        db: None,
        out: staging.to_path_buf(),
    })
    .await
    .context("copying the installation")?;
    progress(
        t,
        id,
        RunUpdate {
            files: i64::try_from(copy.manifest.files.len()).ok(),
            bytes: i64::try_from(copy.bytes()).ok(),
            schema_version: Some(copy.manifest.schema_version),
            ..RunUpdate::default()
        },
    )
    .await?;
    let host_id = {
        let mut c = t.store.read().await?;
        rm_store::hosts::list(&mut c)
            .await?
            .into_iter()
            .find(|h| h.name == host)
            .map(|h| h.id)
            .with_context(|| format!("the local agent's host {host:?} is not enrolled"))?
    };
    let created: api::JobCreated = crate::admin::request(
        &t.bus,
        "controlplane-backup",
        api::JOB_CREATE,
        api::JobCreate {
            host_id: host_id.clone(),
            repo_id: repo_id.to_owned(),
            params: JobParams::Backup {
                paths: vec![staging.to_string_lossy().into_owned()],
                excludes: Vec::new(),
                tags: vec![cpb::TAG.into()],
                one_file_system: false,
                host_name: None,
            },
            timeout_secs: Some(JOB_TIMEOUT.as_secs()),
            target_host_id: None,
        },
    )
    .await
    .with_context(|| {
        format!("starting the backup on the local host {host} (is the repository attached to it?)")
    })?;
    progress(
        t,
        id,
        RunUpdate {
            job_id: Some(&created.job_id),
            ..RunUpdate::default()
        },
    )
    .await?;
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT + Duration::from_secs(300);
    loop {
        let job = {
            let mut c = t.store.read().await?;
            rm_store::jobs::get(&mut c, &created.job_id).await?
        };
        if job.status()?.is_terminal() {
            if job.status == "succeeded" {
                return Ok(());
            }
            bail!(
                "the backup job {} ended {}{}",
                job.id,
                job.status,
                job.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the backup job {} is still {}", job.id, job.status);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
