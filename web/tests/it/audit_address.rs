//! Audit entries written by the owning roles (alerts, control plane) for an
//! operator's action through the web role carry the operator's client
//! address, as the web role's own entries do (behind a trusted proxy: the
//! forwarded client).

use axum::body::Body;
use axum::http::header;
use rm_web::auth::{AuthSettings, Role};
use serde_json::json;

use crate::harness::*;

/// A JSON API call with a bearer token from TCP peer `peer` with
/// `X-Forwarded-For: xff`; the status and body.
async fn api_via(
    h: &H,
    token: &str,
    peer: &str,
    xff: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    let r = req(method, path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-forwarded-for", xff)
        .extension(axum::extract::ConnectInfo(addr))
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = h.send(r).await;
    let status = resp.status().as_u16();
    let t = text(resp).await;
    (status, serde_json::from_str(&t).unwrap_or_default())
}

#[tokio::test]
async fn entries_the_alerts_role_and_the_control_plane_write_carry_the_operators_client_address() {
    let mut h = H::with(AuthSettings {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..AuthSettings::default()
    })
    .await;
    h.with_controlplane().await;
    h.with_alerts().await;
    let op = h.token(Role::Operator).await;
    let (proxy, client) = ("10.0.0.5", "203.0.113.7");

    // The control plane: a host added.
    let (status, added) = api_via(
        &h,
        &op,
        proxy,
        &format!("198.51.100.1, {client}"),
        "POST",
        "/api/v1/hosts",
        json!({"name": "web-1"}),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let host = added["host_id"].as_str().unwrap().to_owned();

    // The alerts role: that host muted.
    let until = T0 + 3_600_000;
    let (status, body) = api_via(
        &h,
        &op,
        proxy,
        client,
        "POST",
        &format!("/api/v1/hosts/{host}/mute"),
        json!({"until_ms": until, "reason": "patching"}),
    )
    .await;
    assert_eq!(status, 204, "{body}");

    let mut c = h.state.store.read().await.unwrap();
    let audit = rm_store::audit::recent(&mut c, 50).await.unwrap();
    for role in ["controlplane", "alerts"] {
        let mine: Vec<_> = audit
            .iter()
            .filter(|e| e.role == role && e.actor.starts_with("tok-operator"))
            .collect();
        assert!(!mine.is_empty(), "an entry by the {role}: {audit:#?}");
        for e in mine {
            assert_eq!(
                e.address.as_deref(),
                Some(client),
                "{role}'s {} records the forwarded client",
                e.action
            );
        }
    }
}
