//! Repository state without a second fleet of restic runs: a backup's
//! snapshot comes from its own summary (no `snapshots` job), a backup that
//! made no snapshot queues nothing, and the full refresh (snapshots, both
//! stats modes, locks) runs only when a repository was never listed.

use rm_bus::JobId;
use rm_bus::msg::*;
use rm_controlplane::api;
use rm_testkit::TestBus;

use crate::support::*;

async fn one_host() -> (TestBus, tempfile::TempDir, Cp, Agent, String) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut a = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[&a], &[]).await;
    a.hello(0, vec![], vec![]).await;
    (bus, dir, cp, a, repo)
}

fn create(host: &Agent, repo: &str, params: JobParams) -> api::JobCreate {
    api::JobCreate {
        host_id: host.host_id(),
        repo_id: repo.into(),
        params,
        timeout_secs: None,
        target_host_id: None,
    }
}

/// Runs a backup on `a` to its end with `summary` in its `done`.
async fn backup_done(
    cp: &Cp,
    a: &mut Agent,
    repo: &str,
    params: JobParams,
    summary: Option<serde_json::Value>,
) -> String {
    let created: api::JobCreated = cp.call(api::JOB_CREATE, create(a, repo, params)).await;
    let spec = a.expect_dispatch().await;
    assert_eq!(spec.job_id.as_str(), created.job_id);
    let job = JobId::parse(&created.job_id).unwrap();
    a.send_started(&job, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let mut d = done_msg(&job, JobOutcome::Succeeded);
    d.summary = summary;
    let ack = a.send_done(&d).await.unwrap();
    assert!(ack.ok, "{ack:?}");
    created.job_id
}

/// Answers `n` dispatched refresh jobs; the snapshot listing is `listing`.
pub async fn answer_refresh(a: &mut Agent, n: usize, listing: serde_json::Value) -> Vec<JobKind> {
    let mut kinds = Vec::new();
    for _ in 0..n {
        let spec = a.expect_dispatch().await;
        let summary = match spec.params.kind() {
            JobKind::Snapshots => listing.clone(),
            JobKind::Locks => serde_json::json!([]),
            JobKind::Stats => serde_json::json!({"total_size": 1}),
            other => panic!("unexpected {other:?}"),
        };
        kinds.push(spec.params.kind());
        a.send_started(&spec.job_id, JobOrigin::Dispatch, None)
            .await
            .unwrap();
        let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
        d.summary = Some(summary);
        a.send_done(&d).await.unwrap();
    }
    kinds.sort_by_key(|k| format!("{k:?}"));
    kinds
}

const REFRESH: [JobKind; 4] = [
    JobKind::Locks,
    JobKind::Snapshots,
    JobKind::Stats,
    JobKind::Stats,
];

async fn jobs_of(cp: &Cp, host: &str) -> Vec<rm_store::jobs::Job> {
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    rm_store::jobs::list_for_host(&mut c, host, None, 100)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_backup_that_made_no_snapshot_queues_no_refresh() {
    let (_bus, _dir, cp, mut a, repo) = one_host().await;
    backup_done(&cp, &mut a, &repo, backup_params(), None).await;
    // a refresh is queued in the commit the result's ack follows
    assert_eq!(jobs_of(&cp, &a.host_id()).await.len(), 1, "only the backup");
}

#[tokio::test]
async fn a_backup_adds_its_own_snapshot_to_the_list_and_the_count_without_a_refresh() {
    let (_bus, _dir, cp, mut a, repo) = one_host().await;
    // the repository was never listed: its first backup lists it once
    backup_done(
        &cp,
        &mut a,
        &repo,
        backup_params(),
        Some(serde_json::json!({"snapshot_id": "a".repeat(64)})),
    )
    .await;
    let listing = serde_json::json!([
        {"time": "2026-11-25T10:00:00Z", "id": "a".repeat(64), "short_id": "aaaaaaaa", "hostname": a.host_id(), "paths": ["/data"]},
        {"time": "2026-11-25T11:00:00Z", "id": "b".repeat(64), "short_id": "bbbbbbbb", "hostname": "other", "paths": ["/srv"]}
    ]);
    assert_eq!(answer_refresh(&mut a, 4, listing).await, REFRESH);
    let before = jobs_of(&cp, &a.host_id()).await.len();

    // the next backup: restic 0.18's summary names the snapshot and its time
    let id = format!("e876{}", "0".repeat(60));
    let params = JobParams::Backup {
        paths: vec!["/data".into(), "/etc".into()],
        excludes: vec![],
        tags: vec!["nightly".into()],
        one_file_system: false,
        host_name: None,
    };
    let job = backup_done(
        &cp,
        &mut a,
        &repo,
        params,
        Some(serde_json::json!({
            "message_type": "summary", "files_new": 1, "total_duration": 0.7,
            "backup_start": "2026-12-01T21:25:53.539799577Z",
            "backup_end": "2026-12-01T21:25:54.256797919Z",
            "snapshot_id": id,
        })),
    )
    .await;
    // no refresh joined it (it is queued in the commit the ack follows)
    assert_eq!(jobs_of(&cp, &a.host_id()).await.len(), before + 1);
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let snaps = rm_store::snapshots::list(&mut c, &repo, None)
        .await
        .unwrap();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let s = &snaps[0];
    assert_eq!(s.snapshot_id, id);
    assert_eq!(s.short_id, "e8760000");
    assert_eq!(s.time, 1_796_160_353_539, "restic's snapshot time");
    assert_eq!(s.hostname, a.host_id(), "the host's restic host name");
    assert_eq!(s.paths_json, r#"["/data","/etc"]"#);
    assert_eq!(s.tags_json, r#"["nightly"]"#);
    let h = rm_store::health::latest(&mut c, &repo).await.unwrap();
    assert_eq!(h.snapshot_count, Some(3), "the cache's count");
    let rows: Vec<Option<String>> =
        sqlx::query_scalar("SELECT source_job_id FROM repo_health WHERE repo_id = ?")
            .bind(&repo)
            .fetch_all(&mut *c)
            .await
            .unwrap();
    assert!(
        !rows.contains(&Some(job.clone())),
        "a backup writes no health row: {rows:?}"
    );
}

async fn health_rows(cp: &Cp, repo: &str) -> i64 {
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM repo_health WHERE repo_id = ?")
        .bind(repo)
        .fetch_one(&mut *c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_size_measurement_stays_the_latest_through_backups_after_it() {
    let (_bus, _dir, cp, mut a, repo) = one_host().await;
    let snap = |n: u32| Some(serde_json::json!({"snapshot_id": format!("{n:064x}")}));
    backup_done(&cp, &mut a, &repo, backup_params(), snap(0)).await;
    // the first backup's refresh: the listing, both stats modes, locks
    let listing = serde_json::json!([
        {"time": "2026-11-25T10:00:00Z", "id": format!("{:064x}", 0), "hostname": a.host_id(), "paths": ["/data"]}
    ]);
    assert_eq!(answer_refresh(&mut a, 4, listing).await, REFRESH);
    let before = health_rows(&cp, &repo).await;
    // more backups than the newest health rows `latest` reads (200): each
    // one's count row used to push the sizes out of them
    for n in 1..=201 {
        backup_done(&cp, &mut a, &repo, backup_params(), snap(n)).await;
    }
    assert_eq!(
        health_rows(&cp, &repo).await,
        before,
        "backups add no health rows"
    );
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let h = rm_store::health::latest(&mut c, &repo).await.unwrap();
    assert_eq!(
        h.snapshot_count,
        Some(202),
        "the listed one and the backups'"
    );
    assert_eq!(
        h.total_size,
        Some(1),
        "the stats measurement is still the latest"
    );
    assert_eq!(h.lock_count, Some(0));
}

#[tokio::test]
async fn without_restic_s_start_time_the_snapshot_time_is_counted_back_from_the_end() {
    let (_bus, _dir, cp, mut a, repo) = one_host().await;
    // restic 0.14: a short id and only the duration
    backup_done(
        &cp,
        &mut a,
        &repo,
        backup_params(),
        Some(serde_json::json!({"snapshot_id": "75b87a72", "total_duration": 0.324309455})),
    )
    .await;
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let snaps = rm_store::snapshots::list(&mut c, &repo, None)
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1);
    // done_msg ends at 2,000 ms
    assert_eq!(
        (snaps[0].snapshot_id.as_str(), snaps[0].time),
        ("75b87a72", 2_000 - 324)
    );
}

/// A repository with `maint` as its online maintenance host (full access).
async fn maintenance_env() -> (TestBus, tempfile::TempDir, Cp, Agent, String) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(&bus, dir.path().into(), CpOptions::default())
        .await
        .unwrap();
    let mut maint = Agent::enroll(&bus, &cp, "maint").await.unwrap();
    let repo = repo_with(&cp, "main", "pw", &[], &[&maint]).await;
    let _: api::Done = cp
        .call(
            api::REPO_MAINTENANCE,
            api::RepoMaintenance {
                repo_id: repo.clone(),
                host_id: Some(maint.host_id()),
            },
        )
        .await;
    maint.hello(0, vec![], vec![]).await;
    (bus, dir, cp, maint, repo)
}

/// Runs `params` on `a` to a successful end.
async fn run_ok(cp: &Cp, a: &mut Agent, repo: &str, params: JobParams, summary: serde_json::Value) {
    let created: api::JobCreated = cp.call(api::JOB_CREATE, create(a, repo, params)).await;
    let spec = a.expect_dispatch().await;
    assert_eq!(spec.job_id.as_str(), created.job_id);
    a.send_started(&spec.job_id, JobOrigin::Dispatch, None)
        .await
        .unwrap();
    let mut d = done_msg(&spec.job_id, JobOutcome::Succeeded);
    d.summary = Some(summary);
    a.send_done(&d).await.unwrap();
}

#[tokio::test]
async fn a_prune_and_a_check_each_refresh_the_repository() {
    let (_bus, _dir, cp, mut maint, repo) = maintenance_env().await;
    run_ok(
        &cp,
        &mut maint,
        &repo,
        JobParams::Prune {},
        serde_json::json!({"output": []}),
    )
    .await;
    assert_eq!(
        answer_refresh(&mut maint, 4, serde_json::json!([])).await,
        REFRESH
    );
    run_ok(
        &cp,
        &mut maint,
        &repo,
        JobParams::Check {
            read_data_subset: None,
        },
        serde_json::json!({"num_errors": 0}),
    )
    .await;
    assert_eq!(
        answer_refresh(&mut maint, 4, serde_json::json!([])).await,
        REFRESH
    );
}

#[tokio::test]
async fn an_operator_refresh_runs_on_the_maintenance_host_once_at_a_time() {
    let (bus, _dir, cp, mut maint, repo) = maintenance_env().await;
    let asked: api::RepoRefreshed = cp
        .call(
            api::REPO_REFRESH,
            api::RepoRefresh {
                repo_id: repo.clone(),
            },
        )
        .await;
    assert_eq!(asked.host_id, maint.host_id());
    assert_eq!(asked.job_ids.len(), 4, "{asked:?}");
    // asked again while it waits: nothing more is queued
    let again: api::RepoRefreshed = cp
        .call(
            api::REPO_REFRESH,
            api::RepoRefresh {
                repo_id: repo.clone(),
            },
        )
        .await;
    assert!(again.job_ids.is_empty(), "{again:?}");
    let listing = serde_json::json!([
        {"time": "2026-11-25T10:00:00Z", "id": "a".repeat(64), "short_id": "aaaaaaaa", "hostname": "h", "paths": ["/data"]}
    ]);
    assert_eq!(answer_refresh(&mut maint, 4, listing).await, REFRESH);
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    assert_eq!(rm_store::snapshots::count(&mut c, &repo).await.unwrap(), 1);
    assert!(
        rm_store::refresh::last_queued(&mut c, &repo)
            .await
            .unwrap()
            .is_some()
    );
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'repo.refresh'")
            .fetch_one(&mut *c)
            .await
            .unwrap();
    assert_eq!(audited, 2);
    drop(c);
    // no host online: refused with the reason
    let idle = Agent::enroll(&bus, &cp, "idle").await.unwrap();
    let repo = repo_with(&cp, "quiet", "pw", &[&idle], &[]).await;
    let err = cp
        .call_raw::<_, api::RepoRefreshed>(
            api::REPO_REFRESH,
            api::RepoRefresh {
                repo_id: repo.clone(),
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code, "conflict", "{err:?}");
    assert!(err.message.contains("online"), "{err:?}");
}

/// When each repository's first refresh jobs were queued (ms), by repository.
async fn first_refresh_queued(cp: &Cp) -> std::collections::HashMap<String, i64> {
    let db = cp.db().await;
    let mut c = db.read().await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT repo_id, MIN(created_at) FROM jobs WHERE origin = 'system' GROUP BY repo_id",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// A control plane whose sweeper ticks every `tick` and queues the
/// periodic refresh of at most `per_tick` repositories a tick, each due
/// `every` after its last; agents' heartbeats are never missed (the tests'
/// agents send none).
async fn refreshing(
    tick: std::time::Duration,
    every: std::time::Duration,
    per_tick: usize,
) -> (TestBus, tempfile::TempDir, Cp) {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CpOptions::default();
    opts.timings.heartbeat = tick;
    opts.timings.offline_after_missed = 10_000;
    opts.timings.health_every = every;
    opts.timings.health_refresh_per_tick = per_tick;
    let cp = Cp::start(&bus, dir.path().into(), opts).await.unwrap();
    (bus, dir, cp)
}

#[tokio::test]
async fn the_periodic_refresh_queues_a_few_repositories_a_tick_oldest_first_and_none_without_an_online_host()
 {
    let second = std::time::Duration::from_secs(1);
    let (bus, _dir, cp) = refreshing(second, second, 2).await;
    // the oldest repositories: their only host never comes online
    let idle = Agent::enroll(&bus, &cp, "idle").await.unwrap();
    let mut quiet = Vec::new();
    for name in ["q1", "q2", "q3"] {
        quiet.push(repo_with(&cp, name, "pw", &[&idle], &[]).await);
    }
    let mut a = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let mut repos = Vec::new();
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        repos.push(repo_with(&cp, name, "pw", &[&a], &[]).await);
        // created in this order, a few ms apart
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // each repository falls due at its own place in the period, not in
    // the order they were created; a period and a half after the last was
    // created every one has passed a place half a period or more after its
    // creation: all due, and queued oldest first
    tokio::time::sleep(second * 8 / 5).await;
    a.hello(0, vec![], vec![]).await;
    let first = eventually("every repository of the online host refreshed", || async {
        let first = first_refresh_queued(&cp).await;
        repos.iter().all(|r| first.contains_key(r)).then_some(first)
    })
    .await;
    for q in &quiet {
        assert!(!first.contains_key(q), "{q}: no online host, yet queued");
    }
    let at: Vec<i64> = repos.iter().map(|r| first[r]).collect();
    assert!(at.is_sorted(), "oldest first: {at:?}");
    // ticks are a second apart and one tick's write queues its two within
    // milliseconds: refreshes queued less than 100 ms apart were queued by
    // the same tick, two at most (a tick's own write split by the gap only
    // makes more groups)
    let mut ticks = vec![vec![at[0]]];
    for w in at.windows(2) {
        if w[1] - w[0] >= 100 {
            ticks.push(Vec::new());
        }
        ticks.last_mut().unwrap().push(w[1]);
    }
    assert!(ticks.iter().all(|t| t.len() <= 2), "{ticks:?}");
    assert!(ticks.len() >= 3, "{ticks:?}");
}

#[tokio::test]
async fn a_periodic_refresh_still_waiting_does_not_keep_the_tick_from_other_repositories() {
    let ms = std::time::Duration::from_millis;
    let (bus, _dir, cp) = refreshing(ms(300), ms(600), 1).await;
    let mut a = Agent::enroll(&bus, &cp, "web-1").await.unwrap();
    let busy = repo_with(&cp, "busy", "pw", &[&a], &[]).await;
    a.hello(0, vec![], vec![]).await;
    // its refresh is queued and never answered: it stays waiting, and the
    // repository falls due again and again
    eventually("the first refresh queued", || async {
        first_refresh_queued(&cp)
            .await
            .contains_key(&busy)
            .then_some(())
    })
    .await;
    let later = repo_with(&cp, "later", "pw", &[&a], &[]).await;
    // due after `later` was created, the waiting one is older each tick;
    // with one place a tick it must not keep it
    eventually("the later repository's refresh queued", || async {
        first_refresh_queued(&cp)
            .await
            .contains_key(&later)
            .then_some(())
    })
    .await;
}
