//! Pages that change something: run an operation on a host, cancel a job,
//! add a host (its enrollment command), revoke a host. Each is a plain
//! form post (no script needed) turned into the same service request the
//! JSON API sends to the owning role, with the operator's identity; the
//! answer is a redirect to the object's page, or the form again with the
//! reason when the owner refused.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use rm_bus::subject::SvcRole;
use rm_cp_api as api;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::svc;
use crate::ui::open_alerts;
use crate::ui::run::{self, Errors, RunForm};
use crate::ui::{Layout, error_page, render};

async fn call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    state: &AppState,
    who: &Principal,
    verb: rm_bus::subject::Verb,
    body: B,
) -> Result<R, ApiError> {
    Ok(svc::call(
        &state.bus,
        SvcRole::Controlplane,
        verb,
        who.actor(),
        body,
        state.svc_timeout,
    )
    .await?)
}

// ------------------------------------------------------------ run an operation

#[derive(Template)]
#[template(path = "run.html")]
pub(crate) struct RunPage {
    pub(crate) layout: Layout,
    pub(crate) host_id: String,
    pub(crate) host_name: String,
    pub(crate) restic_host: String,
    pub(crate) host_offline: bool,
    pub(crate) kinds: [(&'static str, &'static str); 8],
    pub(crate) form: RunForm,
    pub(crate) errors: Errors,
    pub(crate) repos: Vec<(String, String)>,
    pub(crate) snapshots: Vec<(String, String)>,
    pub(crate) keeps: [(&'static str, &'static str); 6],
    pub(crate) help: &'static str,
    pub(crate) submit: &'static str,
    pub(crate) needs_confirm: bool,
    pub(crate) confirm_text: String,
    pub(crate) failure: Option<String>,
}

const KEEPS: [(&str, &str); 6] = [
    ("keep_last", "Last"),
    ("keep_hourly", "Hourly"),
    ("keep_daily", "Daily"),
    ("keep_weekly", "Weekly"),
    ("keep_monthly", "Monthly"),
    ("keep_yearly", "Yearly"),
];

fn help(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "backup" => (
            "Backs up these paths now, with this host's own (append-only) credential.",
            "Start backup",
        ),
        "snapshots" => (
            "Asks the repository for its current snapshots and refreshes what this page shows.",
            "Refresh snapshots",
        ),
        "stats" => ("Measures how much the repository holds.", "Run statistics"),
        "check" => (
            "Verifies the repository's structure; with “read data” also reads back that share of the stored data.",
            "Start check",
        ),
        "diff" => (
            "Lists what changed between two snapshots: added, removed and modified paths with sizes.",
            "Compare",
        ),
        "forget" => (
            "Removes this host's snapshots that the policy does not keep. Runs on the repository's maintenance host.",
            "Forget snapshots",
        ),
        "prune" => (
            "Removes data that no snapshot references any more, freeing space. The repository is locked while it runs.",
            "Prune",
        ),
        "unlock" => (
            "Removes stale locks left by crashed restic processes. Locks of running processes are kept (never --remove-all).",
            "Unlock",
        ),
        _ => ("", "Run"),
    }
}

fn confirm_text(kind: &str, host: &str) -> String {
    match kind {
        "forget" => format!("I understand this permanently removes the snapshots of {host} that the policy does not keep."),
        "prune" => "I understand prune rewrites the chosen repository and locks it while it runs.".into(),
        "unlock" => "I understand this removes the chosen repository's stale locks.".into(),
        _ => "Reading data is slow and may cost transfer: confirm to read it (not needed for a structure-only check).".into(),
    }
}

/// `kind` from the query string of `GET /hosts/{id}/run`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KindQuery {
    pub kind: String,
}

async fn run_page(
    state: &AppState,
    who: &Principal,
    host_id: &str,
    form: RunForm,
    errors: Errors,
    failure: Option<String>,
) -> Response {
    let loaded = async {
        let mut conn = state.store.read().await?;
        let host = rm_store::hosts::get(&mut conn, host_id).await?;
        let creds = rm_store::repos::credentials_of_host(&mut conn, host_id).await?;
        let ids: Vec<&str> = creds.iter().map(|c| c.repo_id.as_str()).collect();
        let all = rm_store::repos::of_ids(&mut conn, &ids).await?;
        let repos: Vec<(String, String)> = creds
            .iter()
            .filter_map(|c| {
                all.iter()
                    .find(|r| r.id == c.repo_id)
                    .map(|r| (r.id.clone(), r.name.clone()))
            })
            .collect();
        let mut snapshots = Vec::new();
        if let Some(rh) = host.restic_host.as_deref() {
            for (repo_id, repo_name) in &repos {
                for s in rm_store::snapshots::list(&mut conn, repo_id, Some(rh))
                    .await?
                    .into_iter()
                    .take(200)
                {
                    let when = crate::ui::fmt::absolute(s.time);
                    snapshots.push((
                        s.snapshot_id.clone(),
                        format!("{} · {when} · {repo_name}", s.short_id),
                    ));
                }
            }
        }
        Ok::<_, ApiError>((host, repos, snapshots))
    }
    .await;
    let (host, repos, snapshots) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(who, "hosts", &e),
    };
    let mut form = form;
    if form.kind.is_empty() || !run::KINDS.iter().any(|(k, _)| *k == form.kind) {
        form.kind = "backup".into();
    }
    if let Some((id, _)) = repos.first().filter(|_| form.repo_id.is_empty()) {
        form.repo_id = id.clone();
    }
    let (help, submit) = help(&form.kind);
    let status = if errors.is_empty() && failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut resp = render(&RunPage {
        layout: Layout::new(who, "hosts", "", open_alerts(state).await),
        needs_confirm: matches!(form.kind.as_str(), "forget" | "prune" | "unlock" | "check"),
        confirm_text: confirm_text(&form.kind, &host.name),
        restic_host: host.restic_host.clone().unwrap_or_else(|| host.id.clone()),
        host_offline: host.status == "offline",
        host_id: host.id,
        host_name: host.name,
        kinds: run::KINDS,
        form,
        errors,
        repos,
        snapshots,
        keeps: KEEPS,
        help,
        submit,
        failure,
    });
    *resp.status_mut() = status;
    resp
}

/// `GET /hosts/{id}/run?kind=…`.
pub async fn run_form(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Query(q): Query<KindQuery>,
) -> Response {
    let form = RunForm {
        kind: q.kind,
        ..RunForm::default()
    };
    run_page(&state, &who, &id, form, Errors::new(), None).await
}

/// `POST /hosts/{id}/run`: creates the job and shows its page.
pub async fn run_submit(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(form): Form<RunForm>,
) -> Response {
    let restic_host = match state.store.read().await {
        Ok(mut c) => match rm_store::hosts::get(&mut c, &id).await {
            Ok(h) => h.restic_host.unwrap_or(h.id),
            Err(e) => return error_page(&who, "hosts", &e.into()),
        },
        Err(e) => return error_page(&who, "hosts", &e.into()),
    };
    let (params, timeout_secs) = match run::parse(&form, &restic_host) {
        Ok(p) => p,
        Err(errors) => return run_page(&state, &who, &id, form, errors, None).await,
    };
    let body = api::JobCreate {
        host_id: id.clone(),
        repo_id: form.repo_id.clone(),
        params,
        timeout_secs,
        target_host_id: None,
    };
    match call::<_, api::JobCreated>(&state, &who, api::JOB_CREATE, body).await {
        Ok(created) => Redirect::to(&format!("/jobs/{}", created.job_id)).into_response(),
        Err(e) => run_page(&state, &who, &id, form, Errors::new(), Some(e.message)).await,
    }
}

// ------------------------------------------------------------ cancel, revoke

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
) -> Response {
    match call::<_, api::JobState>(
        &state,
        &who,
        api::JOB_CANCEL,
        api::JobRef { job_id: id.clone() },
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(e) => error_page(&who, "jobs", &e),
    }
}

/// `POST /hosts/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
) -> Response {
    match call::<_, api::Done>(
        &state,
        &who,
        api::HOST_REVOKE,
        api::HostRef {
            host_id: id.clone(),
        },
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/hosts/{id}")).into_response(),
        Err(e) => error_page(&who, "hosts", &e),
    }
}

// ------------------------------------------------------------ add a host

#[derive(Template)]
#[template(path = "host_new.html")]
pub(crate) struct AddHostPage {
    pub(crate) layout: Layout,
    pub(crate) name: String,
    pub(crate) error: Option<String>,
    pub(crate) enrollment: Option<api::HostEnrollment>,
    pub(crate) now: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AddHostForm {
    pub name: String,
}

/// `GET /hosts/new`.
pub async fn add_host_form(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
) -> Response {
    render(&AddHostPage {
        layout: Layout::new(&who, "hosts", "", open_alerts(&state).await),
        name: String::new(),
        error: None,
        enrollment: None,
        now: state.now(),
    })
}

/// `POST /hosts/{id}/token`: a new enrollment command for a host (first
/// enrollment that expired, or re-enrollment).
pub async fn new_token(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
) -> Response {
    let name = match state.store.read().await {
        Ok(mut c) => match rm_store::hosts::get(&mut c, &id).await {
            Ok(h) => h.name,
            Err(e) => return error_page(&who, "hosts", &e.into()),
        },
        Err(e) => return error_page(&who, "hosts", &e.into()),
    };
    let (req, key) = api::HostTokenRequest::new(id);
    let enrollment = call::<_, api::SealedEnrollment>(&state, &who, api::HOST_TOKEN, req)
        .await
        .and_then(|e| crate::api::hosts::open_enrollment(&e, &key));
    match enrollment {
        Ok(enrollment) => render(&AddHostPage {
            layout: Layout::new(&who, "hosts", "hosts", open_alerts(&state).await),
            name,
            error: None,
            enrollment: Some(enrollment),
            now: state.now(),
        }),
        Err(e) => error_page(&who, "hosts", &e),
    }
}

/// `POST /hosts/new`: adds the host and shows its enrollment command.
pub async fn add_host(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Form(form): Form<AddHostForm>,
) -> Response {
    let name = form.name.trim().to_owned();
    let result = if name.is_empty() {
        Err(ApiError::invalid("name", "give the host a name"))
    } else if name.chars().count() > 100 {
        Err(ApiError::invalid("name", "at most 100 characters"))
    } else {
        let (req, key) = api::HostAdd::new(name.clone());
        call::<_, api::SealedEnrollment>(&state, &who, api::HOST_ADD, req)
            .await
            .and_then(|e| crate::api::hosts::open_enrollment(&e, &key))
    };
    let (enrollment, error) = match result {
        Ok(e) => (Some(e), None),
        Err(e) => (None, Some(e.message)),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut resp = render(&AddHostPage {
        layout: Layout::new(&who, "hosts", "hosts", open_alerts(&state).await),
        name,
        error,
        enrollment,
        now: state.now(),
    });
    *resp.status_mut() = status;
    resp
}
