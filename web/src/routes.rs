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
    let envelope = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: format!("enrollment of {}", req.hostname),
            via: ActorVia::System,
        },
        body: req,
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
