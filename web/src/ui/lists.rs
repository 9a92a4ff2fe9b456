//! The other top-level pages of the navigation: `/hosts` (every host by
//! name), `/repositories` (each repository with its health), `/alerts`
//! (open or all alerts, acknowledge and resolve). Settings are in
//! `ui::settings`.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use rm_bus::subject::SvcRole;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{RequireOperator, RequireViewer};
use crate::error::ApiError;
use crate::svc;
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

// ------------------------------------------------------------ alerts

/// `?state=open|all&host=`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AlertFilter {
    pub state: String,
    pub host: String,
}

/// One alert as the list shows it.
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub alert: rm_store::alerts::Alert,
    pub host_name: String,
}

impl AlertRow {
    pub fn state_word(&self) -> &'static str {
        match (&self.alert.resolved_at, &self.alert.acknowledged_at) {
            (Some(_), _) => "resolved",
            (None, Some(_)) => "acknowledged",
            (None, None) => "open",
        }
    }
    pub fn state_class(&self) -> &'static str {
        match self.state_word() {
            "resolved" => "s-ok",
            "acknowledged" => "s-warn",
            _ if self.alert.severity == "critical" => "s-fail",
            _ => "s-warn",
        }
    }
}

#[derive(Template)]
#[template(path = "alerts.html")]
pub(crate) struct AlertsPage {
    pub(crate) layout: Layout,
    pub(crate) alerts: Vec<AlertRow>,
    pub(crate) filter: AlertFilter,
    pub(crate) can_operate: bool,
    pub(crate) now: i64,
}

/// Alerts shown at most.
const ALERTS_SHOWN: i64 = 200;

/// `GET /alerts`.
pub async fn alerts(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(filter): Query<AlertFilter>,
) -> Response {
    let loaded = async {
        if !matches!(filter.state.as_str(), "" | "open" | "all") {
            return Err(ApiError::invalid("state", "open or all"));
        }
        let mut conn = state.store.read().await?;
        let names: std::collections::HashMap<String, String> = rm_store::hosts::names(&mut conn)
            .await?
            .into_iter()
            .collect();
        let host = (!filter.host.is_empty()).then_some(filter.host.as_str());
        let open_only = filter.state != "all";
        let list =
            rm_store::listing::alerts(&mut conn, host, open_only, None, ALERTS_SHOWN).await?;
        Ok(list
            .into_iter()
            .map(|a| AlertRow {
                host_name: names
                    .get(&a.host_id)
                    .cloned()
                    .unwrap_or_else(|| a.host_id.clone()),
                alert: a,
            })
            .collect::<Vec<_>>())
    }
    .await;
    match loaded {
        Ok(alerts) => render(&AlertsPage {
            layout: Layout::new(&who, "alerts", "alerts", open_alerts(&state).await),
            can_operate: can_operate(&who),
            alerts,
            filter,
            now: state.now(),
        }),
        Err(e) => error_page(&who, "alerts", &e),
    }
}

/// Where to go back to after acknowledging or resolving.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BackTo {
    pub back: String,
}

fn back(b: &BackTo) -> String {
    // Same-site paths only.
    if b.back.starts_with("/alerts") {
        b.back.clone()
    } else {
        "/alerts".into()
    }
}

async fn alert_action(
    state: &AppState,
    who: &crate::auth::Principal,
    verb: rm_bus::subject::Verb,
    id: String,
    to: &BackTo,
) -> Response {
    let r: Result<serde_json::Value, _> = svc::call(
        &state.bus,
        SvcRole::Alerts,
        verb,
        who.actor(),
        rm_alerts::api::AlertRef { alert_id: id },
        state.svc_timeout,
    )
    .await;
    match r {
        Ok(_) => Redirect::to(&back(to)).into_response(),
        Err(e) => error_page(who, "alerts", &e.into()),
    }
}

/// `POST /alerts/{id}/ack`.
pub async fn ack(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(to): Form<BackTo>,
) -> Response {
    alert_action(&state, &who, rm_alerts::api::ALERT_ACK, id, &to).await
}

/// `POST /alerts/{id}/resolve`.
pub async fn resolve(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(to): Form<BackTo>,
) -> Response {
    alert_action(&state, &who, rm_alerts::api::ALERT_RESOLVE, id, &to).await
}
