//! The other top-level pages of the navigation: `/hosts` (every host by
//! name) and `/repositories` (each repository with its health). Alerts are
//! in `ui::alerts`, settings in `ui::settings`.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;

use crate::AppState;
use crate::auth::RequireViewer;
use crate::error::ApiError;
use crate::ui::open_alerts;
use crate::ui::{Layout, can_operate, error_page, render};
use crate::views::fleet::{self, FleetFilter, FleetPage};

// ------------------------------------------------------------ hosts

#[derive(Template)]
#[template(path = "hosts.html")]
pub(crate) struct HostsPage {
    pub(crate) layout: Layout,
    pub(crate) fleet: FleetPage,
    pub(crate) can_operate: bool,
    pub(crate) now: i64,
}

/// `GET /hosts`: every host by name, with the same row as the dashboard.
pub async fn hosts(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(mut filter): Query<FleetFilter>,
) -> Response {
    if filter.sort.is_empty() {
        filter.sort = "name".into();
    }
    let loaded = async {
        if let Err((field, message)) = filter.validate() {
            return Err(ApiError::invalid(field, message));
        }
        let mut conn = state.store.read().await?;
        Ok(fleet::load(&mut conn, &filter, state.now()).await?)
    }
    .await;
    match loaded {
        Ok(fleet) => render(&HostsPage {
            layout: Layout::new(&who, "hosts", "hosts,jobs", fleet.counters.open_alerts),
            now: fleet.now,
            can_operate: can_operate(&who),
            fleet,
        }),
        Err(e) => error_page(&who, "hosts", &e),
    }
}

// ------------------------------------------------------------ repositories

/// One repository as the list shows it.
#[derive(Debug, Clone)]
pub struct RepoRow {
    pub id: String,
    pub name: String,
    pub url: String,
    pub status: String,
    pub status_detail: Option<String>,
    pub maintenance_host: Option<(String, String)>,
    pub hosts: usize,
    pub append_only_hosts: usize,
    pub health: Option<rm_store::health::Health>,
}

#[derive(Template)]
#[template(path = "repositories.html")]
pub(crate) struct ReposPage {
    pub(crate) layout: Layout,
    pub(crate) repos: Vec<RepoRow>,
    pub(crate) can_operate: bool,
    pub(crate) now: i64,
}

/// `GET /repositories`.
pub async fn repositories(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
) -> Response {
    let loaded = async {
        let mut conn = state.store.read().await?;
        let names: std::collections::HashMap<String, String> = rm_store::hosts::names(&mut conn)
            .await?
            .into_iter()
            .collect();
        let mut rows = Vec::new();
        for r in rm_store::repos::list(&mut conn).await? {
            let attached = rm_store::repos::hosts_of_repo(&mut conn, &r.id).await?;
            rows.push(RepoRow {
                health: rm_store::health::latest(&mut conn, &r.id).await.ok(),
                hosts: attached.len(),
                append_only_hosts: attached
                    .iter()
                    .filter(|h| h.access == "append_only")
                    .count(),
                maintenance_host: r.maintenance_host_id.as_ref().map(|id| {
                    (
                        id.clone(),
                        names.get(id).cloned().unwrap_or_else(|| id.clone()),
                    )
                }),
                id: r.id,
                name: r.name,
                url: r.url_display,
                status: r.status,
                status_detail: r.status_detail,
            });
        }
        Ok::<_, ApiError>(rows)
    }
    .await;
    match loaded {
        Ok(repos) => render(&ReposPage {
            layout: Layout::new(&who, "repositories", "", open_alerts(&state).await),
            can_operate: can_operate(&who),
            repos,
            now: state.now(),
        }),
        Err(e) => error_page(&who, "repositories", &e),
    }
}
