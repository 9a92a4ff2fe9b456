//! The repository page's edit, detach and delete forms:
//! `POST /repositories/<id>/edit` (rename; new URL or password, verified
//! through a host first), `/repositories/<id>/hosts/<host>/detach` (a
//! confirmation page naming the host, the repository, the host's schedules
//! there and, for the maintenance host, who takes over) and
//! `POST /repositories/<id>/delete` (a confirmation naming the repository
//! and saying its data is not touched). Each calls the function the JSON
//! API calls (`api::repo_admin`); a refusal shows the form again with the
//! field's error and the input kept, except the password.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::AppState;
use crate::api::repo_admin::{self as api, DetachQuery, RepoAdminError, RepoPatchBody};
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::ui::repos::{Shown, keep_url, show};
use crate::ui::run::Errors;
use crate::ui::{Layout, error_page, open_alerts, render};
use crate::views::repo::RepoDetail;

/// The edit form. An empty URL or password keeps the stored one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EditForm {
    pub name: String,
    pub url: String,
    pub password: String,
    /// The host that verifies new credentials; empty: chosen for you.
    pub verify_host: String,
}

impl EditForm {
    /// What the page shows: the refused input (without the password), or
    /// the repository's current name.
    pub fn shown(refused: Option<Self>, repo: &RepoDetail) -> Self {
        match refused {
            Some(f) => Self {
                url: keep_url(&f.url),
                password: String::new(),
                ..f
            },
            None => Self {
                name: repo.name.clone(),
                ..Self::default()
            },
        }
    }
}

/// Puts a refusal on the field of `fields` it names, else at the top.
fn refused(form: &'static str, fields: &[&'static str], e: &RepoAdminError) -> Shown {
    let mut s = Shown::plain();
    s.form = form;
    s.status = match e {
        RepoAdminError::Other(inner) if !inner.status.is_client_error() => inner.status,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    match e.field().and_then(|f| fields.iter().find(|k| **k == f)) {
        Some(f) => s.errors.insert(f, e.message().to_owned()),
        None => {
            s.notice = Some(crate::ui::repos::Notice {
                ok: false,
                text: e.message().to_owned(),
            })
        }
    }
    s
}

/// `POST /repositories/{id}/edit`.
pub async fn edit(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<EditForm>,
) -> Response {
    let body = RepoPatchBody {
        name: Some(f.name.trim().to_owned()),
        url: Some(f.url.trim().to_owned()).filter(|u| !u.is_empty()),
        password: Some(f.password.clone()).filter(|p| !p.is_empty()),
        env: None,
        verify_on_host: Some(f.verify_host.clone()).filter(|h| !h.is_empty()),
    };
    match api::update_repo(&state, &who, id.clone(), body).await {
        Ok(done) => {
            let mut text = "Repository saved.".to_owned();
            if let Some(h) = &done.verified_on {
                let name = host_name(&state, h).await;
                text.push_str(&format!(" The new credentials opened it on {name}."));
            }
            if !done.hosts_kept.is_empty() {
                let mut names = Vec::new();
                for h in &done.hosts_kept {
                    names.push(host_name(&state, h).await);
                }
                text.push_str(&format!(
                    " {} kept credentials of their own: attach them again if those changed too.",
                    names.join(", ")
                ));
            }
            show(&state, &who, &id, Shown::notice(true, text)).await
        }
        Err(e) => {
            let mut shown = refused("edit", &["name", "url", "password", "verify_host"], &e);
            shown.edit = Some(f);
            show(&state, &who, &id, shown).await
        }
    }
}

async fn host_name(state: &AppState, id: &str) -> String {
    match state.store.read().await {
        Ok(mut c) => rm_store::hosts::get(&mut c, id)
            .await
            .map_or_else(|_| id.to_owned(), |h| h.name),
        Err(_) => id.to_owned(),
    }
}

/// The delete form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    pub confirm: Option<String>,
    pub detach_hosts: Option<String>,
}

/// `POST /repositories/{id}/delete`: needs the confirmation.
pub async fn delete(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    let result = if f.confirm.is_none() {
        Err(RepoAdminError::Invalid {
            field: "confirm",
            message: "tick the confirmation to delete this repository's record".into(),
        })
    } else {
        api::delete_repo(&state, &who, id.clone(), f.detach_hosts.is_some()).await
    };
    match result {
        Ok(()) => Redirect::to("/repositories").into_response(),
        Err(e) => {
            show(
                &state,
                &who,
                &id,
                refused("delete", &["confirm", "detach_hosts"], &e),
            )
            .await
        }
    }
}

/// The detach form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DetachForm {
    pub confirm: Option<String>,
    pub delete_schedules: Option<String>,
    /// For the maintenance host: another host's id, or `none`.
    pub new_maintenance_host: String,
}

/// A schedule the host has on the repository, as the page lists it.
#[derive(Debug, Clone)]
pub struct ScheduleLine {
    pub id: String,
    pub kind: String,
    pub cron: String,
    pub timezone: String,
}

#[derive(Template)]
#[template(path = "repository_detach.html")]
pub(crate) struct DetachPage {
    pub(crate) layout: Layout,
    pub(crate) repo: RepoDetail,
    pub(crate) host_id: String,
    pub(crate) host_name: String,
    pub(crate) maintenance: bool,
    /// Other hosts with full access (who could take over maintenance).
    pub(crate) successors: Vec<(String, String)>,
    pub(crate) schedules: Vec<ScheduleLine>,
    pub(crate) form: DetachForm,
    pub(crate) errors: Errors,
    pub(crate) failure: Option<String>,
}

impl DetachPage {
    pub fn err(&self, field: &str) -> Option<&String> {
        self.errors.get(field)
    }
}

async fn detach_page(
    state: &AppState,
    who: &Principal,
    id: &str,
    host: &str,
    form: DetachForm,
    e: Option<RepoAdminError>,
) -> Response {
    let loaded = async {
        let mut conn = state.store.read().await?;
        let repo = crate::views::repo::load(&mut conn, id, state.now()).await?;
        let schedules = rm_store::schedules::for_repo(&mut conn, id)
            .await?
            .into_iter()
            .filter(|s| s.host_id == host)
            .map(|s| ScheduleLine {
                id: s.id,
                kind: s.kind,
                cron: s.cron,
                timezone: s.timezone,
            })
            .collect::<Vec<_>>();
        Ok::<_, ApiError>((repo, schedules))
    }
    .await;
    let (repo, schedules) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(who, "repositories", &e),
    };
    let Some(attached) = repo.hosts.iter().find(|h| h.host_id == host).cloned() else {
        return error_page(
            who,
            "repositories",
            &ApiError::not_found(format!(
                "this host is not attached to repository {}",
                repo.name
            )),
        );
    };
    let successors = repo
        .full_access()
        .into_iter()
        .filter(|h| h.host_id != host)
        .map(|h| (h.host_id.clone(), h.host_name.clone()))
        .collect();
    let mut errors = Errors::new();
    let mut failure = None;
    if let Some(e) = &e {
        match e
            .field()
            .filter(|f| ["confirm", "delete_schedules", "new_maintenance_host"].contains(f))
        {
            Some(f) => errors.insert(f, e.message().to_owned()),
            None => failure = Some(e.message().to_owned()),
        }
    }
    let mut resp = render(&DetachPage {
        layout: Layout::new(who, "repositories", "", open_alerts(state).await),
        host_id: attached.host_id,
        host_name: attached.host_name,
        maintenance: attached.maintenance,
        successors,
        schedules,
        repo,
        form,
        errors,
        failure,
    });
    if e.is_some() {
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

/// `GET /repositories/{id}/hosts/{host}/detach`: the confirmation.
pub async fn detach_form(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path((id, host)): Path<(String, String)>,
) -> Response {
    detach_page(&state, &who, &id, &host, DetachForm::default(), None).await
}

/// `POST /repositories/{id}/hosts/{host}/detach`.
pub async fn detach(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path((id, host)): Path<(String, String)>,
    Form(f): Form<DetachForm>,
) -> Response {
    let result = if f.confirm.is_none() {
        Err(RepoAdminError::Invalid {
            field: "confirm",
            message: "tick the confirmation to detach this host".into(),
        })
    } else {
        let q = DetachQuery {
            delete_schedules: f.delete_schedules.is_some(),
            new_maintenance_host: Some(f.new_maintenance_host.clone())
                .filter(|h| !h.is_empty() && h != "none"),
            no_maintenance_host: f.new_maintenance_host == "none",
        };
        api::detach_host(&state, &who, id.clone(), host.clone(), q).await
    };
    match result {
        Ok(()) => Redirect::to(&format!("/repositories/{id}#hosts")).into_response(),
        Err(e) => detach_page(&state, &who, &id, &host, f, Some(e)).await,
    }
}
