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
        // progress bars for the page's rows only (the script follows the
        // rows as they change)
        layout: Layout::new(
            &who,
            "dashboard",
            "hosts,jobs,alerts",
            fleet.counters.open_alerts,
        )
        .progress_of(fleet.hosts.iter().map(|h| h.id.as_str())),
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

/// Most rows one fragment request may name.
pub const FRAGMENT_MAX_IDS: usize = 100;

/// `GET /fragments/fleet?ids=a,b&have=c,d&q=&state=&tag=&sort=&page=`:
/// the hosts events named, the rows the page shows now, and the page's own
/// filter (the same query string as `/`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct FragmentQuery {
    /// Comma-separated host ids an event named (host ids never hold a comma).
    pub ids: String,
    /// Comma-separated host ids of the rows the page shows.
    pub have: String,
    pub q: String,
    pub state: String,
    pub tag: String,
    pub sort: String,
    pub page: u32,
}

fn id_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .take(FRAGMENT_MAX_IDS)
}

#[derive(Template)]
#[template(path = "_fleet_fragment.html")]
pub(crate) struct FleetFragment {
    /// The counters, the filter and the total; `hosts` holds only the rows
    /// to (re-)render.
    pub(crate) fleet: FleetPage,
    /// The ids of the filter's page, in order.
    pub(crate) order: String,
    pub(crate) now: i64,
}

/// `GET /fragments/fleet`: the counters, the pager, the page's ids in
/// order, and the rows to render: the named hosts still on the page and
/// the page's hosts the page does not show yet. Rendered by the same
/// templates and views as the page (`_counters.html`, `_fleet_row.html`,
/// `_fleet_pager.html`, `views::fleet`), so the script can drop the rows
/// that left the filter, add the ones that entered it, and keep the
/// page's order without a reload.
pub async fn fragment(
    State(state): State<AppState>,
    RequireViewer(_who): RequireViewer,
    Query(q): Query<FragmentQuery>,
) -> Response {
    use axum::response::IntoResponse;
    let filter = FleetFilter {
        q: q.q,
        state: q.state,
        tag: q.tag,
        sort: q.sort,
        page: q.page,
    };
    if let Err((field, message)) = filter.validate() {
        return ApiError::invalid(field, message).into_response();
    }
    let named: std::collections::HashSet<&str> = id_list(&q.ids).collect();
    let have: std::collections::HashSet<&str> = id_list(&q.have).collect();
    let loaded = async {
        let mut conn = state.store.read().await?;
        let now = state.now();
        let counts = rm_store::fleet::counts(&mut conn).await?;
        let (total, order) = fleet::page_order(&mut conn, &filter, &counts).await?;
        let wanted: Vec<String> = order
            .iter()
            .filter(|id| named.contains(id.as_str()) || !have.contains(id.as_str()))
            .cloned()
            .collect();
        let rows = rm_store::fleet::rows(&mut conn, &wanted).await?;
        let hosts = fleet::host_rows(&mut conn, rows, now).await?;
        Ok::<_, ApiError>(FleetFragment {
            order: order.join(","),
            fleet: FleetPage {
                counters: counts.into(),
                total,
                hosts,
                page: filter.page(),
                page_size: fleet::PAGE_SIZE,
                filter,
                tags: Vec::new(),
                now,
            },
            now,
        })
    }
    .await;
    match loaded {
        Ok(frag) => render(&frag),
        Err(e) => e.into_response(),
    }
}
