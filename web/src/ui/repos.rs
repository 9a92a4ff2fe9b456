//! Repository pages: `/repositories/<id>` (health, size over time,
//! attached hosts, maintenance host, locks) with its forms — test the
//! connection, attach a host, choose the maintenance host, list locks,
//! a safe unlock behind a confirmation naming the repository — and
//! `/repositories/new` (add: initialise through a host, or verify an
//! existing one). Every form calls the same function the JSON API's
//! handler calls (`api::repos`); a refusal shows the form again with the
//! field's error and the input kept, except secrets, which are never
//! shown back.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::AppState;
use crate::api::repos::{self as api, AttachBody, RepoAddBody, SecretsBody};
use crate::auth::{Principal, RequireOperator, RequireViewer};
use crate::error::ApiError;
use crate::ui::run::Errors;
use crate::ui::{Layout, can_operate, error_page, open_alerts, render};
use crate::views::repo::{self as view, RepoDetail, SizeChart};

/// A message at the top of the page after an action.
#[derive(Debug, Clone)]
pub struct Notice {
    pub ok: bool,
    pub text: String,
}

/// The attach form (its secrets are never rendered back).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AttachForm {
    pub host_id: String,
    /// `append_only` or `full`.
    pub access: String,
    /// This host's own repository URL (replaces the stored one).
    pub url: String,
    /// Its password (replaces the stored one).
    pub password: String,
}

/// Forms that only choose a host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostForm {
    pub host_id: String,
}

/// The unlock form: a host and the confirmation naming the repository.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UnlockForm {
    pub host_id: String,
    pub confirm: Option<String>,
}

/// `?queued=<job>` after a lock listing was queued; `?refresh=<host>`
/// (`&jobs=0` when one was already waiting) after a refresh was asked for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    pub queued: String,
    pub refresh: String,
    pub jobs: Option<usize>,
}

#[derive(Template)]
#[template(path = "repository.html")]
pub(crate) struct RepoPage {
    pub(crate) layout: Layout,
    pub(crate) repo: RepoDetail,
    pub(crate) can_operate: bool,
    pub(crate) notice: Option<Notice>,
    pub(crate) attach: AttachForm,
    /// The edit form (its password is never rendered back).
    pub(crate) edit: crate::ui::repo_admin::EditForm,
    /// Which form `errors` belong to (`attach`, `unlock`, ...).
    pub(crate) form: &'static str,
    pub(crate) errors: Errors,
    /// Enrolled hosts (for attaching).
    pub(crate) enrolled: Vec<(String, String)>,
    pub(crate) chart_w: i64,
    pub(crate) chart_h: i64,
}

impl RepoPage {
    /// An error of `field` in form `form`.
    pub fn err(&self, form: &str, field: &str) -> Option<&String> {
        (self.form == form)
            .then(|| self.errors.get(field))
            .flatten()
    }
}

/// Host names a host picker suggests before the operator types (then it
/// asks `GET /api/v1/host-names`): the page never lists a whole fleet.
const HOST_SUGGESTIONS: i64 = 20;

/// The first enrolled, not revoked hosts by name (a picker's first
/// suggestions; empty: no host is enrolled yet).
async fn enrolled(conn: &mut rm_store::Conn) -> rm_store::Result<Vec<(String, String)>> {
    rm_store::hosts::enrolled_names(conn, HOST_SUGGESTIONS).await
}

/// The id of the host a picker names (an id, or a name as typed or
/// picked from the suggestions); a clear error for `field` when no host
/// has it. Empty stays empty (the form says to choose one).
async fn picked_host(state: &AppState, field: &str, text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let mut conn = state.store.read().await?;
    match rm_store::hosts::resolve(&mut conn, text).await? {
        Some(id) => Ok(id),
        None => Err(ApiError::invalid(
            field,
            format!("no host has the name or id “{text}”: pick one of the suggested names"),
        )),
    }
}

pub(crate) struct Shown {
    pub(crate) notice: Option<Notice>,
    pub(crate) attach: AttachForm,
    /// `None`: the edit form shows the repository's current name.
    pub(crate) edit: Option<crate::ui::repo_admin::EditForm>,
    pub(crate) form: &'static str,
    pub(crate) errors: Errors,
    pub(crate) status: StatusCode,
}

impl Shown {
    pub(crate) fn plain() -> Self {
        Self {
            notice: None,
            attach: AttachForm::default(),
            edit: None,
            form: "",
            errors: Errors::new(),
            status: StatusCode::OK,
        }
    }

    pub(crate) fn notice(ok: bool, text: String) -> Self {
        Self {
            notice: Some(Notice { ok, text }),
            status: if ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            },
            ..Self::plain()
        }
    }

    /// A refused form: the field's error when the refusal names one of
    /// the form's fields, else the reason at the top.
    fn refused(form: &'static str, fields: &[&'static str], e: &ApiError) -> Self {
        let mut s = Self::plain();
        s.form = form;
        s.status = if e.status.is_client_error() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            e.status
        };
        let field = e
            .field
            .as_deref()
            .map(|f| f.trim_start_matches("secrets."))
            .and_then(|f| fields.iter().find(|k| **k == f));
        match field {
            Some(f) => s.errors.insert(f, e.message.clone()),
            None => {
                s.notice = Some(Notice {
                    ok: false,
                    text: e.message.clone(),
                });
            }
        }
        s
    }
}

pub(crate) async fn show(state: &AppState, who: &Principal, id: &str, shown: Shown) -> Response {
    let loaded = async {
        let mut conn = state.store.read().await?;
        let repo = view::load(&mut conn, id, state.now()).await?;
        let enrolled = enrolled(&mut conn).await?;
        Ok::<_, ApiError>((repo, enrolled))
    }
    .await;
    let (repo, enrolled) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(who, "repositories", &e),
    };
    let mut attach = shown.attach;
    attach.password.clear();
    let edit = crate::ui::repo_admin::EditForm::shown(shown.edit, &repo);
    let mut resp = render(&RepoPage {
        edit,
        // a repository's page shows no job progress, and changes with its
        // own jobs and record only
        layout: Layout::new(who, "repositories", "jobs,repos", open_alerts(state).await)
            .for_repo(&repo.id)
            .progress_of([]),
        can_operate: can_operate(who),
        repo,
        notice: shown.notice,
        attach,
        form: shown.form,
        errors: shown.errors,
        enrolled,
        chart_w: SizeChart::WIDTH,
        chart_h: SizeChart::HEIGHT,
    });
    *resp.status_mut() = shown.status;
    resp
}

/// `GET /repositories/{id}`.
pub async fn page(
    State(state): State<AppState>,
    RequireViewer(who): RequireViewer,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let shown = if !q.refresh.is_empty() {
        let host = host_name(&state, &q.refresh).await;
        Shown::notice(
            true,
            match q.jobs {
                Some(0) => format!(
                    "A refresh was already waiting on {host}; this page shows its figures when it finishes."
                ),
                _ => format!(
                    "Refreshing the snapshot list, sizes and locks on {host}; this page shows them when it finishes."
                ),
            },
        )
    } else if q.queued.is_empty() {
        Shown::plain()
    } else {
        Shown::notice(
            true,
            format!(
                "Listing the locks (job {}); this page shows them when it finishes.",
                q.queued
            ),
        )
    };
    show(&state, &who, &id, shown).await
}

/// `POST /repositories/{id}/test`: the result (or the reason it failed) at
/// the top of the page.
pub async fn test(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<HostForm>,
) -> Response {
    let host = host_name(&state, &f.host_id).await;
    let shown = match api::test_connection(&state, &who, id.clone(), f.host_id).await {
        Ok(r) if r.ok => Shown::notice(
            true,
            format!(
                "Connection from {host} works{}.",
                r.restic_repo_id
                    .map(|i| format!(
                        " (repository id {})",
                        i.chars().take(10).collect::<String>()
                    ))
                    .unwrap_or_default()
            ),
        ),
        Ok(r) => Shown::notice(
            false,
            format!(
                "Connection from {host} failed: {}",
                r.error.unwrap_or_else(|| "restic failed".into())
            ),
        ),
        Err(e) => Shown::notice(
            false,
            format!("Connection test from {host} failed: {}", e.message),
        ),
    };
    show(&state, &who, &id, shown).await
}

async fn host_name(state: &AppState, id: &str) -> String {
    if id.is_empty() {
        return "the chosen host".into();
    }
    match state.store.read().await {
        Ok(mut c) => rm_store::hosts::get(&mut c, id)
            .await
            .map_or_else(|_| id.to_owned(), |h| h.name),
        Err(_) => id.to_owned(),
    }
}

/// Keeps a URL for showing back only if it carries no credentials.
pub(crate) fn keep_url(url: &str) -> String {
    if rm_bus::seal::redact_url(url) == url {
        url.to_owned()
    } else {
        String::new()
    }
}

/// `POST /repositories/{id}/attach`.
pub async fn attach(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<AttachForm>,
) -> Response {
    let fields = ["host_id", "access", "url", "password"];
    let parsed = match picked_host(&state, "host_id", &f.host_id).await {
        Ok(host_id) => parse_attach(&AttachForm {
            host_id,
            ..f.clone()
        }),
        Err(e) => Err(e),
    };
    let result = match parsed {
        Ok(body) => api::attach_host(&state, &who, id.clone(), body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to(&format!("/repositories/{id}#hosts")).into_response(),
        Err(e) => {
            let mut shown = Shown::refused("attach", &fields, &e);
            shown.attach = AttachForm {
                url: keep_url(&f.url),
                password: String::new(),
                ..f
            };
            show(&state, &who, &id, shown).await
        }
    }
}

fn parse_attach(f: &AttachForm) -> Result<AttachBody, ApiError> {
    if f.host_id.trim().is_empty() {
        return Err(ApiError::invalid("host_id", "choose the host to attach"));
    }
    let access = match f.access.as_str() {
        "append_only" => rm_cp_api::AccessInput::AppendOnly,
        "full" => rm_cp_api::AccessInput::Full,
        _ => {
            return Err(ApiError::invalid(
                "access",
                "choose append-only or full access",
            ));
        }
    };
    let secrets = match (f.url.trim().is_empty(), f.password.is_empty()) {
        (true, true) if access == rm_cp_api::AccessInput::Full => None,
        (true, true) => {
            return Err(ApiError::invalid(
                "url",
                "an append-only host needs its own credentials: the URL of an append-only REST user",
            ));
        }
        (true, false) => return Err(ApiError::invalid("url", "give the host's repository URL")),
        (false, true) => {
            return Err(ApiError::invalid(
                "password",
                "give the repository password",
            ));
        }
        (false, false) => Some(SecretsBody {
            url: f.url.trim().to_owned(),
            password: f.password.clone(),
            env: BTreeMap::new(),
        }),
    };
    Ok(AttachBody {
        host_id: f.host_id.clone(),
        access,
        secrets,
    })
}

/// `POST /repositories/{id}/maintenance` (an empty host clears it).
pub async fn maintenance(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<HostForm>,
) -> Response {
    let host = (!f.host_id.is_empty()).then_some(f.host_id);
    match api::set_maintenance(&state, &who, id.clone(), host).await {
        Ok(()) => Redirect::to(&format!("/repositories/{id}#hosts")).into_response(),
        Err(e) => {
            show(
                &state,
                &who,
                &id,
                Shown::refused("maintenance", &["host_id"], &e),
            )
            .await
        }
    }
}

/// `POST /repositories/{id}/unlock`: needs the confirmation; shows the job.
pub async fn unlock(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<UnlockForm>,
) -> Response {
    let result = if f.confirm.is_none() {
        Err(ApiError::invalid(
            "confirm",
            "tick the confirmation to remove this repository's stale locks",
        ))
    } else {
        api::unlock_repo(&state, &who, id.clone(), f.host_id).await
    };
    match result {
        Ok(job) => Redirect::to(&format!("/jobs/{}", job.job_id)).into_response(),
        Err(e) => {
            show(
                &state,
                &who,
                &id,
                Shown::refused("unlock", &["host_id", "confirm"], &e),
            )
            .await
        }
    }
}

/// `POST /repositories/{id}/refresh`: refreshes the repository's
/// snapshot list, sizes and locks now.
pub async fn refresh(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
) -> Response {
    match api::refresh_repo(&state, &who, id.clone()).await {
        Ok(r) => Redirect::to(&format!(
            "/repositories/{id}?refresh={}&jobs={}#repo-health",
            crate::pages::percent_encode(&r.host_id),
            r.job_ids.len()
        ))
        .into_response(),
        Err(e) => {
            show(
                &state,
                &who,
                &id,
                Shown::notice(false, format!("Refresh not started: {}", e.message)),
            )
            .await
        }
    }
}

/// `POST /repositories/{id}/locks`: lists the locks now.
pub async fn list_locks(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<HostForm>,
) -> Response {
    match api::list_locks(&state, &who, id.clone(), f.host_id).await {
        Ok(job) => Redirect::to(&format!(
            "/repositories/{id}?queued={}#locks",
            crate::pages::percent_encode(&job.job_id)
        ))
        .into_response(),
        Err(e) => show(&state, &who, &id, Shown::refused("locks", &["host_id"], &e)).await,
    }
}

// ------------------------------------------------------------ add

/// The add form. The password and extra environment are never shown back.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AddForm {
    pub name: String,
    /// `init` (a new repository), `verify` (an existing one) or `none`.
    pub mode: String,
    pub host_id: String,
    pub url: String,
    pub password: String,
    /// `KEY=value` lines (e.g. S3 keys).
    pub env: String,
}

#[derive(Template)]
#[template(path = "repository_new.html")]
pub(crate) struct AddPage {
    pub(crate) layout: Layout,
    pub(crate) form: AddForm,
    pub(crate) errors: Errors,
    pub(crate) failure: Option<String>,
    pub(crate) hosts: Vec<(String, String)>,
    /// The refused URL carried credentials, so it was not shown back.
    pub(crate) url_dropped: bool,
}

async fn add_page(
    state: &AppState,
    who: &Principal,
    mut form: AddForm,
    errors: Errors,
    failure: Option<String>,
) -> Response {
    let hosts = match state.store.read().await {
        Ok(mut c) => match enrolled(&mut c).await {
            Ok(h) => h,
            Err(e) => return error_page(who, "repositories", &e.into()),
        },
        Err(e) => return error_page(who, "repositories", &e.into()),
    };
    if form.mode.is_empty() {
        form.mode = "verify".into();
    }
    let refused = !errors.is_empty() || failure.is_some();
    let kept = keep_url(&form.url);
    let url_dropped = refused && kept != form.url;
    form.url = kept;
    form.password.clear();
    form.env.clear();
    let mut resp = render(&AddPage {
        layout: Layout::new(who, "repositories", "", open_alerts(state).await),
        form,
        errors,
        failure,
        hosts,
        url_dropped,
    });
    if refused {
        *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    resp
}

/// `GET /repositories/new`.
pub async fn new_form(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
) -> Response {
    add_page(&state, &who, AddForm::default(), Errors::new(), None).await
}

fn parse_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
                out.insert(k.trim().to_owned(), v.to_owned());
            }
            _ => return Err(format!("line {} is not KEY=value", n + 1)),
        }
    }
    Ok(out)
}

fn parse_add(f: &AddForm) -> Result<RepoAddBody, Errors> {
    let mut errors = Errors::new();
    if f.name.trim().is_empty() {
        errors.insert("name", "give the repository a name".into());
    }
    if f.url.trim().is_empty() {
        errors.insert(
            "url",
            "give the repository URL, e.g. rest:https://user:pass@host/repo".into(),
        );
    }
    if f.password.is_empty() {
        errors.insert("password", "give the repository password".into());
    }
    let env = parse_env(&f.env).unwrap_or_else(|e| {
        errors.insert("env", e);
        BTreeMap::new()
    });
    let through = match f.mode.as_str() {
        "init" | "verify" if f.host_id.is_empty() => {
            errors.insert(
                "host_id",
                "choose the host that reaches the repository".into(),
            );
            None
        }
        "init" | "verify" => Some(f.host_id.clone()),
        "none" => None,
        _ => {
            errors.insert(
                "mode",
                "choose new, existing, or add without checking".into(),
            );
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RepoAddBody {
        name: f.name.trim().to_owned(),
        secrets: SecretsBody {
            url: f.url.trim().to_owned(),
            password: f.password.clone(),
            env,
        },
        init_on_host: through.clone().filter(|_| f.mode == "init"),
        verify_on_host: through.filter(|_| f.mode == "verify"),
    })
}

/// `POST /repositories/new`: adds it and shows its page.
pub async fn add(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    Form(form): Form<AddForm>,
) -> Response {
    // the host runs restic only to check or initialise
    let picked = match form.mode.as_str() {
        "init" | "verify" => picked_host(&state, "host_id", &form.host_id).await,
        _ => Ok(form.host_id.clone()),
    };
    let parsed = parse_add(&AddForm {
        host_id: picked
            .as_ref()
            .map_or_else(|_| form.host_id.clone(), Clone::clone),
        ..form.clone()
    });
    let body = match (picked, parsed) {
        (Ok(_), Ok(body)) => body,
        (picked, parsed) => {
            let mut errors = parsed.err().unwrap_or_default();
            if let Err(e) = picked {
                errors.insert("host_id", e.message);
            }
            return add_page(&state, &who, form, errors, None).await;
        }
    };
    match api::add_repo(&state, &who, body).await {
        Ok(added) => Redirect::to(&format!("/repositories/{}", added.repo_id)).into_response(),
        Err(e) => {
            let mut errors = Errors::new();
            let field = e
                .field
                .as_deref()
                .map(|f| f.trim_start_matches("secrets."))
                .and_then(|f| ["name", "url", "password"].into_iter().find(|k| *k == f));
            let failure = match field {
                Some(f) => {
                    errors.insert(f, e.message);
                    None
                }
                None => Some(e.message),
            };
            add_page(&state, &who, form, errors, failure).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::Template;

    #[test]
    fn the_add_form_names_each_missing_field_and_reads_environment_lines() {
        let errors = parse_add(&AddForm {
            mode: "init".into(),
            env: "AWS_ACCESS_KEY_ID=k\nnot a pair".into(),
            ..AddForm::default()
        })
        .unwrap_err();
        let keys: Vec<&str> = errors.keys().copied().collect();
        assert_eq!(keys, vec!["env", "host_id", "name", "password", "url"]);
        let ok = parse_add(&AddForm {
            name: " offsite ".into(),
            mode: "verify".into(),
            host_id: "h1".into(),
            url: "s3:s3.example/bucket".into(),
            password: "pw".into(),
            env: "AWS_ACCESS_KEY_ID=k\n\nAWS_SECRET_ACCESS_KEY=a=b".into(),
        })
        .unwrap();
        assert_eq!(ok.name, "offsite");
        assert_eq!(
            (ok.init_on_host, ok.verify_on_host.as_deref()),
            (None, Some("h1"))
        );
        assert_eq!(ok.secrets.env["AWS_SECRET_ACCESS_KEY"], "a=b");
    }

    #[test]
    fn an_append_only_attachment_needs_its_own_credentials() {
        let f = AttachForm {
            host_id: "h1".into(),
            access: "append_only".into(),
            ..AttachForm::default()
        };
        assert_eq!(parse_attach(&f).unwrap_err().field.as_deref(), Some("url"));
        let full = AttachForm {
            access: "full".into(),
            ..f.clone()
        };
        assert!(parse_attach(&full).unwrap().secrets.is_none());
        assert_eq!(
            parse_attach(&AttachForm {
                access: "root".into(),
                ..f
            })
            .unwrap_err()
            .field
            .as_deref(),
            Some("access")
        );
    }

    /// The repository page over a seeded store with a second size
    /// measurement and a lock listing: health, the sparkline, the attached
    /// hosts, each lock with host, process, age and staleness, and the
    /// unlock confirmation naming the repository; markup stays text.
    #[tokio::test]
    async fn the_repository_page_shows_health_size_over_time_hosts_and_locks() {
        const NOW: i64 = 1_796_126_400_000;
        let dir = tempfile::tempdir().unwrap();
        let store = rm_store::Store::open(&dir.path().join("rm.db"))
            .await
            .unwrap();
        let spec = rm_store::seed::Spec {
            hosts: 4,
            now_ms: NOW,
            ..rm_store::seed::Spec::default()
        };
        rm_store::seed::fleet(&store, &spec).await.unwrap();
        let mut tx = store.write().await.unwrap();
        let repo = "seed-repo-0000";
        sqlx::query("UPDATE repositories SET name = '<b>offsite</b>' WHERE id = ?")
            .bind(repo)
            .execute(&mut *tx)
            .await
            .unwrap();
        rm_store::health::insert(
            &mut tx,
            &rm_store::health::Health {
                repo_id: repo.into(),
                ts: NOW - 7_200_000,
                raw_size: Some(1 << 30),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let at = |mins: i64| {
            jiff::Timestamp::from_millisecond(NOW - mins * 60_000)
                .unwrap()
                .to_string()
        };
        let locks = serde_json::json!([
            {"id": "a".repeat(64), "time": at(3), "exclusive": true, "hostname": "db-7", "username": "root", "pid": 4242, "stale": false},
            {"id": "b".repeat(64), "time": at(95), "exclusive": false, "hostname": "web-3", "username": "backup", "pid": 77, "stale": false}
        ]);
        sqlx::query("INSERT INTO jobs (id, host_id, exec_host_id, repo_id, kind, params_json, origin, status, timeout_secs, created_by, created_at, finished_at, summary_json)
                     SELECT 'locks-1', id, id, ?, 'locks', '{\"kind\":\"locks\"}', 'system', 'succeeded', 60, 'system', ?, ?, ? FROM hosts LIMIT 1")
            .bind(repo)
            .bind(NOW - 120_000)
            .bind(NOW - 60_000)
            .bind(locks.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut conn = store.read().await.unwrap();
        let detail = view::load(&mut conn, repo, NOW).await.unwrap();
        assert_eq!(detail.history.len(), 2, "{:?}", detail.history);
        let detail_chart_keys: Vec<&str> = detail
            .chart
            .as_ref()
            .expect("two measurements make a chart")
            .series
            .iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(detail.locks.stale, 1);
        let html = RepoPage {
            layout: Layout {
                user: "ops".into(),
                role: "admin",
                csrf: "t".into(),
                nav: "repositories",
                open_alerts: 0,
                topics: "jobs,repos",
                event_id: Some(7),
                event_host: None,
                event_job: None,
                event_repo: None,
                event_progress: None,
                asset_version: crate::ui::assets::version(),
                cp_banner: false,
            },
            can_operate: true,
            enrolled: enrolled(&mut conn).await.unwrap(),
            repo: detail,
            notice: None,
            attach: AttachForm::default(),
            edit: crate::ui::repo_admin::EditForm::default(),
            form: "",
            errors: Errors::new(),
            chart_w: SizeChart::WIDTH,
            chart_h: SizeChart::HEIGHT,
        }
        .render()
        .unwrap();
        assert!(html.contains("&#60;b&#62;offsite&#60;/b&#62;") && !html.contains("<b>offsite"));
        assert!(
            html.contains("<path class=\"line stored\" d=\"M"),
            "the size chart is drawn"
        );
        for series in &detail_chart_keys {
            assert!(
                html.contains(&format!("<span class=\"key {series}\"")),
                "every drawn series has its legend entry: {series}"
            );
        }
        assert!(
            html.contains("class=\"chart-y\""),
            "the byte axis is labelled"
        );
        assert!(html.contains("2.4×"), "the deduplication ratio is shown");
        for want in [
            "db-7",
            "4242",
            "3 m 0 s",
            "web-3",
            "older than 30 minutes",
            "append-only",
        ] {
            assert!(html.contains(want), "{want} is on the page");
        }
        assert!(html.contains(
            "I understand this removes the stale locks of repository &#60;b&#62;offsite&#60;/b&#62;"
        ));
        assert!(html.contains(
            "I understand this deletes repository &#60;b&#62;offsite&#60;/b&#62; from restic-manager"
        ));
        assert!(html.contains("The data and snapshots in the repository are not touched"));
        assert!(
            !html.contains("remove-all\""),
            "no form asks for --remove-all"
        );
    }

    #[test]
    fn a_url_with_credentials_is_never_shown_back() {
        assert_eq!(keep_url("rest:http://u:secret@h/r"), "");
        assert_eq!(keep_url("s3:s3.example/bucket"), "s3:s3.example/bucket");
    }
}
