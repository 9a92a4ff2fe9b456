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
            layout: Layout::new(&who, "hosts", "hosts,jobs", fleet.counters.open_alerts)
                .progress_of(fleet.hosts.iter().map(|h| h.id.as_str())),
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
    pub hosts: i64,
    pub append_only_hosts: i64,
    pub health: Option<rm_store::health::Health>,
}

/// Repositories a page of the list shows.
pub const REPOS_PER_PAGE: i64 = 50;

/// `?q=&page=` of the repositories list.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct RepoListQuery {
    /// Text in the name or URL (case-insensitive).
    pub q: String,
    /// 1-based.
    pub page: u32,
}

impl RepoListQuery {
    fn validate(&self) -> Result<(), ApiError> {
        if self.q.len() > 200 {
            return Err(ApiError::invalid(
                "q",
                "the filter text is longer than 200 characters",
            ));
        }
        Ok(())
    }

    pub(crate) fn page(&self) -> i64 {
        i64::from(self.page.max(1))
    }

    /// This filter's query string for another page (pager links).
    pub fn query_for_page(&self, page: i64) -> String {
        let page = if page > 1 {
            page.to_string()
        } else {
            String::new()
        };
        crate::pages::query_string(&[("q", self.q.trim()), ("page", &page)])
    }
}

#[derive(Template)]
#[template(path = "repositories.html")]
pub(crate) struct ReposPage {
    pub(crate) layout: Layout,
    pub(crate) repos: Vec<RepoRow>,
    pub(crate) can_operate: bool,
    pub(crate) now: i64,
    pub(crate) filter: RepoListQuery,
    /// Repositories matching the filter (all pages).
    pub(crate) total: i64,
    pub(crate) page: i64,
}

impl ReposPage {
    pub(crate) fn pages(&self) -> i64 {
        ((self.total + REPOS_PER_PAGE - 1) / REPOS_PER_PAGE).max(1)
    }
    pub(crate) fn first_index(&self) -> i64 {
        if self.total == 0 {
            0
        } else {
            (self.page - 1) * REPOS_PER_PAGE + 1
        }
    }
    pub(crate) fn last_index(&self) -> i64 {
        (self.first_index() + self.repos.len() as i64 - 1).max(0)
    }
}

/// `GET /repositories`: a page of repositories by name (a fleet where
/// each host has its own repository has as many as hosts), each with its
/// latest health; a search box filters by name or URL.
pub async fn repositories(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(filter): Query<RepoListQuery>,
) -> Response {
    let page = filter.page();
    let loaded = async {
        filter.validate()?;
        let mut conn = state.store.read().await?;
        let (listed, total) = rm_store::repos::page(
            &mut conn,
            &filter.q,
            REPOS_PER_PAGE,
            (page - 1) * REPOS_PER_PAGE,
        )
        .await?;
        let maint: Vec<&str> = listed
            .iter()
            .filter_map(|r| r.maintenance_host_id.as_deref())
            .collect();
        let names: std::collections::HashMap<String, String> =
            rm_store::hosts::names_of(&mut conn, &maint)
                .await?
                .into_iter()
                .collect();
        let mut rows = Vec::with_capacity(listed.len());
        for r in listed {
            rows.push(RepoRow {
                health: rm_store::health::latest(&mut conn, &r.id).await.ok(),
                hosts: r.hosts,
                append_only_hosts: r.append_only_hosts,
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
        Ok::<_, ApiError>((rows, total))
    }
    .await;
    match loaded {
        Ok((repos, total)) => render(&ReposPage {
            layout: Layout::new(&who, "repositories", "", open_alerts(&state).await),
            can_operate: can_operate(&who),
            repos,
            now: state.now(),
            filter,
            total,
            page,
        }),
        Err(e) => error_page(&who, "repositories", &e),
    }
}
