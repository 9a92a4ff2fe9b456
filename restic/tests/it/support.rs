//! Shared helpers: restic binaries, test repositories, data trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rm_bus::msg::{JobParams, Progress};
use rm_bus::seal::RepoSecrets;
use rm_restic::{Repo, Restic, RunEvent, RunOptions, RunResult};
use tokio_util::sync::CancellationToken;

/// restic 0.14 (Debian bookworm).
pub async fn restic_014() -> Restic {
    let bin = std::env::var_os("RM_RESTIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| "restic".into());
    Restic::detect(bin)
        .await
        .expect("restic 0.14 on PATH (scripts/test installs it)")
}

/// restic 0.18 from `RM_RESTIC_018` (or the workspace's `.cache`); when
/// missing, fails under CI and is skipped (None) otherwise.
pub async fn restic_018() -> Option<Restic> {
    let bin = std::env::var_os("RM_RESTIC_018")
        .map(PathBuf::from)
        .unwrap_or_else(|| rm_testkit::workspace_root().join(".cache/restic-0.18/usr/bin/restic"));
    if !bin.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "restic 0.18 not found at {} (RM_RESTIC_018); scripts/test fetches it",
            bin.display()
        );
        eprintln!(
            "SKIPPING the restic 0.18 part: {} not found (run scripts/test to fetch it)",
            bin.display()
        );
        return None;
    }
    Some(Restic::detect(bin).await.expect("restic 0.18 runs"))
}

/// Both versions (0.18 only when available).
pub async fn all_versions() -> Vec<Restic> {
    let mut v = vec![restic_014().await];
    v.extend(restic_018().await);
    v
}

pub fn is_014(r: &Restic) -> bool {
    r.version().minor == 14
}

/// A repository in a tempdir with its scratch and cache dirs.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub secrets: RepoSecrets,
    pub restic: Restic,
    pub scratch: PathBuf,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestRepo {
    /// A new, not yet initialised repository.
    pub fn uninit(restic: &Restic) -> TestRepo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        let secrets = RepoSecrets {
            repository: dir.path().join("repo").display().to_string(),
            password: PASSWORD.into(),
            env: BTreeMap::new(),
        };
        let scratch = dir.path().join("scratch");
        TestRepo {
            dir,
            secrets,
            restic: restic.clone(),
            scratch,
        }
    }

    /// A new, initialised repository.
    pub async fn new(restic: &Restic) -> TestRepo {
        let r = Self::uninit(restic);
        rm_restic::init(&r.restic, &r.repo(), Duration::from_secs(60))
            .await
            .expect("init");
        r
    }

    pub fn repo(&self) -> Repo<'_> {
        Repo {
            secrets: &self.secrets,
            cache_dir: None,
            scratch_dir: &self.scratch,
        }
    }

    /// A repo view with other secrets (same scratch dir).
    pub fn with_secrets<'a>(&'a self, secrets: &'a RepoSecrets) -> Repo<'a> {
        Repo {
            secrets,
            cache_dir: None,
            scratch_dir: &self.scratch,
        }
    }

    pub async fn run(&self, params: JobParams) -> (RunResult, Vec<RunEvent>) {
        run_with(&self.restic, &self.repo(), params, &opts()).await
    }
}

pub fn opts() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(120),
        progress_interval: Duration::from_millis(500),
        lock_hostname: hostname(),
        remove_stale_locks: false,
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

pub async fn run_with(
    restic: &Restic,
    repo: &Repo<'_>,
    params: JobParams,
    opts: &RunOptions,
) -> (RunResult, Vec<RunEvent>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let res = rm_restic::run_job(
        restic,
        repo,
        &params,
        false,
        opts,
        tx,
        CancellationToken::new(),
    )
    .await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (res, events)
}

pub fn progress(events: &[RunEvent]) -> Vec<Progress> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Progress(p) => Some(p.clone()),
            RunEvent::Log(_) => None,
        })
        .collect()
}

pub fn logs(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log(l) => Some(l.text.clone()),
            RunEvent::Progress(_) => None,
        })
        .collect()
}

pub fn backup(paths: &[&Path], host: Option<&str>) -> JobParams {
    JobParams::Backup {
        paths: paths.iter().map(|p| p.display().to_string()).collect(),
        excludes: vec![],
        tags: vec![],
        one_file_system: false,
        host_name: host.map(str::to_owned),
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small nested tree: data/{top.txt, a/{f1, b/{f2, c/f3}}, other/o}.
pub fn small_tree(root: &Path) -> PathBuf {
    let d = root.join("data");
    std::fs::create_dir_all(d.join("a/b/c")).unwrap();
    std::fs::create_dir_all(d.join("other")).unwrap();
    std::fs::write(d.join("top.txt"), b"top\n").unwrap();
    std::fs::write(d.join("a/f1"), random_bytes(3000, 1)).unwrap();
    std::fs::write(d.join("a/b/f2"), random_bytes(70_000, 2)).unwrap();
    std::fs::write(d.join("a/b/c/f3"), b"three").unwrap();
    std::fs::write(d.join("other/o"), random_bytes(500, 3)).unwrap();
    d
}

/// Processes (pid, cmdline) whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Live (not zombie) processes in process group `pgid`.
pub fn processes_in_group(pgid: i32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() != Some(&"Z")
            && fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(pgid)
        {
            out.push(pid);
        }
    }
    out
}

/// Locks currently in the repository (`restic list locks --no-lock`).
pub fn list_locks(restic: &Restic, repo: &TestRepo) -> Vec<String> {
    let pw = repo.dir.path().join("pw-for-list");
    std::fs::write(&pw, PASSWORD).unwrap();
    let out = std::process::Command::new(restic.bin())
        .args(["list", "locks", "--no-lock"])
        .env_remove("RESTIC_PASSWORD")
        .env("RESTIC_REPOSITORY", &repo.secrets.repository)
        .env("RESTIC_PASSWORD_FILE", &pw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}
