//! The alerts role's retention: finished deliveries and their attempt log
//! are deleted after [`crate::Timings::delivery_retention`]. The alerts role
//! owns the outbox, so it purges it (the control plane purges only its own
//! tables), through the role's writer task. Errors are logged and the loop
//! goes on.

use std::sync::Arc;

use rm_store::delivery;

use crate::Ctx;

/// Purges at start and every `retention_every`; never returns.
pub(crate) async fn serve(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.t.retention_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match purge(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "delivery retention applied"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "delivery retention not applied; next round retries")
            }
        }
    }
}

/// One purge, a write of the writer task's ordinary lane (nobody waits
/// for it: operators' writes go ahead).
async fn purge(ctx: &Ctx) -> anyhow::Result<u64> {
    let keep = crate::ms(ctx.t.delivery_retention);
    let before = ctx.now().saturating_sub(keep);
    let n = ctx
        .writer
        .run(move |tx| Box::pin(async move { delivery::purge_finished(&mut *tx, before).await }))
        .await?;
    Ok(n)
}
