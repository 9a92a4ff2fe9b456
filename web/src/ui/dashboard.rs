//! The fleet dashboard (`GET /`) and its JSON twin (`GET /api/v1/hosts`):
//! both load [`crate::fleet::FleetPage`].

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;

use crate::AppState;
use crate::auth::RequireViewer;
use crate::error::ApiError;
use crate::ui::{Layout, can_operate, render};
use crate::views::fleet::{self, FleetFilter, FleetPage};

#[derive(Template)]
#[template(path = "dashboard.html")]
pub(crate) struct DashboardPage {
    pub(crate) layout: Layout,
    pub(crate) fleet: FleetPage,
    pub(crate) can_operate: bool,
    pub(crate) now: i64,
    pub(crate) states: [(&'static str, &'static str); 7],
}

pub(crate) const STATES: [(&str, &str); 7] = [
    ("ok", "ok"),
    ("warning", "partial"),
    ("failed", "failed"),
    ("offline", "offline"),
    ("never", "never backed up"),
    ("pending", "awaiting enrollment"),
    ("running", "running now"),
];

async fn load(state: &AppState, filter: &FleetFilter) -> Result<FleetPage, ApiError> {
    if let Err((field, message)) = filter.validate() {
        return Err(ApiError::invalid(field, message));
    }
    let mut conn = state.store.read().await?;
    Ok(fleet::load(&mut conn, filter, state.now()).await?)
}

/// `GET /`: the fleet.
pub async fn page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(filter): Query<FleetFilter>,
) -> Response {
    let fleet = match load(&state, &filter).await {
        Ok(f) => f,
        Err(e) => return crate::ui::error_page(&who, "dashboard", &e),
    };
    let now = fleet.now;
    render(&DashboardPage {
        layout: Layout::new(
            &who,
            "dashboard",
            "hosts,jobs,alerts",
            fleet.counters.open_alerts,
        ),
        can_operate: can_operate(&who),
        fleet,
        now,
        states: STATES,
    })
}

/// `GET /api/v1/hosts`: the same page of the fleet as JSON.
pub async fn api_list(
    State(state): State<AppState>,
    Query(filter): Query<FleetFilter>,
) -> Result<axum::Json<FleetPage>, ApiError> {
    Ok(axum::Json(load(&state, &filter).await?))
}
