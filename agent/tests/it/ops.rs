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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_lists_its_own_snapshot_without_a_refresh_on_restic_0_14() {
    backup_lists_its_own_snapshot(restic_bin(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_lists_its_own_snapshot_without_a_refresh_on_restic_0_18() {
    if let Some(bin) = restic_018() {
        backup_lists_its_own_snapshot(bin, true).await;
    }
}

/// After the repository's first listing, a backup's snapshot is in the
/// list with restic's id, time, paths, tags and host, from the backup's
/// own summary: no job but the backup, one restic run.
async fn backup_lists_its_own_snapshot(real: PathBuf, exact: bool) {
    let env = Env::start().await.unwrap();
    let counting = CountingRestic::new(&env.path("bin"), &real);
    let agent = env.agent("web-1", &counting.bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("own", &host).await;
    env.attach_full(&repo, &host).await;
    let src = env.path("src");
    make_tree(&src, &[("a.bin", 5000), ("b/c.txt", 100)]);
    // the first backup of a repository never listed lists it once
    let first = env.job(&host, &repo, backup(&[&src])).await;
    assert_eq!(env.finished(&first.job_id).await.status, "succeeded");
    let before = quiet(&env, &host).await.len();

    let calls = counting.calls().len();
    std::fs::write(src.join("d.txt"), "more").unwrap();
    let params = rm_bus::msg::JobParams::Backup {
        paths: vec![src.display().to_string()],
        excludes: vec![],
        tags: vec!["nightly".into(), "own".into()],
        one_file_system: false,
        host_name: None,
    };
    let created = env.job(&host, &repo, params).await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    // a refresh would be queued in the commit the result's ack follows
    assert_eq!(
        quiet(&env, &host).await.len(),
        before + 1,
        "only the backup ran"
    );
    assert_eq!(
        ran_since(&counting, calls),
        vec!["backup"],
        "one restic run for one backup"
    );

    let listed = env.snapshots(&real, "own");
    let newest = listed
        .iter()
        .max_by_key(|s| s["time"].as_str().unwrap().to_owned())
        .unwrap();
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    let cached = rm_store::snapshots::list(&mut c, &repo, None)
        .await
        .unwrap();
    assert_eq!(cached.len(), 2, "{cached:?}");
    let mine = &cached[0];
    let real_id = newest["id"].as_str().unwrap();
    let real_ms = newest["time"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    if exact {
        assert_eq!(mine.snapshot_id, real_id);
        assert_eq!(mine.time, real_ms, "restic's own snapshot time");
    } else {
        // restic 0.14 prints the short id and no start time
        assert!(
            real_id.starts_with(&mine.snapshot_id),
            "{} vs {real_id}",
            mine.snapshot_id
        );
        assert_eq!(mine.snapshot_id.len(), 8);
        assert!(
            (mine.time - real_ms).abs() < 5_000,
            "{} vs {real_ms}",
            mine.time
        );
    }
    assert_eq!(mine.short_id, &real_id[..8]);
    assert_eq!(mine.hostname, newest["hostname"].as_str().unwrap());
    let paths: Vec<String> = serde_json::from_str(&mine.paths_json).unwrap();
    assert_eq!(serde_json::json!(paths), newest["paths"]);
    let tags: Vec<String> = serde_json::from_str(&mine.tags_json).unwrap();
    assert_eq!(serde_json::json!(tags), newest["tags"]);
    let h = rm_store::health::latest(&mut c, &repo).await.unwrap();
    assert_eq!(h.snapshot_count, Some(2));
}

/// The restic subcommands the counting wrapper saw from `from` on.
fn ran_since(counting: &CountingRestic, from: usize) -> Vec<String> {
    counting.calls()[from..]
        .iter()
        .map(|c| subcommand(c))
        .collect()
}

/// An agent with a counting restic and a repository it reaches with full
/// access, listed once (its first backup's refresh has ended).
async fn counted_env(real: &Path) -> (Env, CountingRestic, Agent, String, PathBuf) {
    let env = Env::start().await.unwrap();
    let counting = CountingRestic::new(&env.path("bin"), real);
    let agent = env.agent("web-1", &counting.bin).await.unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("locks", &host).await;
    env.attach_full(&repo, &host).await;
    let src = env.path("src");
    make_tree(&src, &[("a.bin", 5000), ("b/c.txt", 100)]);
    let first = env.job(&host, &repo, backup(&[&src])).await;
    assert_eq!(env.finished(&first.job_id).await.status, "succeeded");
    quiet(&env, &host).await;
    (env, counting, agent, repo, src)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_sequence_of_jobs_runs_no_stale_lock_check() {
    let (env, counting, agent, repo, src) = counted_env(&restic_bin()).await;
    let host = agent.host_id.clone();
    let from = counting.calls().len();
    for params in [
        backup(&[&src]),
        backup(&[&src]),
        rm_bus::msg::JobParams::Snapshots { host_name: None },
        rm_bus::msg::JobParams::Stats {
            mode: rm_bus::msg::StatsMode::RawData,
            snapshot: None,
        },
    ] {
        let created = env.job(&host, &repo, params).await;
        let job = env.finished(&created.job_id).await;
        assert_eq!(job.status, "succeeded", "{job:?}");
    }
    assert_eq!(
        ran_since(&counting, from),
        vec!["backup", "backup", "snapshots", "stats"],
        "each job opened the repository once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_restic_leaves_a_lock_the_next_job_removes_and_then_jobs_run_alone() {
    let bin = restic_bin();
    let (env, counting, agent, repo, _) = counted_env(&bin).await;
    let host = agent.host_id.clone();
    let watcher = env
        .bus
        .connect_role(rm_bus::creds::Role::Web)
        .await
        .unwrap();
    let mut progress = watcher
        .subscribe(rm_bus::subject::agent_any_job(
            rm_bus::subject::JobTopic::Progress,
        ))
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    // a backup restic needs minutes for (16 GiB of sparse zeros), cancelled
    // once it reads: the agent kills restic, whose lock stays behind
    let big = env.path("sparse");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::File::create(big.join("huge.img"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let created = env.job(&host, &repo, backup(&[&big])).await;
    loop {
        let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut progress))
            .await
            .expect("progress of the big backup")
            .unwrap();
        let p: rm_bus::msg::Progress = rm_bus::msg::decode("progress", &m.payload).unwrap();
        if m.subject.as_str().contains(&created.job_id) && p.bytes_done.unwrap_or(0) > 0 {
            break;
        }
    }
    let _: rm_controlplane::api::JobState = env
        .call(
            rm_controlplane::api::JOB_CANCEL,
            rm_controlplane::api::JobRef {
                job_id: created.job_id.clone(),
            },
        )
        .await;
    assert_eq!(env.finished(&created.job_id).await.status, "cancelled");
    let locks = env.restic(&bin, "locks", &["list", "locks", "--no-lock"]);
    assert_eq!(
        String::from_utf8_lossy(&locks.stdout).lines().count(),
        1,
        "the killed restic left its lock"
    );

    // the next job removes it first (a prune needs the repository alone)
    let from = counting.calls().len();
    let created = env
        .job(&host, &repo, rm_bus::msg::JobParams::Prune {})
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    assert_eq!(
        ran_since(&counting, from)[..4],
        ["list locks", "cat lock", "unlock", "prune"],
        "stale locks removed before the prune"
    );
    quiet(&env, &host).await;
    let locks = env.restic(&bin, "locks", &["list", "locks", "--no-lock"]);
    assert_eq!(
        String::from_utf8_lossy(&locks.stdout).trim(),
        "",
        "no lock left"
    );

    // and the jobs after it open the repository once each again
    let from = counting.calls().len();
    let created = env.job(&host, &repo, backup(&[&env.path("src")])).await;
    assert_eq!(env.finished(&created.job_id).await.status, "succeeded");
    assert_eq!(ran_since(&counting, from), vec!["backup"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_agent_died_under_a_job_its_next_job_removes_the_stale_lock() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let counting = CountingRestic::new(&env.path("bin"), &bin);
    let (host, dir) = env.enroll("crash-1").await.unwrap();
    let mut proc = AgentProc::start(&dir, &env.bus.url(), &counting.bin).unwrap();
    env.wait_online(&host).await;
    let repo = env.new_repo("crash", &host).await;
    env.attach_full(&repo, &host).await;

    // the agent (and its restic) die in the middle of a backup
    let big = env.path("sparse");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::File::create(big.join("huge.img"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let created = env.job(&host, &repo, backup(&[&big])).await;
    let needle = big.display().to_string();
    eventually("restic holds its lock", || async {
        let out = env.restic(&bin, "crash", &["list", "locks", "--no-lock"]);
        let locked = !String::from_utf8_lossy(&out.stdout).trim().is_empty();
        (locked && !restic_processes(&needle).is_empty()).then_some(())
    })
    .await;
    let pids = restic_processes(&needle);
    proc.kill9();
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    // gone for good (reaped, not a zombie whose pid still answers)
    eventually("restic is gone", || async {
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    })
    .await;
    let locks = env.restic(&bin, "crash", &["list", "locks", "--no-lock"]);
    assert_eq!(String::from_utf8_lossy(&locks.stdout).lines().count(), 1);

    // restarted, the agent reports the interrupted job and its next job
    // removes the stale lock before it runs
    let _proc = AgentProc::start(&dir, &env.bus.url(), &counting.bin).unwrap();
    assert_eq!(env.finished(&created.job_id).await.status, "failed");
    let from = counting.calls().len();
    let created = env
        .job(&host, &repo, rm_bus::msg::JobParams::Prune {})
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(
        job.status,
        "succeeded",
        "{job:?}\n{}",
        std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
    );
    let ran = ran_since(&counting, from);
    let at = ran.iter().position(|c| c == "prune").expect("prune ran");
    assert_eq!(
        ran[..=at]
            .iter()
            .filter(|c| *c != "version")
            .collect::<Vec<_>>(),
        ["list locks", "cat lock", "unlock", "prune"],
        "{ran:?}"
    );
}
