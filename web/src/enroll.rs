//! `POST /api/v1/enroll`: an agent's enrollment, forwarded to the control
//! plane (`rm.svc.controlplane.enroll`). It carries only public keys and a
//! one-time token, so it is public; the answer is the control plane's:
//! 200 with the `EnrollReply`, or its error as JSON with a matching status.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rm_bus::msg::{
    Actor, ActorVia, EnrollReply, EnrollRequest, PROTOCOL_VERSION, SvcError, SvcReply, SvcRequest,
    decode, encode,
};
use rm_bus::subject::{self, SvcRole};

use crate::AppState;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = SvcError {
        code: code.into(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// The HTTP status of a service error code.
pub(crate) fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid" => StatusCode::BAD_REQUEST,
        "forbidden" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) async fn enroll(State(state): State<AppState>, body: Bytes) -> Response {
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
