//! Fake "restic" scripts: to watch the process tree and the environment
//! the runner gives restic without depending on restic's behaviour.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rm_bus::msg::{ErrorKind, JobOutcome, JobParams, Retention};
use rm_bus::seal::RepoSecrets;
use rm_restic::{Repo, RunOptions};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Writes an executable script answering `version` like restic 0.14 and
/// running `body` otherwise.
pub fn script(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("fake-restic");
    let text = format!(
        "#!/bin/sh\nif [ \"$1\" = version ]; then\n  {}\n  exit 0\nfi\n{body}\n",
        if body.contains("rustic") {
            body
        } else {
            "echo 'restic 0.14.0 compiled with go1.19.8 on linux/amd64'"
        }
    );
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn secrets(dir: &Path) -> RepoSecrets {
    RepoSecrets {
        repository: format!("{}/repo-url-with-secret-token-XYZ", dir.display()),
        password: "pw-SECRET-123".into(),
        env: [
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "aws-SECRET".to_owned()),
            ("RESTIC_PASSWORD".to_owned(), "must-not-pass".to_owned()),
        ]
        .into(),
    }
}

/// A scratch directory and the test secrets under `dir`: what a [`Repo`]
/// borrows.
struct Place {
    scratch: PathBuf,
    secrets: RepoSecrets,
}

impl Place {
    fn new(dir: &Path) -> Self {
        let scratch = dir.join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        Self {
            scratch,
            secrets: secrets(dir),
        }
    }

    fn repo<'a>(&'a self, cache_dir: Option<&'a Path>) -> Repo<'a> {
        Repo {
            secrets: &self.secrets,
            cache_dir,
            scratch_dir: &self.scratch,
        }
    }
}

fn no_locks_opts(timeout: Duration) -> RunOptions {
    RunOptions {
        timeout,
        progress_interval: Duration::from_millis(100),
        lock_hostname: String::new(),
        remove_stale_locks: false,
    }
}

#[tokio::test]
async fn secrets_go_in_env_and_a_0600_file_never_argv() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("seen");
    let bin = script(
        d.path(),
        &format!(
            "{{ echo \"ARGS $*\"; env; echo \"PWMODE $(stat -c %a \"$RESTIC_PASSWORD_FILE\")\"; echo \"PW $(cat \"$RESTIC_PASSWORD_FILE\")\"; \
             echo \"STDIN $(cat | wc -c)\"; }} > {}\necho 'plain text out'\necho 'Fatal: boom' >&2\nexit 0",
            out.display()
        ),
    );
    let restic = rm_restic::Restic::detect(&bin).await.unwrap();
    let place = Place::new(d.path());
    let repo = place.repo(Some(Path::new("/tmp/some-cache")));
    let params = crate::support::backup(&[Path::new("/data")], Some("web-1"));
    let (res, events) = run_with(
        &restic,
        &repo,
        params,
        &no_locks_opts(Duration::from_secs(20)),
    )
    .await;
    assert_eq!(res.outcome, JobOutcome::Succeeded, "{res:?}");
    let seen = std::fs::read_to_string(&out).unwrap();
    let args = seen.lines().find(|l| l.starts_with("ARGS ")).unwrap();
    assert_eq!(
        args,
        "ARGS --cache-dir=/tmp/some-cache backup --json --host=web-1 -- /data"
    );
    assert!(!args.contains("SECRET"));
    assert!(seen.contains("RESTIC_REPOSITORY=") && seen.contains("repo-url-with-secret-token-XYZ"));
    assert!(seen.contains("AWS_SECRET_ACCESS_KEY=aws-SECRET"));
    assert!(seen.contains("RESTIC_PROGRESS_FPS="));
    assert!(
        !seen.contains("must-not-pass"),
        "RESTIC_PASSWORD from repo env passed through"
    );
    assert!(!seen.lines().any(|l| l.starts_with("RESTIC_PASSWORD=")));
    assert!(seen.contains("PWMODE 600"), "{seen}");
    assert!(seen.contains("PW pw-SECRET-123"));
    assert!(seen.contains("STDIN 0"));
    // password file removed afterwards
    assert_eq!(std::fs::read_dir(&place.scratch).unwrap().count(), 0);
    // log events: stdout text and stderr lines
    let logs = logs(&events);
    assert!(logs.contains(&"plain text out".to_owned()), "{logs:?}");
    assert!(logs.contains(&"Fatal: boom".to_owned()));
    assert_eq!(res.stderr_tail, vec!["Fatal: boom".to_owned()]);
}

/// Reads the fake's process group id from the file it writes.
async fn wait_for_pgid(path: &Path) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(p) = s.trim().parse()
        {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "fake restic did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hanging_tree(dir: &Path) -> (PathBuf, PathBuf) {
    let pgid_file = dir.join("pgid");
    // a grandchild that ignores SIGINT/SIGTERM, and the script itself waits
    let bin = script(
        dir,
        &format!(
            "trap '' INT TERM\ncut -d' ' -f5 /proc/$$/stat > {}.tmp && mv {0}.tmp {0}\n(trap '' INT TERM; sleep 300) &\nsleep 300\nwait",
            pgid_file.display()
        ),
    );
    (bin, pgid_file)
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let d = tempfile::tempdir().unwrap();
    let (bin, pgid_file) = hanging_tree(d.path());
    let restic = rm_restic::Restic::detect(&bin).await.unwrap();
    let place = Place::new(d.path());
    let repo = place.repo(None);
    let t0 = Instant::now();
    let (res, events) = run_with(
        &restic,
        &repo,
        JobParams::Prune {},
        &no_locks_opts(Duration::from_millis(1500)),
    )
    .await;
    let took = t0.elapsed();
    assert_eq!(
        (res.outcome, res.error_kind),
        (JobOutcome::Failed, Some(ErrorKind::Timeout)),
        "{res:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let pgid = wait_for_pgid(&pgid_file).await;
    assert!(pgid > 1);
    assert!(
        processes_in_group(pgid).is_empty(),
        "left over: {:?}",
        processes_in_group(pgid)
    );
    // prune has no JSON progress: elapsed-only progress every interval
    let p = progress(&events);
    assert!(p.len() >= 5, "{p:?}");
    assert!(
        p.windows(2)
            .all(|w| w[1].elapsed_ms >= w[0].elapsed_ms + 100),
        "{p:?}"
    );
    assert!(
        p.iter()
            .all(|p| p.ts_ms > 1_600_000_000_000 && p.percent_done.is_none())
    );
    assert_eq!(std::fs::read_dir(&place.scratch).unwrap().count(), 0);
}

#[tokio::test]
async fn cancel_kills_the_whole_process_tree() {
    let d = tempfile::tempdir().unwrap();
    let (bin, pgid_file) = hanging_tree(d.path());
    let restic = rm_restic::Restic::detect(&bin).await.unwrap();
    let place = Place::new(d.path());
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let pf = pgid_file.clone();
    let watcher = tokio::spawn(async move {
        let pgid = wait_for_pgid(&pf).await;
        c2.cancel();
        pgid
    });
    let repo = place.repo(None);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let res = rm_restic::run_job(
        &restic,
        &repo,
        &JobParams::Check {
            read_data_subset: None,
        },
        false,
        &no_locks_opts(Duration::from_secs(60)),
        tx,
        cancel,
    )
    .await;
    assert_eq!(
        (res.outcome, res.error_kind),
        (JobOutcome::Cancelled, Some(ErrorKind::Cancelled)),
        "{res:?}"
    );
    let pgid = watcher.await.unwrap();
    assert!(processes_in_group(pgid).is_empty());
}

#[tokio::test]
async fn refusals_happen_before_restic_is_spawned() {
    let d = tempfile::tempdir().unwrap();
    let bin = script(d.path(), "exit 0");
    let restic = rm_restic::Restic::detect(&bin).await.unwrap();
    // from now on any spawn would fail (SpawnFailed → Fatal)
    std::fs::remove_file(&bin).unwrap();
    let place = Place::new(d.path());
    let repo = place.repo(None);
    let opts = no_locks_opts(Duration::from_secs(10));
    let run = |params: JobParams, append_only: bool| {
        let (restic, repo, opts) = (&restic, &repo, &opts);
        async move {
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            rm_restic::run_job(
                restic,
                repo,
                &params,
                append_only,
                opts,
                tx,
                CancellationToken::new(),
            )
            .await
        }
    };
    let keep = Retention {
        keep_last: Some(3),
        ..Retention::default()
    };
    let forget = JobParams::Forget {
        retention: keep.clone(),
        host_name: "web-1".into(),
        prune: false,
    };
    let r = run(forget.clone(), true).await;
    assert_eq!(
        (r.outcome, r.error_kind),
        (JobOutcome::Failed, Some(ErrorKind::AppendOnly)),
        "{r:?}"
    );
    assert!(r.error.unwrap().contains("maintenance host"));
    assert_eq!(r.exit_code, None);
    let r = run(JobParams::Prune {}, true).await;
    assert_eq!(r.error_kind, Some(ErrorKind::AppendOnly));
    let r = run(JobParams::Unknown, false).await;
    assert_eq!(r.error_kind, Some(ErrorKind::InvalidRequest));
    let none = JobParams::Forget {
        retention: Retention::default(),
        host_name: "web-1".into(),
        prune: false,
    };
    let r = run(none, false).await;
    assert_eq!(r.error_kind, Some(ErrorKind::InvalidRequest), "{r:?}");
    // control: a job that does spawn fails differently
    let r = run(forget, false).await;
    assert_eq!(r.error_kind, Some(ErrorKind::Fatal), "{r:?}");
    assert!(r.error.unwrap().contains("could not start"));
    assert_eq!(std::fs::read_dir(&place.scratch).unwrap().count(), 0);
}

#[tokio::test]
async fn absurd_lines_are_cut_and_json_status_is_throttled() {
    let d = tempfile::tempdir().unwrap();
    // 40 MB on one line, then 200 status lines within ~1 s, then a summary
    let bin = script(
        d.path(),
        "head -c 40000000 /dev/zero | tr '\\0' 'x'; echo\n\
         i=0; while [ $i -lt 200 ]; do echo '{\"message_type\":\"status\",\"percent_done\":0.5,\"seconds_remaining\":9223372036854775808}'; i=$((i+1)); sleep 0.005; done\n\
         echo '{\"message_type\":\"summary\",\"snapshot_id\":\"abcd1234\"}'",
    );
    let restic = rm_restic::Restic::detect(&bin).await.unwrap();
    let place = Place::new(d.path());
    let repo = place.repo(None);
    let mut opts = no_locks_opts(Duration::from_secs(30));
    opts.progress_interval = Duration::from_millis(300);
    let (res, events) = run_with(
        &restic,
        &repo,
        crate::support::backup(&[Path::new("/x")], None),
        &opts,
    )
    .await;
    assert_eq!(res.outcome, JobOutcome::Succeeded, "{res:?}");
    assert_eq!(res.summary.unwrap()["snapshot_id"], "abcd1234");
    let p = progress(&events);
    let json: Vec<_> = p.iter().filter(|p| p.percent_done.is_some()).collect();
    assert!(!json.is_empty());
    assert!(
        json.iter()
            .all(|p| p.seconds_remaining == Some(9_223_372_036_854_775_808))
    );
    assert!(
        p.windows(2).all(|w| w[1].ts_ms - w[0].ts_ms >= 299),
        "{:?}",
        p.iter().map(|p| p.ts_ms).collect::<Vec<_>>()
    );
    // no log line was 40 MB
    assert!(logs(&events).iter().all(|l| l.len() < 10_000));
}

/// The nice value of the thread that runs this test (and so spawns restic):
/// `/proc/thread-self/stat`'s 19th field.
fn our_nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // after "pid (comm) ": state is the 3rd field, nice the 19th
    let rest = stat.rsplit_once(") ").unwrap().1;
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_yielding_restic_runs_ten_nice_steps_below_its_runner_at_the_lowest_best_effort_io_priority()
 {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("seen");
    // the fake's own nice value and I/O class, as the kernel reports them
    let bin = script(
        d.path(),
        &format!(
            "{{ echo \"NICE $(cut -d' ' -f19 /proc/$$/stat)\"; echo \"IO $(ionice -p $$)\"; }} > {}\nexit 0",
            out.display()
        ),
    );
    let place = Place::new(d.path());
    let repo = place.repo(None);
    let plain = rm_restic::Restic::detect(&bin).await.unwrap();
    let yielding = plain.clone().yielding();
    assert!(!plain.yields() && yielding.yields());
    let ours = our_nice();
    for (restic, nice, io) in [
        (&plain, ours, false),
        (&yielding, (ours + 10).min(19), true),
    ] {
        let params = crate::support::backup(&[Path::new("/data")], None);
        let (res, _) = run_with(
            restic,
            &repo,
            params,
            &no_locks_opts(Duration::from_secs(20)),
        )
        .await;
        assert_eq!(res.outcome, JobOutcome::Succeeded, "{res:?}");
        let seen = std::fs::read_to_string(&out).unwrap();
        let got: i64 = seen
            .lines()
            .find_map(|l| l.strip_prefix("NICE "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(got, nice, "yielding {}: {seen}", restic.yields());
        let io_line = seen.lines().find(|l| l.starts_with("IO ")).unwrap();
        // the lowest best-effort level, never the idle class (it starves)
        assert_eq!(
            io_line == "IO best-effort: prio 7",
            io,
            "yielding {}: {seen}",
            restic.yields()
        );
    }
}
