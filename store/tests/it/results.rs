//! The set-based statements of a batch of results (`rm_store::results`):
//! what they write, and that each finds its rows by key.

use rm_store::jobs::{self, Finish, JobStatus};
use rm_store::results::{self, FinishRow};

use super::{backup, new_job, store};

/// The query plan of `sql` (one bound parameter), one line per step.
async fn plan(c: &mut rm_store::Conn, sql: &'static str) -> Vec<String> {
    // our own constant statement, prefixed
    let explain = sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"));
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(explain)
        .bind("[]")
        .fetch_all(c)
        .await
        .unwrap();
    rows.into_iter().map(|r| r.3).collect()
}

/// With the status index in play SQLite ran the `json_each` scan once
/// per active job: 12 s for 256 results among 20,000 running jobs.
#[tokio::test]
async fn the_batched_finish_and_summary_find_each_row_by_its_key() {
    let (s, _dir) = store().await;
    let mut c = s.pool().acquire().await.unwrap();
    let finish = plan(&mut c, results::FINISH_SQL).await;
    assert!(
        finish
            .iter()
            .any(|l| l.starts_with("SEARCH jobs USING INDEX sqlite_autoindex_jobs_1 (id=?)")),
        "{finish:?}"
    );
    assert!(
        !finish.iter().any(|l| l.contains("jobs_status")),
        "{finish:?}"
    );
    let summary = plan(&mut c, results::SUMMARY_SQL).await;
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("SEARCH host_summary") && l.contains("(host_id=?)")),
        "{summary:?}"
    );
}

fn finish(at: i64) -> Finish {
    Finish {
        exit_code: Some(0),
        error_kind: None,
        error: None,
        summary_json: Some(r#"{"snapshot_id":"abc"}"#.into()),
        stderr_tail: None,
        restic_version: Some("0.18.0".into()),
        started_at: Some(at - 10),
        finished_at: at,
    }
}

#[tokio::test]
async fn finish_rows_writes_each_job_and_refuses_one_already_finished() {
    let (s, _dir) = store().await;
    let params = backup();
    let mut tx = s.write().await.unwrap();
    rm_store::hosts::insert(&mut tx, "h1", "web-1", "alice", 0)
        .await
        .unwrap();
    for id in ["j1", "j2", "j3"] {
        jobs::insert(&mut tx, &new_job(id, "h1", &params, 1))
            .await
            .unwrap();
    }
    jobs::set_running_row(&mut tx, "j1", 5).await.unwrap();
    let (f1, f2) = (finish(100), finish(200));
    results::finish_rows(
        &mut tx,
        &[
            FinishRow {
                id: "j1",
                status: JobStatus::Succeeded,
                finish: &f1,
            },
            FinishRow {
                id: "j2",
                status: JobStatus::Failed,
                finish: &f2,
            },
        ],
    )
    .await
    .unwrap();
    let j1 = jobs::find(&mut tx, "j1").await.unwrap().unwrap();
    assert_eq!(
        (
            j1.status.as_str(),
            j1.exit_code,
            j1.finished_at,
            j1.started_at
        ),
        ("succeeded", Some(0), Some(100), Some(5)),
        "the job's own start is kept"
    );
    assert_eq!(j1.summary_json.as_deref(), Some(r#"{"snapshot_id":"abc"}"#));
    assert_eq!(j1.restic_version.as_deref(), Some("0.18.0"));
    let j2 = jobs::find(&mut tx, "j2").await.unwrap().unwrap();
    assert_eq!(
        (j2.status.as_str(), j2.started_at),
        ("failed", Some(190)),
        "a start it never had is taken from the result"
    );
    // j1 is finished now: a batch that still counts on it is refused whole
    let err = results::finish_rows(
        &mut tx,
        &[
            FinishRow {
                id: "j1",
                status: JobStatus::Failed,
                finish: &f2,
            },
            FinishRow {
                id: "j3",
                status: JobStatus::Succeeded,
                finish: &f1,
            },
        ],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("1 of 2"), "{err}");
}
