//! The fleet dashboard (`GET /`) and its JSON twin (`GET /api/v1/hosts`):
//! both load [`crate::views::fleet::FleetPage`]. The page's script keeps it
//! live through `GET /fragments/fleet?ids=...`: the counters and only the
//! rows of the hosts named by events, never the whole page.

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

/// Most rows one fragment request may ask for.
pub const FRAGMENT_MAX_IDS: usize = 100;

/// `GET /fragments/fleet?ids=a,b&state=`: which rows to refresh, and the
/// dashboard's state filter (for the counters' current marker).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct FragmentQuery {
    /// Comma-separated host ids (host ids never hold a comma).
    pub ids: String,
    pub state: String,
}

#[derive(Template)]
#[template(path = "_fleet_fragment.html")]
pub(crate) struct FleetFragment {
    pub(crate) fleet: FleetPage,
    pub(crate) now: i64,
}

/// `GET /fragments/fleet`: the counters and the named hosts' rows, rendered
/// by the same templates and views as the page (`_counters.html`,
/// `_fleet_row.html`, `views::fleet::host_rows`). Unknown or revoked ids
/// are left out; the script keeps such rows as they are.
pub async fn fragment(
    State(state): State<AppState>,
    RequireViewer(_who): RequireViewer,
    Query(q): Query<FragmentQuery>,
) -> Response {
    let ids: Vec<String> = q
        .ids
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .take(FRAGMENT_MAX_IDS)
        .map(str::to_owned)
        .collect();
    let loaded = async {
        let mut conn = state.store.read().await?;
        let now = state.now();
        let counts = rm_store::fleet::counts(&mut conn).await?;
        let rows = rm_store::fleet::rows(&mut conn, &ids).await?;
        let hosts = fleet::host_rows(&mut conn, rows, now).await?;
        Ok::<_, ApiError>(FleetPage {
            counters: counts.into(),
            total: i64::try_from(hosts.len()).unwrap_or(0),
            hosts,
            page: 1,
            page_size: fleet::PAGE_SIZE,
            filter: FleetFilter {
                state: q.state,
                ..FleetFilter::default()
            },
            tags: Vec::new(),
            now,
        })
    }
    .await;
    match loaded {
        Ok(fleet) => {
            let now = fleet.now;
            render(&FleetFragment { fleet, now })
        }
        Err(e) => {
            use axum::response::IntoResponse;
            e.into_response()
        }
    }
}
