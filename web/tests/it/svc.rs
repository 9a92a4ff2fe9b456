//! `rm_web::svc::call` against stand-in owners on a real bus: a request to
//! the control plane whose reply never came is retried with the same
//! idempotency key; a request to a role that does not deduplicate is not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rm_bus::creds::Role as BusRole;
use rm_bus::msg::{Actor, ActorVia, SvcReply, encode};
use rm_bus::reqack::IdempotencyKey;
use rm_bus::subject::{self, SvcRole};
use rm_testkit::TestBus;

fn actor() -> Actor {
    Actor {
        name: "alice".into(),
        via: ActorVia::Session,
        address: None,
    }
}

/// Subscribes as `role` to its `pubkey` verb; answers from the
/// `answer_from`th attempt on (1-based; never if `None`) and records every
/// attempt's idempotency key.
async fn stand_in(
    bus: &TestBus,
    bus_role: BusRole,
    role: SvcRole,
    answer_from: Option<usize>,
) -> Arc<Mutex<Vec<Option<String>>>> {
    let owner = bus.connect_role(bus_role).await.unwrap();
    let verb = rm_controlplane::api::PUBKEY;
    let mut sub = owner
        .client
        .subscribe(subject::svc(role, verb))
        .await
        .unwrap();
    owner.client.flush().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let n = {
                let mut g = log.lock().unwrap();
                g.push(IdempotencyKey::of(&m).map(|k| k.as_str().to_owned()));
                g.len()
            };
            if answer_from.is_some_and(|f| n >= f) {
                let reply = SvcReply::ok(rm_controlplane::api::PubKey { xkey: "X".into() });
                let to = m.reply.expect("a request");
                owner.client.publish(to, encode(&reply)).await.unwrap();
            }
        }
    });
    seen
}

#[tokio::test]
async fn a_control_plane_request_whose_reply_never_came_is_retried_with_its_key() {
    let bus = TestBus::start().await.unwrap();
    let web = bus.connect_role(BusRole::Web).await.unwrap();
    let seen = stand_in(&bus, BusRole::Controlplane, SvcRole::Controlplane, Some(2)).await;
    let got: rm_controlplane::api::PubKey = rm_web::svc::call(
        &web.client,
        SvcRole::Controlplane,
        rm_controlplane::api::PUBKEY,
        actor(),
        serde_json::json!({}),
        Duration::from_secs(6),
    )
    .await
    .expect("the second attempt is answered");
    assert_eq!(got.xkey, "X");
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "one retry after the first attempt's timeout");
    assert!(
        keys[0].as_deref().is_some_and(|k| !k.is_empty()),
        "{keys:?}"
    );
    assert_eq!(keys[0], keys[1], "both attempts carry one key");
}

#[tokio::test]
async fn a_request_to_a_role_that_does_not_deduplicate_is_not_retried_after_a_timeout() {
    let bus = TestBus::start().await.unwrap();
    let web = bus.connect_role(BusRole::Web).await.unwrap();
    let seen = stand_in(&bus, BusRole::Alerts, SvcRole::Alerts, None).await;
    let got: Result<rm_controlplane::api::PubKey, _> = rm_web::svc::call(
        &web.client,
        SvcRole::Alerts,
        rm_alerts::api::PUBKEY,
        actor(),
        serde_json::json!({}),
        Duration::from_secs(3),
    )
    .await;
    assert!(
        matches!(got, Err(rm_web::svc::SvcCallError::Unavailable { .. })),
        "{got:?}"
    );
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys, vec![None], "one attempt, without a key");
}
