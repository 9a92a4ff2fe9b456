//! Settings → Control-plane backup (admin): the daily backup of the
//! installation itself — its repository and time of day (in a time zone,
//! the server's by default), "Back up now", the last runs and the next —
//! and the recovery kit download. Also the banner every page
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
use rm_store::cpbackup::RunRequest;
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
    /// The time of day of the daily run, `HH:MM`.
    pub run_at: String,
    /// The zone an admin chose for it (`null`: the server's).
    pub time_zone: Option<String>,
    /// The zone the time of day is read in (the chosen one, else the
    /// server's; UTC if this machine does not know the chosen one).
    pub effective_time_zone: String,
    /// When the next run is due (ms); `null` without a repository.
    pub next_run_at: Option<i64>,
    /// That time in the effective zone, `YYYY-MM-DD HH:MM ZONE`.
    pub next_run_local: Option<String>,
    /// When the run in progress started (ms); `null`: none is running.
    pub running_since: Option<i64>,
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

/// Repositories the page's field suggests before anything is typed (the
/// first by name); typing asks `GET /api/v1/repos?q=` for more, so an
/// installation with thousands of repositories never lists them all here.
const SUGGESTED: i64 = 20;

/// One query for the page and the API.
pub async fn view(state: &AppState) -> Result<CpBackupView, ApiError> {
    let mut c = state.store.read().await.map_err(ApiError::from)?;
    let s = rm_store::cpbackup::status(&mut c)
        .await
        .map_err(ApiError::from)?;
    let runs = rm_store::cpbackup::recent_runs(&mut c, 10)
        .await
        .map_err(ApiError::from)?;
    let repo_name = match s.repo_id() {
        Some(id) => rm_store::repos::names_of(&mut c, &[id])
            .await
            .map_err(ApiError::from)?
            .pop()
            .map(|(_, name)| name),
        None => None,
    };
    let settings = s.settings.clone().unwrap_or(rm_store::cpbackup::Settings {
        repo_id: None,
        run_requested_at: None,
        updated_at: 0,
        updated_by: String::new(),
        run_at_minute: None,
        time_zone: None,
    });
    let daily = settings.daily();
    let minute = settings.run_at_minute();
    let next_run_at = s.next_run();
    Ok(CpBackupView {
        repo_id: s.repo_id().map(str::to_owned),
        repo_name,
        run_at: format!("{:02}:{:02}", minute / 60, minute % 60),
        time_zone: settings.time_zone.clone(),
        effective_time_zone: daily.timezone().to_owned(),
        next_run_at,
        next_run_local: next_run_at.map(|at| local_time(at.max(state.now()), daily.timezone())),
        running_since: s.running(state.now()).map(|r| r.started_at),
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
    })
}

/// The names the page's repository field suggests before anything is
/// typed ([`SUGGESTED`]); the page's only, not its JSON twin's.
async fn suggested(state: &AppState) -> Result<Vec<String>, ApiError> {
    let mut c = state.store.read().await.map_err(ApiError::from)?;
    Ok(rm_store::repos::after(&mut c, "", None, SUGGESTED)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|r| r.name)
        .collect())
}

/// `at` (ms) as `YYYY-MM-DD HH:MM ZONE` in the IANA zone `zone`.
fn local_time(at: i64, zone: &str) -> String {
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    match jiff::Timestamp::from_millisecond(at) {
        Ok(ts) => format!("{} {zone}", ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M")),
        Err(_) => at.to_string(),
    }
}

/// `GET /api/v1/controlplane-backup`.
pub async fn api_status(
    State(state): State<AppState>,
    RequireAdmin(_who): RequireAdmin,
) -> Result<axum::Json<CpBackupView>, ApiError> {
    Ok(axum::Json(view(&state).await?))
}

#[derive(Template)]
#[template(path = "settings_cpbackup.html")]
pub(crate) struct CpBackupPage {
    pub(crate) layout: Layout,
    pub(crate) is_admin: bool,
    pub(crate) sub: &'static str,
    pub(crate) v: CpBackupView,
    /// The repository field's first suggestions ([`SUGGESTED`] names).
    pub(crate) suggested: Vec<String>,
    pub(crate) notice: Option<&'static str>,
    pub(crate) error: Option<String>,
    /// This web role holds the master key (else: the command line).
    pub(crate) can_export: bool,
    pub(crate) now: i64,
    /// The form's values: what was sent when it is shown again with an
    /// error, else the saved ones.
    pub(crate) form: RepoForm,
    /// The server's zone (what an empty zone field means).
    pub(crate) server_zone: String,
}

impl CpBackupPage {
    /// The refusal that belongs under `field` (`repo`, `run_at` or
    /// `time_zone`): the form's checks start their message with that
    /// field's label.
    pub fn field_error(&self, field: &str) -> Option<&str> {
        let label = match field {
            "repo" => "Repository:",
            "run_at" => "Time of day:",
            "time_zone" => "Time zone:",
            _ => return None,
        };
        self.error.as_deref().filter(|e| e.starts_with(label))
    }

    /// Whether the error is one shown under its field (the banner then
    /// only points there).
    pub fn error_is_a_field(&self) -> bool {
        ["repo", "run_at", "time_zone"]
            .iter()
            .any(|f| self.field_error(f).is_some())
    }

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
    page_with(state, who, notice, error, status, None).await
}

async fn page_with(
    state: &AppState,
    who: &Principal,
    notice: Option<&'static str>,
    error: Option<String>,
    status: StatusCode,
    kept: Option<RepoForm>,
) -> Response {
    match tokio::try_join!(view(state), suggested(state)) {
        Ok((v, suggested)) => {
            let form = kept.unwrap_or_else(|| RepoForm {
                repo: v
                    .repo_name
                    .clone()
                    .or_else(|| v.repo_id.clone())
                    .unwrap_or_default(),
                run_at: v.run_at.clone(),
                time_zone: v.time_zone.clone().unwrap_or_default(),
            });
            let mut resp = render(&CpBackupPage {
                layout: frame(state, who).await,
                is_admin: true,
                sub: "controlplane-backup",
                v,
                suggested,
                notice,
                error,
                can_export: state.recovery.data_dir().is_some(),
                now: state.now(),
                form,
                server_zone: rm_cron::system_zone_name(),
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
        "repo" => {
            Some("Saved. The control-plane backup uses this repository and time from its next run.")
        }
        "cleared" => Some("No repository: the daily control-plane backup is off."),
        "run" => Some("A control-plane backup starts within a few seconds; this page shows it."),
        "running" => Some(
            "A control-plane backup was already running, so no second one was queued; this page shows its outcome.",
        ),
        _ => None,
    };
    page(&state, &who, notice, None, StatusCode::OK).await
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RepoForm {
    /// The repository's name or id; empty: none (the daily backup off).
    /// `repo_id` is what the field was called while it was a list.
    #[serde(alias = "repo_id")]
    pub repo: String,
    /// `HH:MM` (a time input); empty: keep the saved time.
    pub run_at: String,
    /// An IANA zone; empty: the server's.
    pub time_zone: String,
}

/// `HH:MM` (or `HH:MM:SS`, as some browsers send) as minutes after
/// midnight.
fn parse_time_of_day(s: &str) -> Option<i64> {
    let mut parts = s.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec_ok = parts
        .next()
        .is_none_or(|sec| sec.parse::<u8>().is_ok_and(|x| x < 60));
    ((0..24).contains(&h) && (0..60).contains(&m) && sec_ok && parts.next().is_none())
        .then_some(h * 60 + m)
}

/// The form's time and zone, checked: `None` time keeps the saved one.
fn schedule_of(f: &RepoForm) -> Result<(Option<i64>, Option<String>), String> {
    let run_at = f.run_at.trim();
    let minute = if run_at.is_empty() {
        None
    } else {
        Some(parse_time_of_day(run_at).ok_or_else(|| {
            format!("Time of day: {run_at:?} is not a time such as 02:30 (24-hour HH:MM).")
        })?)
    };
    let zone = f.time_zone.trim();
    if zone.is_empty() {
        return Ok((minute, None));
    }
    rm_store::cpbackup::daily(0, zone).map_err(|_| {
        format!("Time zone: {zone:?} is not a time zone this server knows; give an IANA name such as Europe/Berlin, or leave it empty for the server's.")
    })?;
    Ok((minute, Some(zone.to_owned())))
}

/// `POST /settings/controlplane-backup`: choose (or clear) the repository
/// and set the time of day and its zone.
pub async fn set_repo(
    State(state): State<AppState>,
    RequireAdmin(who): RequireAdmin,
    Form(f): Form<RepoForm>,
) -> Response {
    let key = f.repo.trim();
    let (minute, zone) = match schedule_of(&f) {
        Ok(s) => s,
        Err(e) => {
            return page_with(
                &state,
                &who,
                None,
                Some(e),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(f.clone()),
            )
            .await;
        }
    };
    let result = async {
        let mut tx = state.store.write().await?;
        let id = match key {
            "" => None,
            key => Some(rm_store::repos::by_name_or_id(&mut tx, key).await?.id),
        };
        rm_store::cpbackup::set_repo(&mut tx, id.as_deref(), &who.name, state.now()).await?;
        let minute = match minute {
            Some(m) => m,
            None => rm_store::cpbackup::settings(&mut tx)
                .await?
                .map_or(rm_store::cpbackup::DEFAULT_RUN_AT_MINUTE, |s| {
                    s.run_at_minute()
                }),
        };
        rm_store::cpbackup::set_schedule(&mut tx, minute, zone.as_deref(), &who.name, state.now())
            .await?;
        tx.commit().await.map_err(rm_store::StoreError::from)?;
        Ok::<_, rm_store::StoreError>((id, minute))
    }
    .await;
    match result {
        Ok((id, minute)) => {
            crate::api::audit(
                &state,
                &who,
                "controlplane_backup.repository",
                "controlplane",
                "backup",
                Some(serde_json::json!({
                    "repo_id": id,
                    "run_at": format!("{:02}:{:02}", minute / 60, minute % 60),
                    "time_zone": zone,
                })),
            )
            .await;
            let done = if id.is_none() { "cleared" } else { "repo" };
            Redirect::to(&format!("/settings/controlplane-backup?done={done}")).into_response()
        }
        Err(rm_store::StoreError::NotFound { .. }) => {
            page_with(
                &state,
                &who,
                None,
                Some(format!(
                    "Repository: no repository is named {key:?} or has that id; type part of a name and pick one of the suggestions, or leave it empty to turn the daily backup off."
                )),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(f.clone()),
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
        let asked = rm_store::cpbackup::request_run(&mut tx, &who.name, state.now()).await?;
        tx.commit().await.map_err(rm_store::StoreError::from)?;
        Ok::<RunRequest, rm_store::StoreError>(asked)
    }
    .await;
    match result {
        Ok(RunRequest::Requested) => {
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
        Ok(RunRequest::AlreadyRunning(_)) => {
            Redirect::to("/settings/controlplane-backup?done=running").into_response()
        }
        Ok(RunRequest::NoRepository) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_of_day_is_24_hour_hh_mm() {
        assert_eq!(parse_time_of_day("02:30"), Some(150));
        assert_eq!(parse_time_of_day("23:59:00"), Some(23 * 60 + 59));
        assert_eq!(parse_time_of_day("00:00"), Some(0));
        for bad in ["24:00", "2:60", "noon", "", "02", "02:30:61", "1:2:3:4"] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_form_names_the_field_it_refuses() {
        let f = |run_at: &str, tz: &str| RepoForm {
            repo: String::new(),
            run_at: run_at.into(),
            time_zone: tz.into(),
        };
        assert_eq!(schedule_of(&f("03:15", "")), Ok((Some(195), None)));
        assert_eq!(schedule_of(&f("", "UTC")), Ok((None, Some("UTC".into()))));
        assert!(
            schedule_of(&f("25:00", ""))
                .unwrap_err()
                .starts_with("Time of day:")
        );
        assert!(
            schedule_of(&f("03:00", "Mars/Olympus"))
                .unwrap_err()
                .starts_with("Time zone:")
        );
    }
}
