//! "Back up now" on the control-plane backup page: a request while a run
//! is in progress is that run, not a second one queued behind it.

use rm_store::cpbackup::{self, RUN_STALE_MS, RunRequest};

use super::store;

const HOUR: i64 = 3600 * 1000;

#[tokio::test]
async fn back_up_now_is_refused_while_a_run_is_in_progress_and_queued_otherwise() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    let t0 = 1_000 * HOUR;
    assert_eq!(
        cpbackup::request_run(&mut tx, "ops", t0).await.unwrap(),
        RunRequest::NoRepository,
        "nothing to back up to"
    );
    cpbackup::set_repo(&mut tx, Some("r1"), "ops", t0)
        .await
        .unwrap();

    // a run in progress: the request is that run, nothing is recorded
    let id = cpbackup::run_started(&mut tx, "r1", "/stage", t0)
        .await
        .unwrap();
    assert_eq!(
        cpbackup::request_run(&mut tx, "ops", t0 + 500)
            .await
            .unwrap(),
        RunRequest::AlreadyRunning(t0)
    );
    let st = cpbackup::status(&mut tx).await.unwrap();
    assert_eq!(st.settings.as_ref().unwrap().run_requested_at, None);
    assert_eq!(st.running(t0 + 500).map(|r| r.id), Some(id));
    cpbackup::run_finished(&mut tx, id, None, t0 + 1_000)
        .await
        .unwrap();

    // once it ended, a request is queued and makes the next run due then
    assert_eq!(
        cpbackup::request_run(&mut tx, "ops", t0 + 2_000)
            .await
            .unwrap(),
        RunRequest::Requested
    );
    let st = cpbackup::status(&mut tx).await.unwrap();
    assert_eq!(st.running(t0 + 2_000), None);
    assert_eq!(st.next_run(), Some(t0 + 2_000));

    // a run left marked running by a process that died long ago does not
    // block the button
    let stale = cpbackup::run_started(&mut tx, "r1", "/stage", t0 + HOUR)
        .await
        .unwrap();
    let later = t0 + HOUR + RUN_STALE_MS + 1;
    let st = cpbackup::status(&mut tx).await.unwrap();
    assert_eq!(st.last_run.as_ref().map(|r| r.id), Some(stale));
    assert_eq!(st.running(later), None);
    assert_eq!(
        cpbackup::request_run(&mut tx, "ops", later).await.unwrap(),
        RunRequest::Requested
    );
}
