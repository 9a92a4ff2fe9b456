//! The router: `GET /healthz` and `POST /api/v1/enroll`.
//!
//! Enrollment carries only public keys and a one-time token; the web
//! service forwards it to the control plane (`rm.svc.controlplane.enroll`)
//! and returns its answer: 200 with the `EnrollReply`, or the control
//! plane's error as JSON with a matching status.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rm_bus::msg::{
    Actor, ActorVia, EnrollReply, EnrollRequest, PROTOCOL_VERSION, SvcError, SvcReply, SvcRequest,
    decode, encode,
};
use rm_bus::subject::{self, SvcRole};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// A bus connection with the web role's credentials.
    pub bus: async_nats::Client,
    /// How long to wait for the owning role's answer.
    pub svc_timeout: Duration,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/enroll", post(enroll))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = SvcError {
        code: code.into(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid" => StatusCode::BAD_REQUEST,
        "forbidden" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn enroll(State(state): State<AppState>, body: Bytes) -> Response {
    let req: EnrollRequest = match decode("enrollment request", &body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
    };
    let actor = Actor {
        name: format!("enrollment of {}", req.hostname),
        via: ActorVia::System,
    };
    // The token never crosses the bus in the clear: sealed to the control
    // plane's xkey.
    let sealed = match seal_to_controlplane(&state, &actor, &req).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let envelope = SvcRequest {
        v: PROTOCOL_VERSION,
        actor,
        body: sealed,
    };
    let subject = subject::svc(SvcRole::Controlplane, rm_controlplane::api::ENROLL);
    let request = async_nats::Request::new()
        .payload(encode(&envelope))
        .timeout(Some(state.svc_timeout));
    let msg = match state.bus.send_request(subject, request).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "enrollment not forwarded");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the control plane is not answering; try again shortly",
            );
        }
    };
    match decode::<SvcReply<EnrollReply>>("enrollment reply", &msg.payload) {
        Ok(SvcReply {
            ok: Some(reply), ..
        }) => (StatusCode::OK, axum::Json(reply)).into_response(),
        Ok(SvcReply { error: Some(e), .. }) => error(status_of(&e.code), &e.code, e.message),
        Ok(_) => error(
            StatusCode::BAD_GATEWAY,
            "internal",
            "empty answer from the control plane",
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, "internal", e.to_string()),
    }
}

/// Seals an enrollment to the control plane's public xkey (asked for each
/// time: enrollments are rare, and the key is the control plane's to change).
async fn seal_to_controlplane(
    state: &AppState,
    actor: &Actor,
    req: &EnrollRequest,
) -> Result<rm_controlplane::api::SealedEnroll, Response> {
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the control plane is not answering; try again shortly",
        )
    };
    let ask = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: actor.clone(),
        body: serde_json::json!({}),
    };
    let subject = subject::svc(SvcRole::Controlplane, rm_controlplane::api::PUBKEY);
    let request = async_nats::Request::new()
        .payload(encode(&ask))
        .timeout(Some(state.svc_timeout));
    let msg = state
        .bus
        .send_request(subject, request)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "control plane key not fetched");
            unavailable()
        })?;
    let key = match decode::<SvcReply<rm_controlplane::api::PubKey>>("key reply", &msg.payload) {
        Ok(SvcReply { ok: Some(k), .. }) => k.xkey,
        _ => return Err(unavailable()),
    };
    rm_controlplane::api::SealedEnroll::seal(req, &key).map_err(|e| {
        tracing::error!(error = %e, "enrollment not sealed");
        error(StatusCode::BAD_GATEWAY, "internal", e.to_string())
    })
}
