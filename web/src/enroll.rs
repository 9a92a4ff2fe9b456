//! `POST /api/v1/enroll`: an agent's enrollment, forwarded to the control
//! plane (`rm.svc.controlplane.enroll`). It carries only public keys and a
//! one-time token, so it is public; the answer is the control plane's:
//! 200 with the `EnrollReply`, or its error as JSON with a matching status.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rm_bus::msg::{Actor, ActorVia, EnrollReply, EnrollRequest, SvcError, decode};
use rm_bus::subject::SvcRole;

use crate::AppState;
use crate::svc::{SvcCallError, call, status_of};

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = SvcError {
        code: code.into(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

pub(crate) async fn enroll(State(state): State<AppState>, body: Bytes) -> Response {
    let req: EnrollRequest = match decode("enrollment request", &body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
    };
    let actor = Actor {
        name: format!("enrollment of {}", req.hostname),
        via: ActorVia::System,
    };
    let reply: Result<EnrollReply, _> = call(
        &state.bus,
        SvcRole::Controlplane,
        rm_controlplane::api::ENROLL,
        actor,
        req,
        state.svc_timeout,
    )
    .await;
    match reply {
        Ok(r) => (StatusCode::OK, axum::Json(r)).into_response(),
        Err(SvcCallError::Refused(e)) => error(status_of(&e.code), &e.code, e.message),
        Err(e @ SvcCallError::Unavailable { .. }) => {
            tracing::warn!(error = %e, "enrollment not forwarded");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the control plane is not answering; try again shortly",
            )
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "internal", e.to_string()),
    }
}
