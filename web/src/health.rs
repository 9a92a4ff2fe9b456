//! `GET /healthz` (the process answers) and `GET /readyz` (the database
//! answers a query and the bus connection is up: 200, else 503).

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
    let bus = state.bus.connection_state() == async_nats::connection::State::Connected;
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

async fn sqlx_ping(conn: &mut rm_store::Conn) -> bool {
    rm_store::users::count(conn).await.is_ok()
}
