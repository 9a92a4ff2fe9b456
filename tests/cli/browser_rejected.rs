//! Browser set-up for refused results (issue 9): records one refused
//! result for the host the way the control plane's ingest does, so the
//! host page has a "Refused results" table to show.

use std::path::Path;

/// Records a refused `started` of a deleted schedule's run on `host_id`;
/// returns what the step checks for.
pub async fn seed(db: &Path, host_id: &str) -> serde_json::Value {
    let store = rm_store::Store::open(db).await.expect("open the database");
    let job = "sgone-1767225600000";
    let reason = "unknown schedule sgone (deleted while the host was offline?): this run is not kept as a job";
    let mut tx = store.write().await.expect("write");
    rm_store::rejected::record(
        &mut tx,
        host_id,
        job,
        "started",
        reason,
        format!(r#"{{"v":1,"job_id":"{job}"}}"#).as_bytes(),
        rm_bus::clock::system().now_ms(),
    )
    .await
    .expect("record");
    tx.commit().await.expect("commit");
    store.close().await;
    serde_json::json!({"job": job, "reason": reason})
}
