//! Repository operations per backup: every restic the agent starts (a
//! counting wrapper around the real restic) and every REST request the
//! repository server sees (`rclone serve restic -vv`), for a backup
//! through the control plane and the agent, including whatever the
//! control plane queues on the repository because of it.
//!
//! `repository_operations_per_backup` (ignored; run by hand, see
//! `docs/benchmarks.md`) prints the figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// A shell script that records its arguments, then becomes `real`.
pub struct CountingRestic {
    pub bin: PathBuf,
    pub log: PathBuf,
}

impl CountingRestic {
    pub fn new(dir: &Path, real: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let bin = dir.join("restic-counting");
        let log = dir.join("restic-invocations.log");
        let real = which(real);
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { bin, log }
    }

    /// Every invocation so far, one line of arguments each.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// `restic` → its full path on PATH (the wrapper must not find itself).
fn which(bin: &Path) -> PathBuf {
    if bin.components().count() > 1 {
        return bin.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| bin.to_path_buf())
}

/// The restic subcommand of one recorded invocation (`list locks` for
/// `list locks --no-lock`, `cat lock` likewise), flags dropped.
pub fn subcommand(call: &str) -> String {
    let words: Vec<&str> = call
        .split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .collect();
    match words.as_slice() {
        ["list" | "cat", what, ..] => format!("{} {what}", words[0]),
        [first, ..] => (*first).to_owned(),
        [] => String::new(),
    }
}

/// REST requests in an `rclone serve restic -vv` log, as `METHOD /repo/kind/`.
pub fn rest_requests(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (_, req) = l.split_once("DEBUG : Local file system at ")?;
            let (_, req) = req.split_once(": ")?;
            let (method, path) = req.split_once(' ')?;
            if !matches!(method, "GET" | "HEAD" | "POST" | "DELETE") {
                return None;
            }
            // /repo/kind/name → /repo/kind/
            let mut parts: Vec<&str> = path.split('/').collect();
            if parts.len() > 3 {
                parts.truncate(3);
                parts.push("");
            }
            Some(format!("{method} {}", parts.join("/")))
        })
        .collect()
}

fn tally(items: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.clone()).or_default() += 1;
    }
    m
}

/// Waits until every job of `host` has ended; returns how many there are.
pub async fn quiet(env: &Env, host: &str) -> Vec<rm_store::jobs::Job> {
    let db = env.cp.db().await;
    eventually_within(
        "every job of the host ended",
        std::time::Duration::from_secs(300),
        || async {
            let mut c = db.read().await.ok()?;
            let jobs = rm_store::jobs::list_for_host(&mut c, host, None, 1000)
                .await
                .ok()?;
            jobs.iter()
                .all(|j| j.status().is_ok_and(|s| s.is_terminal()))
                .then_some(jobs)
        },
    )
    .await
}

/// What one backup cost, counted from `before` to now.
pub struct Cost {
    pub restic: Vec<String>,
    pub rest: Vec<String>,
    pub jobs: usize,
}

/// Marks where the counts stand now.
pub struct Mark {
    restic: usize,
    rest: usize,
    jobs: usize,
}

pub struct Counter<'a> {
    pub restic: &'a CountingRestic,
    pub rest_log: &'a Path,
}

impl Counter<'_> {
    pub async fn mark(&self, env: &Env, host: &str) -> Mark {
        Mark {
            restic: self.restic.calls().len(),
            rest: rest_requests(self.rest_log).len(),
            jobs: quiet(env, host).await.len(),
        }
    }

    pub async fn since(&self, env: &Env, host: &str, m: &Mark) -> Cost {
        let jobs = quiet(env, host).await.len();
        Cost {
            restic: self.restic.calls()[m.restic..]
                .iter()
                .map(|c| subcommand(c))
                .collect(),
            rest: rest_requests(self.rest_log)[m.rest..].to_vec(),
            jobs: jobs - m.jobs,
        }
    }
}

/// Prints the restic invocations and REST requests of three backups of
/// a small tree (the first one new, the others incremental), each
/// counted until every job it caused has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand: see docs/benchmarks.md"]
async fn repository_operations_per_backup() {
    let real = std::env::var_os("RM_OPS_RESTIC").map_or_else(restic_bin, PathBuf::from);
    let env = Env::start().await.unwrap();
    let counting = CountingRestic::new(&env.path("bin"), &real);
    let rest_log = env.path("rclone-requests.log");
    let server = RestServer::start_logged(&env.path("repos"), false, Some(&rest_log))
        .await
        .unwrap();
    let agent = env.agent("web-1", &counting.bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env
        .add_repo("ops", &server.url("ops"), Some(&host))
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    env.attach_full(&repo, &host).await;
    let src = env.path("src");
    make_tree(
        &src,
        &(0..200)
            .map(|i| (format!("d{}/f{i}.bin", i % 10), 4096 + i * 37))
            .collect::<Vec<_>>()
            .iter()
            .map(|(p, n)| (p.as_str(), *n))
            .collect::<Vec<_>>(),
    );
    let counter = Counter {
        restic: &counting,
        rest_log: &rest_log,
    };
    println!("restic: {}", real.display());
    for n in 1..=3 {
        std::fs::write(src.join(format!("new-{n}.txt")), format!("run {n}")).unwrap();
        let m = counter.mark(&env, &host).await;
        let created = env.job(&host, &repo, backup(&[&src])).await;
        let job = env.finished(&created.job_id).await;
        assert_eq!(job.status, "succeeded", "{job:?}");
        let cost = counter.since(&env, &host, &m).await;
        println!(
            "backup {n}: jobs {} · restic invocations {} {:?} · REST requests {} {:?}",
            cost.jobs,
            cost.restic.len(),
            tally(&cost.restic),
            cost.rest.len(),
            tally(&cost.rest),
        );
    }
}
