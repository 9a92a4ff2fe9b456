//! Settings → Control-plane backup (admin): the daily backup of the
//! installation itself — its repository, "Back up now", the last runs and
//! the next — and the recovery kit download. Also the banner every page
//! shows admins until a recovery kit was exported ([`banner`]).
//!
//! The status comes from `rm_store::cpbackup::status` for the page and its
//! JSON twin (`GET /api/v1/controlplane-backup`) alike; the kit from
//! `rm_store::recovery`, as `restic-manager recovery-kit` makes it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use askama::Template;
use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::frame;
use crate::AppState;
use crate::auth::{Authn, Principal, RequireAdmin, Role};
use crate::error::ApiError;
use crate::ui::{Layout, error_page, render};

/// What the web role knows for the kit: the data directory holding the
/// master key (`None`: this web role has none), and whether a kit was
/// exported (once true it stays true: exports are never deleted).
#[derive(Debug, Default)]
pub struct Recovery {
    data_dir: Mutex<Option<PathBuf>>,
    kit_known: AtomicBool,
}

impl Recovery {
    pub fn set_data_dir(&self, dir: PathBuf) {
        *self.data_dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
    }

    fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

tokio::task_local! {
    static BANNER: bool;
}

/// Whether the page being rendered shows the control-plane banner (set by
/// [`banner`] for the request; false outside one).
pub fn banner_shown() -> bool {
    BANNER.try_with(|b| *b).unwrap_or(false)
}

/// Middleware: an admin's page request learns whether a recovery kit was
/// ever exported; until one was, the layout shows a banner linking here.
pub async fn banner(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let admin = matches!(req.extensions().get::<Authn>(), Some(Authn::Principal(p)) if p.role >= Role::Admin);
    let path = req.uri().path();
    let page = req.method() == Method::GET
        && !path.starts_with("/api/")
        && !path.starts_with("/static/")
        && !path.starts_with("/events")
        && !path.starts_with("/fragments/")
        && !path.starts_with("/download/");
    let show = admin && page && !kit_exported(&state).await;
    BANNER.scope(show, next.run(req)).await
}

async fn kit_exported(state: &AppState) -> bool {
    if state.recovery.kit_known.load(Ordering::Relaxed) {
        return true;
    }
    let known = match state.store.read().await {
        Ok(mut c) => rm_store::cpbackup::status(&mut c)
            .await
            .is_ok_and(|s| s.master_key_backed_up()),
        // no banner when the database does not answer: the page says why
        Err(_) => true,
    };
    if known {
        state.recovery.kit_known.store(true, Ordering::Relaxed);
    }
    known
}

/// The status as the API gives it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CpBackupView {
    /// The repository the daily backup goes to (`null`: not chosen).
    pub repo_id: Option<String>,
    pub repo_name: Option<String>,
    /// When the next run is due (ms); `null` without a repository.
    pub next_run_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// A recovery kit was exported: the master key exists outside this machine.
    pub master_key_backed_up: bool,
    pub last_kit_export_at: Option<i64>,
    pub last_kit_export_by: Option<String>,
    /// Recent runs, newest first.
    pub runs: Vec<RunView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// running | succeeded | failed
    pub status: String,
    pub job_id: Option<String>,
    pub files: Option<i64>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
}

/// One query for the page and the API.
pub async fn view(state: &AppState) -> Result<(CpBackupView, Vec<(String, String)>), ApiError> {
    let mut c = state.store.read().await.map_err(ApiError::from)?;
    let s = rm_store::cpbackup::status(&mut c)
        .await
        .map_err(ApiError::from)?;
    let runs = rm_store::cpbackup::recent_runs(&mut c, 10)
        .await
        .map_err(ApiError::from)?;
    let repos: Vec<(String, String)> = rm_store::repos::list(&mut c)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    let repo_name = s
        .repo_id()
        .and_then(|id| repos.iter().find(|(r, _)| r == id).map(|(_, n)| n.clone()));
    Ok((
        CpBackupView {
            repo_id: s.repo_id().map(str::to_owned),
            repo_name,
            next_run_at: s.next_run(),
            last_success_at: s.last_success.as_ref().and_then(|r| r.finished_at),
            master_key_backed_up: s.master_key_backed_up(),
            last_kit_export_at: s.last_kit.as_ref().map(|k| k.exported_at),
            last_kit_export_by: s
                .last_kit
                .as_ref()
                .map(|k| format!("{} ({})", k.actor, k.via)),
            runs: runs
                .into_iter()
                .map(|r| RunView {
                    id: r.id,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    status: r.status,
                    job_id: r.job_id,
                    files: r.files,
                    bytes: r.bytes,
                    error: r.error,
                })
                .collect(),
        },
        repos,
    ))
}

/// `GET /api/v1/controlplane-backup`.
pub async fn api_status(
    State(state): State<AppState>,
    RequireAdmin(_who): RequireAdmin,
) -> Result<axum::Json<CpBackupView>, ApiError> {
    Ok(axum::Json(view(&state).await?.0))
}

#[derive(Template)]
#[template(path = "settings_cpbackup.html")]
pub(crate) struct CpBackupPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) v: CpBackupView,
    pub(crate) repos: Vec<(String, String)>,
    pub(crate) notice: Option<&'static str>,
    pub(crate) error: Option<String>,
    /// This web role holds the master key (else: the command line).
    pub(crate) can_export: bool,
    pub(crate) now: i64,
}

impl CpBackupPage {
    pub fn status_class(&self, s: &str) -> &'static str {
        match s {
            "succeeded" => "s-ok",
            "running" => "s-running",
            _ => "s-fail",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Notice {
    pub done: String,
}

async fn page(
    state: &AppState,
    who: &Principal,
    notice: Option<&'static str>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    match view(state).await {
        Ok((v, repos)) => {
            let mut resp = render(&CpBackupPage {
                layout: frame(state, who).await,
                is_admin: true,
                sub: "controlplane-backup",
                v,
                repos,
                notice,
                error,
                can_export: state.recovery.data_dir().is_some(),
                now: state.now(),
            });
            *resp.status_mut() = status;
            resp
        }
        Err(e) => error_page(who, "settings", &e),
    }
}

/// `GET /settings/controlplane-backup`.
pub async fn show(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Query(n): Query<Notice>,
) -> Response {
    let notice = match n.done.as_str() {
        "repo" => Some("Saved. The control-plane backup uses this repository from its next run."),
        "cleared" => Some("No repository: the daily control-plane backup is off."),
        "run" => Some("A control-plane backup starts within a few seconds; this page shows it."),
        _ => None,
    };
    page(&state, &who, notice, None, StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RepoForm {
    pub repo_id: String,
}

/// `POST /settings/controlplane-backup`: choose (or clear) the repository.
pub async fn set_repo(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Form(f): Form<RepoForm>,
) -> Response {
    let id = f.repo_id.trim();
    let result = async {
        let mut tx = state.store.write().await?;
        if !id.is_empty() {
            rm_store::repos::get(&mut tx, id).await?;
        }
        rm_store::cpbackup::set_repo(
            &mut tx,
            (!id.is_empty()).then_some(id),
            &who.name,
            state.now(),
        )
        .await?;
        tx.commit().await.map_err(rm_store::StoreError::from)
    }
    .await;
    match result {
        Ok(()) => {
            crate::api::audit(
                &state,
                &who,
                "controlplane_backup.repository",
                "controlplane",
                "backup",
                Some(serde_json::json!({"repo_id": (!id.is_empty()).then_some(id)})),
            )
            .await;
            let done = if id.is_empty() { "cleared" } else { "repo" };
            Redirect::to(&format!("/settings/controlplane-backup?done={done}")).into_response()
        }
        Err(rm_store::StoreError::NotFound { .. }) => {
            page(
                &state,
                &who,
                None,
                Some(format!(
                    "Repository: no repository {id:?}; choose one from the list."
                )),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => error_page(&who, "settings", &ApiError::from(e)),
    }
}

/// `POST /settings/controlplane-backup/run`: back up now.
pub async fn run_now(State(state): State<AppState>, RequireAdmin(who): RequireAdmin) -> Response {
    let result = async {
        let mut tx = state.store.write().await?;
        let ok = rm_store::cpbackup::request_run(&mut tx, &who.name, state.now()).await?;
        tx.commit().await.map_err(rm_store::StoreError::from)?;
        Ok::<bool, rm_store::StoreError>(ok)
    }
    .await;
    match result {
        Ok(true) => {
            crate::api::audit(
                &state,
                &who,
                "controlplane_backup.run",
                "controlplane",
                "backup",
                None,
            )
            .await;
            Redirect::to("/settings/controlplane-backup?done=run").into_response()
        }
        Ok(false) => {
            page(
                &state,
                &who,
                None,
                Some("Choose a repository first: the backup needs one.".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => error_page(&who, "settings", &ApiError::from(e)),
    }
}

/// `POST /settings/controlplane-backup/recovery-kit`: the kit as a file
/// download (never cached), recorded and audited.
pub async fn recovery_kit(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
) -> Response {
    let Some(dir) = state.recovery.data_dir() else {
        return page(&state, &who, None, Some("This web service has no master key: run `restic-manager recovery-kit` on the machine that runs the control plane.".into()), StatusCode::CONFLICT).await;
    };
    let kit = match rm_store::recovery::kit(&state.store, &dir).await {
        Ok(k) => k,
        Err(e) => {
            return page(
                &state,
                &who,
                None,
                Some(format!("The recovery kit could not be made: {e:#}")),
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .await;
        }
    };
    let recorded = async {
        let mut tx = state.store.write().await?;
        rm_store::cpbackup::kit_exported(
            &mut tx,
            &who.name,
            "web",
            kit.repo.as_ref().map(|r| r.id.as_str()),
            state.now(),
        )
        .await?;
        tx.commit().await.map_err(rm_store::StoreError::from)
    }
    .await;
    if let Err(e) = recorded {
        // a kit nobody knows was handed out would leave the warning wrong
        return error_page(&who, "settings", &ApiError::from(e));
    }
    state.recovery.kit_known.store(true, Ordering::Relaxed);
    crate::api::audit(
        &state,
        &who,
        "controlplane_backup.recovery_kit",
        "controlplane",
        "backup",
        Some(serde_json::json!({"repo_id": kit.repo.as_ref().map(|r| r.id.clone())})),
    )
    .await;
    let mut resp = kit.render().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        rm_store::recovery::FILE_NAME
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}
