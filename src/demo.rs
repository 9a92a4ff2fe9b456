//! `serve --demo`: a clearly labelled demo repository for the local agent,
//! so a first install shows a real host with a real snapshot. It owns
//! `<data-dir>/demo/`:
//!
//! - `repository/` — served by a child `rclone serve restic --append-only`
//!   on loopback; the local agent backs up through it with an
//!   **append-only** credential, exactly as an endpoint should;
//! - the same directory as a local path repository is the repository's
//!   full-access credential: it initialises the repository and stays
//!   sealed in the control plane. No maintenance host is set: a host with
//!   an append-only credential may not be one, so forget and prune on the
//!   demo need a second host attached with full access (docs/install.md);
//! - `sample/` — a small sample backup set written at first start;
//! - `demo.json` (0600) — the REST credentials, the repository password
//!   and how far the set-up got, so a re-run resumes and keeps its state.
//!
//! The set-up (repository, a daily schedule, the first backup) runs once;
//! each step is recorded before the next, and the outcome is printed as a
//! `demo:` line on standard output (`scripts/up --check` waits for
//! `demo: ready`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::Client;
use rm_bus::msg::JobParams;
use rm_controlplane::api;
use serde::{Deserialize, Serialize};

/// The demo repository's name, as the UI shows it.
pub const REPO_NAME: &str = "demo repository (local, sample data)";
/// The REST path below the served directory.
const REPO_PATH: &str = "demo";
const STATE_FILE: &str = "demo.json";
/// Longest the first backup of the sample set may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);

/// What `demo.json` remembers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    rest_user: String,
    rest_pass: String,
    repo_password: String,
    #[serde(default)]
    repo_id: Option<String>,
    #[serde(default)]
    attached: bool,
    #[serde(default)]
    schedule_id: Option<String>,
    #[serde(default)]
    first_backup_job: Option<String>,
    #[serde(default)]
    first_backup_ok: bool,
}

/// `println!` that ignores a closed standard output (whoever started the
/// server may stop reading it; that must not end a role).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The demo's directories.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("demo"),
        }
    }
    fn served(&self) -> PathBuf {
        self.root.join("repository")
    }
    /// The sample backup set.
    pub fn sample(&self) -> PathBuf {
        self.root.join("sample")
    }
    fn state(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }
}

fn load_or_create_state(paths: &Paths) -> Result<State> {
    let file = paths.state();
    if file.exists() {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()));
    }
    let state = State {
        rest_user: "demo".into(),
        rest_pass: rm_bus::ids::random_token(20),
        repo_password: rm_bus::ids::random_token(20),
        repo_id: None,
        attached: false,
        schedule_id: None,
        first_backup_job: None,
        first_backup_ok: false,
    };
    save(paths, &state)?;
    Ok(state)
}

fn save(paths: &Paths, state: &State) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state).context("encoding the demo state")?;
    rm_agent::state::write_durable(&paths.state(), &bytes, true)
}

/// Writes the sample backup set unless it exists.
fn write_sample(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let docs = dir.join("documents");
    std::fs::create_dir_all(&docs).with_context(|| format!("creating {}", docs.display()))?;
    let files: [(&str, String); 4] = [
        (
            "README.txt",
            "This is restic-manager's DEMO backup set. It is sample data, backed up\n\
             into the demo repository so you can try browsing snapshots and restoring\n\
             files. Delete the demo repository once you have added your own.\n"
                .to_owned(),
        ),
        (
            "documents/notes.md",
            "# Notes\n\n- try a restore of this file to another path\n- then compare it\n"
                .to_owned(),
        ),
        (
            "documents/budget.csv",
            (0..200)
                .map(|i| {
                    format!(
                        "2026-{:02}-{:02},item {i},{}\n",
                        i % 12 + 1,
                        i % 28 + 1,
                        i * 7
                    )
                })
                .collect(),
        ),
        (
            "documents/lorem.txt",
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n".repeat(400),
        ),
    ];
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The append-only REST server over `<data-dir>/demo/repository`; killed
/// when dropped and, on Linux, when this process dies.
pub struct RestServer {
    child: tokio::process::Child,
    pub listen: SocketAddr,
}

impl RestServer {
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts `rclone serve restic --append-only` on `listen` (credentials from
/// the environment, not the command line) and waits until it answers.
pub async fn start_rest(data_dir: &Path, listen: SocketAddr, rclone: &Path) -> Result<RestServer> {
    let paths = Paths::new(data_dir);
    std::fs::create_dir_all(paths.served())
        .with_context(|| format!("creating {}", paths.served().display()))?;
    let state = load_or_create_state(&paths)?;
    let log = std::fs::File::create(paths.root.join("rclone.log"))
        .context("creating the demo REST server's log")?;
    let mut cmd = tokio::process::Command::new(rclone);
    cmd.args(["serve", "restic"])
        .arg(paths.served())
        .args(["--addr", &listen.to_string(), "--append-only"])
        .env("RCLONE_USER", &state.rest_user)
        .env("RCLONE_PASS", &state.rest_pass)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} for the demo repository (install Debian's rclone, or run without --demo)",
            rclone.display()
        )
    })?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(RestServer { child, listen });
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the demo REST server exited ({status}); see {} (is {listen} in use? pick another --demo-rest-listen)",
                paths.root.join("rclone.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill().await;
    bail!("the demo REST server did not listen on {listen} within 10 s")
}

/// What the set-up needs from the serve process.
pub struct Ctx {
    pub data_dir: PathBuf,
    pub db: PathBuf,
    /// A client with the web role's permissions.
    pub bus: Client,
    pub host_name: String,
    pub rest: SocketAddr,
}

/// Runs the set-up and prints its outcome; never fails the server.
pub async fn run(ctx: Ctx) {
    match setup(&ctx).await {
        Ok(line) => say!("demo: ready — {line}"),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "demo set-up failed");
            say!("demo: FAILED — {e:#}");
        }
    }
}

async fn call<B: Serialize, R: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    verb: rm_bus::subject::Verb,
    body: B,
) -> Result<R> {
    crate::admin::request(&ctx.bus, "demo", verb, body).await
}

async fn setup(ctx: &Ctx) -> Result<String> {
    let paths = Paths::new(&ctx.data_dir);
    let mut state = load_or_create_state(&paths)?;
    write_sample(&paths.sample())?;
    let store = rm_store::Store::open(&ctx.db)
        .await
        .with_context(|| format!("opening {}", ctx.db.display()))?;
    let host_id = host_online(&store, &ctx.host_name).await?;
    let key: api::PubKey = call(ctx, api::PUBKEY, serde_json::json!({})).await?;
    let seal = |url: String| {
        api::SealedSecrets::seal(
            &api::RepoSecretsInput {
                url,
                password: state.repo_password.clone(),
                env: Default::default(),
            },
            &key.xkey,
        )
        .context("sealing the demo repository's secrets")
    };

    let repo_id = match state.repo_id.clone() {
        Some(id) => id,
        None => {
            let local = paths.served().join(REPO_PATH);
            let added: api::RepoAdded = call(
                ctx,
                api::REPO_ADD,
                api::RepoAdd {
                    name: REPO_NAME.into(),
                    secrets: seal(local.to_string_lossy().into_owned())?,
                    init_on_host: Some(host_id.clone()),
                    verify_on_host: None,
                },
            )
            .await
            .context("creating the demo repository")?;
            state.repo_id = Some(added.repo_id.clone());
            save(&paths, &state)?;
            say!("demo: repository {} created", added.repo_id);
            added.repo_id
        }
    };
    if !state.attached {
        let url = format!(
            "rest:http://{}:{}@{}/{REPO_PATH}",
            state.rest_user, state.rest_pass, ctx.rest
        );
        let _: api::Done = call(
            ctx,
            api::REPO_ATTACH,
            api::RepoAttach {
                repo_id: repo_id.clone(),
                host_id: host_id.clone(),
                access: api::AccessInput::AppendOnly,
                secrets: Some(seal(url)?),
            },
        )
        .await
        .context("giving the local agent its append-only credential")?;
        state.attached = true;
        save(&paths, &state)?;
    }
    let params = JobParams::Backup {
        paths: vec![paths.sample().to_string_lossy().into_owned()],
        excludes: Vec::new(),
        tags: vec!["demo".into()],
        one_file_system: false,
        host_name: None,
    };
    if state.schedule_id.is_none() {
        let saved: api::ScheduleSaved = call(
            ctx,
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: host_id.clone(),
                repo_id: repo_id.clone(),
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
                params: params.clone(),
                enabled: true,
                jitter_secs: 0,
                timeout_secs: Some(BACKUP_TIMEOUT.as_secs()),
                grace_secs: None,
            },
        )
        .await
        .context("scheduling the demo backup")?;
        state.schedule_id = Some(saved.schedule_id);
        save(&paths, &state)?;
    }
    if !state.first_backup_ok {
        let job_id = match state.first_backup_job.clone() {
            Some(id) => id,
            None => {
                let created: api::JobCreated = call(
                    ctx,
                    api::JOB_CREATE,
                    api::JobCreate {
                        host_id: host_id.clone(),
                        repo_id: repo_id.clone(),
                        params,
                        timeout_secs: Some(BACKUP_TIMEOUT.as_secs()),
                        target_host_id: None,
                    },
                )
                .await
                .context("starting the first backup")?;
                state.first_backup_job = Some(created.job_id.clone());
                save(&paths, &state)?;
                say!("demo: first backup started (job {})", created.job_id);
                created.job_id
            }
        };
        let status = job_finished(&store, &job_id).await?;
        if status != "succeeded" && status != "warning" {
            // the next start tries again with a new job
            state.first_backup_job = None;
            save(&paths, &state)?;
            bail!("the first backup (job {job_id}) ended {status}; see its job page");
        }
        state.first_backup_ok = true;
        save(&paths, &state)?;
        say!("demo: first backup {status} (job {job_id})");
    }
    Ok(format!(
        "host {} backs up {} into {REPO_NAME} ({repo_id}) daily at 03:00 UTC",
        ctx.host_name,
        paths.sample().display()
    ))
}

/// The local host's id once it is online (the set-up needs its agent).
async fn host_online(store: &rm_store::Store, name: &str) -> Result<String> {
    for _ in 0..1200 {
        let mut c = store.read().await?;
        let hosts = rm_store::hosts::list(&mut c).await?;
        drop(c);
        if let Some(h) = hosts
            .into_iter()
            .find(|h| h.name == name && h.status == "online")
        {
            return Ok(h.id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the local agent {name:?} did not come online within 2 minutes")
}

/// Waits for a job's terminal status.
async fn job_finished(store: &rm_store::Store, job_id: &str) -> Result<String> {
    let deadline = tokio::time::Instant::now() + BACKUP_TIMEOUT + Duration::from_secs(60);
    loop {
        let mut c = store.read().await?;
        let job = rm_store::jobs::get(&mut c, job_id).await?;
        drop(c);
        if rm_store::jobs::JobStatus::parse(&job.status)?.is_terminal() {
            return Ok(job.status);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the first backup (job {job_id}) is still {}", job.status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_state_is_private_and_kept_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(&paths.root).unwrap();
        let first = load_or_create_state(&paths).unwrap();
        let again = load_or_create_state(&paths).unwrap();
        assert_eq!(first.rest_pass, again.rest_pass, "credentials are kept");
        assert_eq!(first.repo_password, again.repo_password);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(paths.state())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        write_sample(&paths.sample()).unwrap();
        std::fs::write(paths.sample().join("README.txt"), "mine").unwrap();
        write_sample(&paths.sample()).unwrap();
        assert_eq!(
            std::fs::read_to_string(paths.sample().join("README.txt")).unwrap(),
            "mine",
            "an existing sample set is left alone"
        );
    }
}
