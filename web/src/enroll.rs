//! `POST /api/v1/enroll`: an agent's enrollment, forwarded to the control
//! plane (`rm.svc.controlplane.enroll`). It carries only public keys and a
//! one-time token, so it is public; the answer is the control plane's:
//! 200 with the `EnrollReply`, or its error as JSON with a matching status.
//! The token never crosses the bus in the clear: the request is sealed to
//! the control plane's xkey (fetched with `pubkey`), and the control plane
//! refuses an unsealed one.

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
        address: None,
    };
    let reply: Result<EnrollReply, _> = async {
        let key: rm_cp_api::PubKey = call(
            &state.bus,
            SvcRole::Controlplane,
            rm_cp_api::PUBKEY,
            actor.clone(),
            serde_json::json!({}),
            state.svc_timeout,
        )
        .await?;
        let sealed = rm_cp_api::SealedEnroll::seal(&req, &key.xkey).map_err(|e| {
            tracing::error!(error = %e, "enrollment not sealed");
            SvcCallError::Malformed {
                role: "control plane",
                detail: format!("the enrollment could not be sealed: {e}"),
            }
        })?;
        call(
            &state.bus,
            SvcRole::Controlplane,
            rm_cp_api::ENROLL,
            actor,
            sealed,
            state.svc_timeout,
        )
        .await
    }
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
