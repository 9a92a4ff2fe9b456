//! The write path of the rule engine: a pass over a fleet where nothing
//! changed writes nothing and needs no write lock; a change is written.

use rm_alerts::api;

use crate::support::{Env, wait_for};

async fn metrics(env: &Env) -> anyhow::Result<api::Metrics> {
    env.call(api::METRICS, serde_json::json!({}))
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
}

/// Waits until at least `n` more passes completed than `since` shows.
async fn passes_after(env: &Env, since: &api::Metrics, n: u64) -> anyhow::Result<api::Metrics> {
    wait_for("rule-engine passes", || async {
        let m = metrics(env).await?;
        Ok((m.passes >= since.passes + n).then_some(m))
    })
    .await
}

#[tokio::test]
async fn passes_over_an_unchanged_fleet_of_many_hosts_write_nothing_and_need_no_write_lock()
-> anyhow::Result<()> {
    const HOSTS: usize = 200;
    let mut env = Env::new().await?;
    for i in 0..HOSTS {
        env.add_host(&format!("h{i:03}"), &format!("host-{i:03}"))
            .await?;
    }
    env.start_alerts().await?;
    // The first pass sees every host once (and saves its host cursor).
    let first = wait_for("a first pass that wrote its cursor", || async {
        let m = metrics(&env).await?;
        Ok((m.passes_written >= 1).then_some(m))
    })
    .await?;
    let settled = passes_after(&env, &first, 2).await?;

    // Another process holds the write lock the whole time: passes that
    // find nothing changed still complete, and none of them writes.
    let lock = env.store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let after = passes_after(&env, &settled, 5).await?;
    assert_eq!(after.passes_written, settled.passes_written, "{after:?}");
    assert_eq!(after.write_batches, settled.write_batches, "{after:?}");
    lock.rollback().await?;

    // A change is still seen and written: h042 goes offline.
    env.set_offline("h042").await?;
    env.wait_alert("h042", "agent_offline", "h042's offline alert", |_| true)
        .await?;
    let m = metrics(&env).await?;
    assert!(m.passes_written > after.passes_written, "{m:?}");
    env.stop_all().await?;
    Ok(())
}
