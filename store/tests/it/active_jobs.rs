//! The statements that look for active jobs (queued, dispatched, running)
//! read migration 27's partial indexes of active jobs, not indexes of every
//! job ever stored; a result removes its job from them. And the refresh
//! sweep, every tick too, reads the online hosts once, not per repository,
//! and picks the repositories whose refresh a host can run.

use rm_store::jobs::{self, Finish, JobStatus};
use rm_store::{fleet, hosts, results};

use super::{add_repo, backup, new_job, plan_as_analysed, plan_of, store};

/// Each statement names the partial index it must search. Without the
/// `status IN ('queued', 'dispatched', 'running')` term a statement
/// writes, SQLite cannot use the partial index and falls back to the
/// indexes of all jobs.
#[tokio::test]
async fn statements_that_look_for_active_jobs_search_the_partial_indexes_of_active_jobs() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    let repo_conflict = format!(
        "SELECT 1 FROM jobs AS j WHERE j.id = ? AND {}",
        jobs::REPO_CONFLICT
    );
    let cases: [(&str, &str, &str); 8] = [
        (
            "queued for a host",
            jobs::QUEUED_FOR_SQL,
            "jobs_exec_active",
        ),
        (
            "dispatchable for a host",
            jobs::DISPATCHABLE_FOR_SQL,
            "jobs_exec_active",
        ),
        ("active on a host", jobs::ACTIVE_FOR_SQL, "jobs_exec_active"),
        (
            "unfinished on a repository",
            jobs::UNFINISHED_ON_REPO_SQL,
            "jobs_repo_active",
        ),
        ("repository conflict", &repo_conflict, "jobs_repo_active"),
        (
            "the job a scheduled claim waits for",
            jobs::SCHEDULED_BUSY_SQL,
            "jobs_repo_active",
        ),
        (
            "a host's running job",
            fleet::RUNNING_JOB_SQL,
            "jobs_host_active",
        ),
        (
            "a host's job counts",
            results::SUMMARY_SQL,
            "jobs_host_active",
        ),
    ];
    for (what, sql, index) in cases {
        let plan = plan_of(&mut c, sql).await;
        assert!(
            plan.iter()
                .any(|l| l.contains(&format!("INDEX {index} ")) && l.contains("status=?")),
            "{what} does not search {index}: {plan:?}"
        );
    }
}

/// Every start of the control plane releases the claims an earlier
/// process left: on queued jobs, found by their status, not by a walk of
/// every job ever stored (1.9 million rows in stop 57's store).
#[tokio::test]
async fn releasing_every_claim_at_start_reads_queued_jobs_only() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    let plan = plan_of(&mut c, jobs::RELEASE_ALL_CLAIMS_SQL).await;
    assert_reads_active_jobs_only(&plan, "the release of claims");
}

/// The deadline sweep runs every heartbeat interval. With the statistics
/// of an analysed store of 1,000,000 jobs (`ANALYZE`, as `bench/fleet-ui`
/// runs; these are that store's figures), SQLite walked every job ever
/// stored in `created_at` order for it (5.5 s per sweep on that store).
/// It reads the active ones only, with statistics and without.
#[tokio::test]
async fn the_deadline_sweep_reads_active_jobs_only_even_on_an_analysed_store() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    let plan = plan_of(&mut c, jobs::OVERDUE_SQL).await;
    assert_reads_active_jobs_only(&plan, "the deadline sweep without statistics");
    drop(c);
    let mut w = s.write().await.unwrap();
    plan_as_analysed(
        &mut w,
        &[
            ("jobs", "sqlite_autoindex_jobs_1", "1074794 1"),
            ("jobs", "jobs_created_id", "1074794 27 1"),
            ("jobs", "jobs_host_created_id", "1074794 110 1 1"),
            ("jobs", "jobs_status_created", "1074794 358265 17"),
            ("jobs", "jobs_finished", "1074794 1 1 1 1 1"),
            ("jobs", "jobs_schedule", "1074794 110 1"),
            ("jobs", "jobs_repo_created", "1074794 10748 2 1"),
            ("hosts", "sqlite_autoindex_hosts_1", "10000 1"),
            ("hosts", "hosts_status", "10000 2500 2500 2500 1"),
        ],
    )
    .await;
    let plan = plan_of(&mut w, jobs::OVERDUE_SQL).await;
    assert_reads_active_jobs_only(&plan, "the deadline sweep with statistics");
}

fn assert_reads_active_jobs_only(plan: &[String], what: &str) {
    assert!(
        !plan.iter().any(|l| l.starts_with("SCAN j")),
        "{what}: walks the jobs table: {plan:?}"
    );
    assert!(
        plan.iter()
            .any(|l| l.starts_with("SEARCH j") && l.contains(" USING ") && l.contains("status=?")),
        "{what}: does not search jobs by status: {plan:?}"
    );
}

/// The partial indexes answer like the full ones did: an active job is
/// found through them, and once it has a result it is not.
#[tokio::test]
async fn a_job_leaves_the_active_lookups_when_its_result_is_in() {
    let (s, _d) = store().await;
    let mut w = s.write().await.unwrap();
    hosts::insert(&mut w, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    let params = backup();
    jobs::insert(&mut w, &new_job("j1", "h1", &params, 1_000))
        .await
        .unwrap();
    assert_eq!(ids(jobs::queued_for(&mut w, "h1").await.unwrap()), ["j1"]);
    assert_eq!(hosts::summary(&mut w, "h1").await.unwrap().queued_jobs, 1);
    assert!(jobs::set_dispatched(&mut w, "j1", 1_100).await.unwrap());
    assert!(jobs::queued_for(&mut w, "h1").await.unwrap().is_empty());
    assert_eq!(ids(jobs::active_for(&mut w, "h1").await.unwrap()), ["j1"]);
    assert_eq!(
        fleet::running_job(&mut w, "h1").await.unwrap().map(|r| r.0),
        Some("j1".to_owned())
    );
    let f = Finish {
        finished_at: 2_000,
        ..Finish::default()
    };
    assert!(
        jobs::finish(&mut w, "j1", JobStatus::Succeeded, &f)
            .await
            .unwrap()
    );
    assert!(jobs::active_for(&mut w, "h1").await.unwrap().is_empty());
    assert_eq!(fleet::running_job(&mut w, "h1").await.unwrap(), None);
    let sum = hosts::summary(&mut w, "h1").await.unwrap();
    assert_eq!((sum.queued_jobs, sum.running_jobs), (0, 0));
    assert!(
        jobs::overdue(&mut w, i64::MAX / 4, 0, 1)
            .await
            .unwrap()
            .is_empty()
    );
}

fn ids(v: Vec<jobs::Job>) -> Vec<String> {
    v.into_iter().map(|j| j.id).collect()
}

/// The periodic refresh sweep runs every heartbeat interval. Written with
/// a correlated `EXISTS` per repository, SQLite planned the hosts' status
/// index as its outer loop on a store with statistics and read every
/// online host for every repository (36–92 s a sweep at 19,000, stop 59).
/// The online hosts and their repositories are read once, as lists.
#[tokio::test]
async fn the_refresh_sweep_reads_the_online_hosts_once_not_per_repository() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    let plan = plan_of(&mut c, rm_store::refresh::DUE_SQL).await;
    assert!(
        !plan.iter().any(|l| l.contains("CORRELATED")),
        "a subquery per repository: {plan:?}"
    );
    assert_eq!(
        plan.iter().filter(|l| l.contains("LIST SUBQUERY")).count(),
        2,
        "{plan:?}"
    );
}

/// Where a refresh runs is asked for each repository the sweep queues
/// (up to 256 a tick): from the repository's own hosts, not by reading
/// every online host of the fleet.
#[tokio::test]
async fn the_refresh_runner_is_found_from_the_repositorys_hosts_not_every_online_host() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    let plan = plan_of(&mut c, rm_store::refresh::RUNNER_SQL).await;
    assert!(
        !plan.iter().any(|l| l.contains("hosts_status")),
        "the online hosts read: {plan:?}"
    );
    assert!(
        plan.iter()
            .any(|l| l.contains("SEARCH hr USING") && l.contains("repo_id=?")),
        "{plan:?}"
    );
}

/// The sweep picks due repositories with one statement for all of them
/// (`DUE_SQL`) and then asks where each one's refresh runs (`runner`):
/// both must say the same of every repository, or a due repository finds
/// no host (and takes a place every tick) or one that could run waits.
#[tokio::test]
async fn a_repository_is_due_for_its_refresh_exactly_where_a_host_can_run_it() {
    use rm_store::repos::{self, Access};
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    for (id, status) in [
        ("m-on", "online"),
        ("m-off", "offline"),
        ("a-on", "online"),
        ("a-off", "offline"),
        ("b-on", "online"),
    ] {
        hosts::insert(&mut tx, id, id, "alice", 0).await.unwrap();
        sqlx::query("UPDATE hosts SET status = ? WHERE id = ?")
            .bind(status)
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    // (repository, its maintenance host, its attached hosts, the runner)
    type Case<'a> = (&'a str, Option<&'a str>, &'a [&'a str], Option<&'a str>);
    let cases: [Case; 6] = [
        ("r-maint-on", Some("m-on"), &["m-on"], Some("m-on")),
        (
            "r-maint-off-attached-on",
            Some("m-off"),
            &["m-off", "a-on"],
            Some("a-on"),
        ),
        ("r-all-off", Some("m-off"), &["m-off", "a-off"], None),
        (
            "r-attached-on",
            None,
            &["a-off", "b-on", "a-on"],
            Some("a-on"),
        ),
        ("r-no-hosts", None, &[], None),
        (
            "r-maint-first",
            Some("m-on"),
            &["a-on", "m-on"],
            Some("m-on"),
        ),
    ];
    for (repo, maint, attached, _) in cases {
        add_repo(&mut tx, repo).await;
        for h in attached {
            let access = if Some(*h) == maint {
                Access::Full
            } else {
                Access::AppendOnly
            };
            repos::attach(&mut tx, h, repo, access, b"a", 0)
                .await
                .unwrap();
        }
        repos::set_maintenance_host(&mut tx, repo, maint)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let mut c = s.read().await.unwrap();
    // created at 0, never refreshed: past every slot after ten periods
    let mut due = rm_store::refresh::due(&mut c, 10_000, 1_000, 100)
        .await
        .unwrap();
    due.sort();
    let mut runnable = Vec::new();
    for (repo, _, _, want) in cases {
        let got = rm_store::refresh::runner(&mut c, repo).await.unwrap();
        assert_eq!(got.as_deref(), want, "where {repo}'s refresh runs");
        if got.is_some() {
            runnable.push(repo.to_owned());
        }
    }
    runnable.sort();
    assert_eq!(due, runnable, "due, of repositories all past their time");
}
