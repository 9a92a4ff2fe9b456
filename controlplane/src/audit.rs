//! Audit entries written by the control plane, in the same transaction as
//! the change they describe.

use rm_bus::msg::Actor;
use rm_store::audit::{self, NewEntry};

pub(crate) async fn record(
    conn: &mut rm_store::Conn,
    now: i64,
    actor: &Actor,
    action: &str,
    target: (&str, &str),
    detail: Option<serde_json::Value>,
) -> rm_store::Result<()> {
    let via = serde_json::to_value(actor.via)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    audit::append_from(
        conn,
        &NewEntry {
            ts: now,
            actor: &actor.name,
            via: &via,
            role: "controlplane",
            action,
            target_kind: Some(target.0),
            target_id: Some(target.1),
            detail,
        },
        actor.address.as_deref(),
    )
    .await
}
