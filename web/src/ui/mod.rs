//! The operator UI: server-rendered askama pages (complete without script),
//! the one stylesheet and the one script. Every page renders a view struct
//! that its JSON twin under `/api/v1` serialises, so a page and its API
//! never compute the same thing twice.
//!
//! - [`fmt`]: how numbers and times read.
//! - [`assets`]: `/static/app.css` and `/static/app.js`, versioned by hash.
//! - [`dashboard`]: the fleet (`/`, `GET /api/v1/hosts`).

pub mod actions;
pub mod alerts;
pub mod assets;
pub mod cron_words;
pub mod dashboard;
pub mod fmt;
pub mod listing;
pub mod lists;
pub mod pages;
pub mod repo_admin;
pub mod repos;
pub mod restore;
pub mod run;
pub mod schedules;
pub mod settings;
pub mod tags;
#[cfg(test)]
mod tests;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::auth::{Principal, Role};

/// What every page's frame (top bar, navigation) needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    /// Which top-level section is current (`dashboard`, `hosts`, ...).
    pub nav: &'static str,
    /// Open alerts, for the count in the top bar.
    pub open_alerts: i64,
    /// Live-update topics this page subscribes to ("" for none).
    pub topics: &'static str,
    /// The last live event published before this page read the database
    /// (`data-event-id`: the page's first live connection resumes after it).
    pub event_id: Option<u64>,
    /// The one host, job or repository this page's live events are about
    /// (`data-event-host`, `data-event-job`, `data-event-repo`:
    /// `events::Scope`), if any.
    pub event_host: Option<String>,
    pub event_job: Option<String>,
    pub event_repo: Option<String>,
    /// The hosts whose job progress this page shows, comma-separated
    /// (`data-event-progress`: `events::OutputOf`); `Some("")`: none;
    /// `None`: every one's (a host's or a job's page, already narrowed).
    pub event_progress: Option<String>,
    pub asset_version: &'static str,
    /// Show admins the "master key not backed up" banner.
    pub cp_banner: bool,
}

impl Layout {
    pub fn new(who: &Principal, nav: &'static str, topics: &'static str, open_alerts: i64) -> Self {
        Self {
            user: who.name.clone(),
            role: who.role.as_str(),
            csrf: who.csrf.clone().unwrap_or_default(),
            nav,
            open_alerts,
            topics,
            event_id: crate::events::rendered_at(),
            event_host: None,
            event_job: None,
            event_repo: None,
            event_progress: None,
            asset_version: assets::version(),
            cp_banner: settings::cpbackup::banner_shown(),
        }
    }

    /// Narrows the page's live events to host `id`'s.
    pub fn for_host(mut self, id: &str) -> Self {
        self.event_host = Some(id.to_owned());
        self
    }

    /// Narrows the page's live events to job `id`'s.
    pub fn for_job(mut self, id: &str) -> Self {
        self.event_job = Some(id.to_owned());
        self
    }

    /// Narrows the page's live events to repository `id`'s and its jobs'.
    pub fn for_repo(mut self, id: &str) -> Self {
        self.event_repo = Some(id.to_owned());
        self
    }

    /// Keeps the job progress and log lines the page is sent to these
    /// hosts' (none: the page shows no progress).
    pub fn progress_of<'a>(mut self, hosts: impl IntoIterator<Item = &'a str>) -> Self {
        self.event_progress = Some(hosts.into_iter().collect::<Vec<_>>().join(","));
        self
    }
}

/// Open alerts across the fleet, for the count in the top bar (0 when the
/// database does not answer: the page itself says what failed).
pub async fn open_alerts(state: &crate::AppState) -> i64 {
    match state.store.read().await {
        Ok(mut c) => rm_store::fleet::open_alerts(&mut c).await.unwrap_or(0),
        Err(_) => 0,
    }
}

/// Whether `who` may run jobs, restore and edit (operator or admin).
pub fn can_operate(who: &Principal) -> bool {
    who.role >= Role::Operator
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    title: &'static str,
    message: String,
    advice: &'static str,
}

/// An error as a page: what happened and what to do, with the error's status.
pub fn error_page(who: &Principal, nav: &'static str, e: &crate::error::ApiError) -> Response {
    let (title, advice) = match e.status.as_u16() {
        404 => (
            "Not found",
            "It may have been removed, or the link is wrong. Start again from the fleet.",
        ),
        403 => (
            "Not allowed",
            "Your role does not allow this. Ask an admin if you need it.",
        ),
        400 | 422 => ("Not accepted", "Correct the value and try again."),
        409 => (
            "Conflict",
            "Reload the page to see the current state, then try again.",
        ),
        503 => (
            "Temporarily unavailable",
            "A part of restic-manager is not answering. Try again in a moment; if it persists, check the server's log.",
        ),
        _ => (
            "Something went wrong",
            "Try again; if it persists, the server's log has the details.",
        ),
    };
    let mut resp = render(&ErrorPage {
        layout: Layout::new(who, nav, "", 0),
        status: e.status.as_u16(),
        title,
        message: e.message.clone(),
        advice,
    });
    *resp.status_mut() = e.status;
    resp
}

/// Renders a page; a template error is logged and answered with a plain 500.
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be rendered; the server log has the details.",
            )
                .into_response()
        }
    }
}
