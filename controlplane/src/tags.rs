//! The `host-tags` service: replaces a host's tags (checked by
//! `rm_store::tags::parse`), audits the change in the same transaction and
//! publishes `host.changed` after commit so open dashboards refresh the row.

use rm_bus::msg::Actor;
use rm_bus::subject::Event;

use crate::Cp;
use crate::api::{HostTags, HostTagsSaved};
use crate::audit;
use crate::svc::{Fail, Outcome};

pub(crate) async fn set(cp: &Cp, actor: &Actor, req: HostTags) -> Outcome<HostTagsSaved> {
    let tags = rm_store::tags::parse(&req.tags).map_err(Fail::invalid)?;
    let now = cp.now();
    let (actor, host_id) = (actor.clone(), req.host_id.clone());
    let tags = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let host = rm_store::hosts::get(&mut *tx, &host_id).await?;
                if host.status == "revoked" {
                    return Err(Fail::conflict(format!(
                        "host {} is revoked; its tags can no longer change",
                        host.name
                    )));
                }
                let before = rm_store::tags::of_host(&mut *tx, &host_id).await?;
                rm_store::tags::set(&mut *tx, &host_id, &tags).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "host.tags",
                    ("host", &host_id),
                    Some(serde_json::json!({ "before": before, "after": tags })),
                )
                .await?;
                Ok(tags)
            })
        })
        .await?;
    cp.event(Event::HostChanged, Some(&req.host_id), None, None)
        .await;
    Ok(HostTagsSaved { tags })
}
