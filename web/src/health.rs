//! `GET /healthz` (the process answers) and `GET /readyz` (the database
//! answers a query and both bus connections are up: 200, else 503).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::AppState;

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let db = match state.store.read().await {
        Ok(mut conn) => sqlx_ping(&mut conn).await,
        Err(_) => false,
    };
    let bus = bus_connected(&state);
    let status = if db && bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({"database": word(db), "bus": word(bus)})),
    )
}

/// Both of the role's bus connections are up: requests cannot be made
/// without the one, live events do not arrive without the other.
pub(crate) fn bus_connected(state: &AppState) -> bool {
    [&state.bus, &state.live_bus]
        .iter()
        .all(|c| c.connection_state() == async_nats::connection::State::Connected)
}

async fn sqlx_ping(conn: &mut rm_store::Conn) -> bool {
    rm_store::users::count(conn).await.is_ok()
}
