//! Read-only pages of hosts and jobs: `/hosts/<id>`, `/jobs`, `/jobs/<id>`,
//! each rendering one view of `crate::views`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use crate::AppState;
use crate::auth::RequireViewer;
use crate::error::ApiError;
use crate::ui::open_alerts;
use crate::ui::{Layout, can_operate, render};
use crate::views::host::{self, HostView};
use crate::views::job::{self, JobFilter, JobView, JobsPage};

/// Log lines shown on a job page (the newest ones).
const LOG_SHOWN: usize = 1000;

#[derive(Template)]
#[template(path = "host.html")]
pub(crate) struct HostPage {
    pub(crate) layout: Layout,
    pub(crate) host: HostView,
    pub(crate) mutes: crate::views::alert::HostMutes,
    pub(crate) can_operate: bool,
    pub(crate) can_admin: bool,
    /// The tags field as the operator typed it (kept when refused).
    pub(crate) tags_input: String,
    pub(crate) tags_error: Option<String>,
    /// The mute and maintenance-window forms (as refused, or empty).
    pub(crate) forms: crate::ui::alerts::MuteForms,
}

impl HostPage {
    /// Where the mute forms come back to.
    pub(crate) fn mute_back(&self) -> String {
        format!("/hosts/{}#mutes", self.host.id)
    }
}

async fn load_host(
    state: &AppState,
    id: &str,
) -> Result<(HostView, crate::views::alert::HostMutes), ApiError> {
    let mut conn = state.store.read().await?;
    let now = state.now();
    let view = host::load(&mut conn, id, now).await?;
    let mutes = crate::views::alert::host_mutes(&mut conn, id, now).await?;
    Ok((view, mutes))
}

/// `GET /hosts/{id}`.
pub async fn host_page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Path(id): Path<String>,
) -> Response {
    host_page_with(&state, &who, &id, None, Default::default()).await
}

/// The host page; `tags_refused` is the tags form's input and the reason
/// it was refused, shown in the form; `forms` the mute forms' (a refused
/// one makes it a 422).
pub(crate) async fn host_page_with(
    state: &AppState,
    who: &crate::auth::Principal,
    id: &str,
    tags_refused: Option<(String, String)>,
    forms: crate::ui::alerts::MuteForms,
) -> Response {
    let (host, mutes) = match load_host(state, id).await {
        Ok(h) => h,
        Err(e) => return crate::ui::error_page(who, "hosts", &e),
    };
    let (tags_input, tags_error) = match tags_refused {
        Some((input, error)) => (input, Some(error)),
        None => (host.tags.join(", "), None),
    };
    let refused = tags_error.is_some() || forms.status().is_some();
    let mut resp = render(&HostPage {
        layout: Layout::new(who, "hosts", "hosts,jobs,alerts", open_alerts(state).await)
            .for_host(&host.id),
        can_operate: can_operate(who),
        can_admin: who.role >= crate::auth::Role::Admin,
        host,
        mutes,
        tags_input,
        tags_error,
        forms,
    });
    if refused {
        *resp.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

#[derive(Template)]
#[template(path = "job.html")]
pub(crate) struct JobPage {
    pub(crate) layout: Layout,
    pub(crate) job: JobView,
    pub(crate) logs: Vec<rm_store::jobs::LogLine>,
    pub(crate) can_operate: bool,
}

/// `GET /jobs/{id}` (`?page=&change=` page through a result table).
pub async fn job_page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Path(id): Path<String>,
    Query(q): Query<job::ResultQuery>,
) -> Response {
    let loaded = async {
        if !matches!(q.change.as_str(), "" | "added" | "removed" | "changed") {
            return Err(ApiError::invalid(
                "change",
                "show added, removed or changed paths",
            ));
        }
        let mut conn = state.store.read().await?;
        let view = job::load_page(&mut conn, &id, state.now(), &q).await?;
        // Log lines name files and paths: operators only, as on the
        // event stream (events::VISIBILITY).
        let mut logs = if can_operate(&who) {
            rm_store::jobs::logs(&mut conn, &id).await?
        } else {
            Vec::new()
        };
        let skip = logs.len().saturating_sub(LOG_SHOWN);
        logs.drain(..skip);
        Ok::<_, ApiError>((view, logs))
    }
    .await;
    let (job, logs) = match loaded {
        Ok(x) => x,
        Err(e) => return crate::ui::error_page(&who, "jobs", &e),
    };
    render(&JobPage {
        layout: Layout::new(&who, "jobs", "jobs", open_alerts(&state).await).for_job(&id),
        can_operate: can_operate(&who),
        job,
        logs,
    })
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub(crate) struct JobsListPage {
    pub(crate) layout: Layout,
    pub(crate) page: JobsPage,
    pub(crate) filter: JobFilter,
    /// Suggestions for the host filter: the hosts of the listed jobs.
    pub(crate) hosts: Vec<(String, String)>,
    /// What the host filter shows: the chosen host's name, or what was typed.
    pub(crate) host_label: String,
    pub(crate) kinds: &'static [&'static str],
    pub(crate) statuses: [&'static str; 8],
    pub(crate) sinces: [(&'static str, &'static str); 4],
}

async fn load_jobs(state: &AppState, filter: &JobFilter) -> Result<JobsPage, ApiError> {
    if let Err((field, message)) = filter.validate() {
        return Err(ApiError::invalid(field, message));
    }
    let mut conn = state.store.read().await?;
    Ok(job::list(&mut conn, filter, state.now()).await?)
}

/// `GET /jobs`. The host filter is a search box: it takes a host's id or
/// exact name, and suggests names from `GET /api/v1/host-names` (with
/// script) or the hosts on this page (without), so the page never loads
/// every host of the fleet.
pub async fn jobs_page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Query(mut filter): Query<JobFilter>,
) -> Response {
    let host_label = filter.host.clone();
    // A name that names no host stays as typed: the list is then empty.
    if !filter.host.is_empty()
        && let Ok(mut c) = state.store.read().await
        && let Ok(Some(id)) = rm_store::hosts::resolve(&mut c, filter.host.trim()).await
    {
        filter.host = id;
    }
    let page = match load_jobs(&state, &filter).await {
        Ok(p) => p,
        Err(e) => return crate::ui::error_page(&who, "jobs", &e),
    };
    let mut hosts: Vec<(String, String)> = Vec::new();
    for j in &page.jobs {
        if !hosts.iter().any(|(id, _)| *id == j.host_id) {
            hosts.push((j.host_id.clone(), j.host_name.clone()));
        }
    }
    hosts.sort_by(|a, b| a.1.cmp(&b.1));
    let host_label = hosts
        .iter()
        .find(|(id, _)| *id == filter.host)
        .map_or(host_label, |(_, name)| name.clone());
    let mut layout = Layout::new(&who, "jobs", "jobs", open_alerts(&state).await);
    layout = if filter.host.is_empty() {
        // the list shows no progress: every job's other events, none's progress
        layout.progress_of([])
    } else {
        // one host's jobs: its events only
        layout.for_host(&filter.host)
    };
    render(&JobsListPage {
        layout,
        page,
        filter,
        hosts,
        host_label,
        kinds: &job::KINDS,
        statuses: job::STATUSES,
        sinces: job::SINCES,
    })
}
