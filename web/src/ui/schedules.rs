//! The schedule form: create (`/hosts/<id>/schedules/new`) and edit
//! (`/schedules/<id>`) a host's schedule — kind with its parameters (the
//! run form's parser, so a schedule and a one-off run read the same
//! fields the same way), cron with its reading in words and the next five
//! runs in the schedule's zone (`rm-cron`, the module the agent's
//! scheduler uses), and for forget a retention preview on the real
//! repository before saving (`api::retention::run`, the API's own call).
//! Enable / disable and delete (with a confirmation) are small forms of
//! their own. Bad input re-renders the form with the field's error and
//! every value kept; everything works without script.

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use rm_bus::msg::{JobParams, Retention};
use rm_bus::subject::SvcRole;
use rm_cp_api as cp;
use serde::Deserialize;

use crate::AppState;
use crate::api::ask;
use crate::api::retention::{self, PreviewView};
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::ui::run::{self, Errors, RunForm};
use crate::ui::{Layout, can_operate, error_page, open_alerts, render};

/// What a schedule can run, in the order the form offers them.
pub const KINDS: [(&str, &str); 4] = [
    ("backup", "Back up"),
    ("forget", "Forget (retention)"),
    ("prune", "Prune"),
    ("check", "Check"),
];

const KEEPS: [(&str, &str); 6] = [
    ("keep_last", "Last"),
    ("keep_hourly", "Hourly"),
    ("keep_daily", "Daily"),
    ("keep_weekly", "Weekly"),
    ("keep_monthly", "Monthly"),
    ("keep_yearly", "Yearly"),
];

/// How long the form waits for a retention preview before pointing to
/// its job page instead.
const PREVIEW_WAIT: Duration = Duration::from_secs(60);

/// Every field of the schedule form; absent ones are empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ScheduleForm {
    pub kind: String,
    pub repo_id: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: Option<String>,
    pub paths: String,
    pub excludes: String,
    pub tags: String,
    pub one_file_system: Option<String>,
    pub keep_last: String,
    pub keep_hourly: String,
    pub keep_daily: String,
    pub keep_weekly: String,
    pub keep_monthly: String,
    pub keep_yearly: String,
    pub keep_within: String,
    pub prune: Option<String>,
    pub read_data_subset: String,
    pub timeout_minutes: String,
    /// `save` or `preview` (the button pressed).
    pub action: String,
}

impl ScheduleForm {
    /// The run form with the same values (its parser reads the kind's
    /// parameters). A schedule asks for no run-time confirmation.
    fn as_run(&self) -> RunForm {
        RunForm {
            kind: self.kind.clone(),
            repo_id: self.repo_id.clone(),
            paths: self.paths.clone(),
            excludes: self.excludes.clone(),
            tags: self.tags.clone(),
            one_file_system: self.one_file_system.clone(),
            keep_last: self.keep_last.clone(),
            keep_hourly: self.keep_hourly.clone(),
            keep_daily: self.keep_daily.clone(),
            keep_weekly: self.keep_weekly.clone(),
            keep_monthly: self.keep_monthly.clone(),
            keep_yearly: self.keep_yearly.clone(),
            keep_within: self.keep_within.clone(),
            prune: self.prune.clone(),
            read_data_subset: self.read_data_subset.clone(),
            stats_mode: String::new(),
            from: String::new(),
            to: String::new(),
            timeout_minutes: self.timeout_minutes.clone(),
            confirm: Some("on".into()),
        }
    }

    /// A keep field's value by name (the template loops over them).
    pub fn value(&self, field: impl AsRef<str>) -> &str {
        match field.as_ref() {
            "keep_last" => &self.keep_last,
            "keep_hourly" => &self.keep_hourly,
            "keep_daily" => &self.keep_daily,
            "keep_weekly" => &self.keep_weekly,
            "keep_monthly" => &self.keep_monthly,
            "keep_yearly" => &self.keep_yearly,
            _ => "",
        }
    }

    /// The form of a stored schedule.
    fn of(s: &rm_store::schedules::Schedule) -> Self {
        let mut f = Self {
            kind: s.kind.clone(),
            repo_id: s.repo_id.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            enabled: s.enabled.then(|| "on".into()),
            timeout_minutes: (s.timeout_secs / 60).to_string(),
            ..Self::default()
        };
        let n = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        match s.params() {
            Ok(JobParams::Backup {
                paths,
                excludes,
                tags,
                one_file_system,
                ..
            }) => {
                f.paths = paths.join("\n");
                f.excludes = excludes.join("\n");
                f.tags = tags.join(", ");
                f.one_file_system = one_file_system.then(|| "on".into());
            }
            Ok(JobParams::Forget {
                retention: r,
                prune,
                ..
            }) => {
                f.keep_last = n(r.keep_last);
                f.keep_hourly = n(r.keep_hourly);
                f.keep_daily = n(r.keep_daily);
                f.keep_weekly = n(r.keep_weekly);
                f.keep_monthly = n(r.keep_monthly);
                f.keep_yearly = n(r.keep_yearly);
                f.keep_within = r.keep_within.unwrap_or_default();
                f.prune = prune.then(|| "on".into());
            }
            Ok(JobParams::Check { read_data_subset }) => {
                f.read_data_subset = read_data_subset.unwrap_or_default();
            }
            _ => {}
        }
        f
    }
}

/// The next runs of a valid cron expression, for the form.
#[derive(Debug, Clone, Default)]
pub struct CronReading {
    /// In words ("every day at 02:00").
    pub words: String,
    /// The next five runs in the schedule's zone, as `2026-12-02 03:00 +01:00`.
    pub next: Vec<String>,
}

/// Reads `cron` in `tz`, or the field errors (`cron`, `timezone`).
fn read_cron(cron: &str, tz: &str, now_ms: i64, errors: &mut Errors) -> Option<CronReading> {
    if cron.trim().is_empty() {
        errors.insert(
            "cron",
            "give a cron expression, e.g. 0 3 * * * (03:00 every day)".into(),
        );
        return None;
    }
    if tz.trim().is_empty() {
        errors.insert(
            "timezone",
            "give an IANA time zone such as Europe/Berlin or UTC".into(),
        );
        return None;
    }
    match rm_cron::CronSchedule::parse(cron.trim(), tz.trim()) {
        Ok(s) => Some(CronReading {
            words: crate::ui::cron_words::describe(cron.trim()),
            next: s
                .upcoming_ms(now_ms, 5)
                .into_iter()
                .map(|ms| readable_time(&s.format_ms(ms)))
                .collect(),
        }),
        Err(e @ rm_cron::CronError::TimeZone(_)) => {
            errors.insert("timezone", e.to_string());
            None
        }
        Err(e) => {
            errors.insert("cron", e.to_string());
            None
        }
    }
}

/// `2026-12-02T03:00:00+01:00` → `2026-12-02 03:00 +01:00`.
fn readable_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16), rfc3339.get(19..)) {
        (Some(d), Some(t), Some(z)) => format!("{d} {t} {z}"),
        _ => rfc3339.to_owned(),
    }
}

/// The job parameters and timeout of a form, or its field errors.
type Parsed = Result<(JobParams, Option<u64>), Errors>;

/// Parses the whole form: the job parameters (the run form's parser) and
/// the cron; every field error at once.
fn parse(form: &ScheduleForm, restic_host: &str, now_ms: i64) -> (Parsed, Option<CronReading>) {
    let mut errors = Errors::new();
    if !KINDS.iter().any(|(k, _)| *k == form.kind) {
        errors.insert("kind", "choose backup, forget, prune or check".into());
    }
    let reading = read_cron(&form.cron, &form.timezone, now_ms, &mut errors);
    let parsed = run::parse(&form.as_run(), restic_host);
    let result = match parsed {
        Ok(p) if errors.is_empty() => Ok(p),
        Ok(_) => Err(errors),
        Err(e) => {
            for k in e.keys() {
                if let Some(m) = e.get(k) {
                    errors.insert(k, m.clone());
                }
            }
            Err(errors)
        }
    };
    (result, reading)
}

/// `?kind=` of the new-schedule page; `?preview=<job>` on both pages
/// shows that retention preview's plan again (a stable link to it).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NewQuery {
    pub kind: String,
    pub preview: String,
}

/// The stored plan of preview job `job_id` of `host_id` (none for an
/// empty id, another kind or another host's job).
async fn stored_preview(state: &AppState, host_id: &str, job_id: &str) -> Option<PreviewView> {
    if job_id.is_empty() {
        return None;
    }
    let mut conn = state.store.read().await.ok()?;
    let job = rm_store::jobs::get(&mut conn, job_id).await.ok()?;
    (job.kind == "forget_preview" && job.host_id == host_id).then(|| PreviewView::of(&job))
}

#[derive(Template)]
#[template(path = "schedule.html")]
pub(crate) struct SchedulePage {
    pub(crate) layout: Layout,
    pub(crate) host_id: String,
    pub(crate) host_name: String,
    pub(crate) restic_host: String,
    /// `None` while creating.
    pub(crate) schedule_id: Option<String>,
    pub(crate) action_url: String,
    pub(crate) can_edit: bool,
    pub(crate) kinds: [(&'static str, &'static str); 4],
    pub(crate) keeps: [(&'static str, &'static str); 6],
    pub(crate) repos: Vec<(String, String)>,
    pub(crate) maintenance: Option<String>,
    pub(crate) form: ScheduleForm,
    pub(crate) errors: Errors,
    pub(crate) reading: Option<CronReading>,
    pub(crate) preview: Option<PreviewView>,
    pub(crate) failure: Option<String>,
    pub(crate) now: i64,
}

impl SchedulePage {
    pub(crate) fn kind_label(&self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self.form.kind)
            .map_or("Back up", |(_, l)| l)
    }
}

struct HostBits {
    name: String,
    restic_host: String,
    repos: Vec<(String, String)>,
    /// Repository id → its maintenance host's name.
    maintenance: Vec<(String, String)>,
}

async fn host_bits(state: &AppState, host_id: &str) -> Result<HostBits, ApiError> {
    let mut conn = state.store.read().await?;
    let host = rm_store::hosts::get(&mut conn, host_id).await?;
    // the host's repositories and their maintenance hosts only, not the
    // whole fleet's
    let creds = rm_store::repos::credentials_of_host(&mut conn, host_id).await?;
    let ids: Vec<&str> = creds.iter().map(|c| c.repo_id.as_str()).collect();
    let all = rm_store::repos::of_ids(&mut conn, &ids).await?;
    let keepers: Vec<&str> = all
        .iter()
        .filter_map(|r| r.maintenance_host_id.as_deref())
        .collect();
    let hosts = rm_store::hosts::names_of(&mut conn, &keepers).await?;
    let mut repos = Vec::new();
    let mut maintenance = Vec::new();
    for c in &creds {
        if let Some(r) = all.iter().find(|r| r.id == c.repo_id) {
            repos.push((r.id.clone(), r.name.clone()));
            if let Some(m) = &r.maintenance_host_id {
                let name = hosts
                    .iter()
                    .find(|(id, _)| id == m)
                    .map_or_else(|| m.clone(), |(_, name)| name.clone());
                maintenance.push((r.id.clone(), name));
            }
        }
    }
    Ok(HostBits {
        restic_host: host.restic_host.clone().unwrap_or_else(|| host.id.clone()),
        name: host.name,
        repos,
        maintenance,
    })
}

#[allow(clippy::too_many_arguments)]
async fn page(
    state: &AppState,
    who: &Principal,
    host_id: &str,
    schedule_id: Option<String>,
    mut form: ScheduleForm,
    errors: Errors,
    preview: Option<PreviewView>,
    failure: Option<String>,
) -> Response {
    let bits = match host_bits(state, host_id).await {
        Ok(b) => b,
        Err(e) => return error_page(who, "hosts", &e),
    };
    if !KINDS.iter().any(|(k, _)| *k == form.kind) {
        form.kind = "backup".into();
    }
    if let Some((id, _)) = bits.repos.first().filter(|_| form.repo_id.is_empty()) {
        form.repo_id = id.clone();
    }
    let now = state.now();
    // the reading whenever the cron reads; its errors come from the submit
    let reading = read_cron(&form.cron, &form.timezone, now, &mut Errors::new());
    let status = if errors.is_empty() && failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let maintenance = bits
        .maintenance
        .iter()
        .find(|(r, _)| *r == form.repo_id)
        .map(|(_, n)| n.clone());
    let action_url = match &schedule_id {
        Some(id) => format!("/schedules/{id}"),
        None => format!("/hosts/{host_id}/schedules/new"),
    };
    let mut resp = render(&SchedulePage {
        layout: Layout::new(who, "hosts", "", open_alerts(state).await),
        host_id: host_id.to_owned(),
        host_name: bits.name,
        restic_host: bits.restic_host,
        schedule_id,
        action_url,
        can_edit: can_operate(who),
        kinds: KINDS,
        keeps: KEEPS,
        repos: bits.repos,
        maintenance,
        form,
        errors,
        reading,
        preview,
        failure,
        now,
    });
    *resp.status_mut() = status;
    resp
}

pub(crate) async fn new_form(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(host_id): Path<String>,
    Query(q): Query<NewQuery>,
) -> Response {
    let preview = stored_preview(&state, &host_id, &q.preview).await;
    let form = ScheduleForm {
        kind: if preview.is_some() {
            "forget".into()
        } else {
            q.kind
        },
        cron: "0 3 * * *".into(),
        timezone: "UTC".into(),
        enabled: Some("on".into()),
        ..ScheduleForm::default()
    };
    page(
        &state,
        &p,
        &host_id,
        None,
        form,
        Errors::new(),
        preview,
        None,
    )
    .await
}

pub(crate) async fn edit_form(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<NewQuery>,
) -> Response {
    let loaded = async {
        let mut conn = state.store.read().await?;
        Ok::<_, ApiError>(rm_store::schedules::get(&mut conn, &id).await?)
    }
    .await;
    match loaded {
        Ok(s) => {
            let form = ScheduleForm::of(&s);
            let preview = stored_preview(&state, &s.host_id, &q.preview).await;
            page(
                &state,
                &p,
                &s.host_id,
                Some(id),
                form,
                Errors::new(),
                preview,
                None,
            )
            .await
        }
        Err(e) => error_page(&p, "hosts", &e),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(host_id): Path<String>,
    Form(form): Form<ScheduleForm>,
) -> Response {
    submit(&state, &p, host_id, None, form).await
}

pub(crate) async fn update(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    Form(form): Form<ScheduleForm>,
) -> Response {
    let loaded = async {
        let mut conn = state.store.read().await?;
        Ok::<_, ApiError>(rm_store::schedules::get(&mut conn, &id).await?)
    }
    .await;
    match loaded {
        Ok(s) => submit(&state, &p, s.host_id.clone(), Some(s), form).await,
        Err(e) => error_page(&p, "hosts", &e),
    }
}

async fn submit(
    state: &AppState,
    p: &Principal,
    host_id: String,
    old: Option<rm_store::schedules::Schedule>,
    form: ScheduleForm,
) -> Response {
    let restic_host = match host_bits(state, &host_id).await {
        Ok(b) => b.restic_host,
        Err(e) => return error_page(p, "hosts", &e),
    };
    let schedule_id = old.as_ref().map(|s| s.id.clone());
    if form.action == "preview" {
        return preview(state, p, host_id, schedule_id, form).await;
    }
    let (parsed, _) = parse(&form, &restic_host, state.now());
    let (params, timeout) = match parsed {
        Ok(x) => x,
        Err(errors) => {
            return page(state, p, &host_id, schedule_id, form, errors, None, None).await;
        }
    };
    let saved: Result<cp::ScheduleSaved, ApiError> = ask(
        state,
        p,
        SvcRole::Controlplane,
        cp::SCHEDULE_PUT,
        cp::SchedulePut {
            schedule_id: schedule_id.clone(),
            host_id: host_id.clone(),
            repo_id: form.repo_id.trim().to_owned(),
            cron: form.cron.trim().to_owned(),
            timezone: form.timezone.trim().to_owned(),
            params,
            enabled: form.enabled.is_some(),
            jitter_secs: old
                .as_ref()
                .map_or(0, |s| u64::try_from(s.jitter_secs).unwrap_or(0)),
            timeout_secs: timeout,
            grace_secs: old.as_ref().and_then(|s| u64::try_from(s.grace_secs).ok()),
        },
    )
    .await;
    match saved {
        Ok(_) => Redirect::to(&format!("/hosts/{host_id}#schedules")).into_response(),
        Err(e) if e.status.is_client_error() => {
            page(
                state,
                p,
                &host_id,
                schedule_id,
                form,
                Errors::new(),
                None,
                Some(e.message),
            )
            .await
        }
        Err(e) => error_page(p, "hosts", &e),
    }
}

/// The retention preview button: the policy as the form holds it, run on
/// the real repository; the form comes back with the plan (or the error)
/// and every value kept.
async fn preview(
    state: &AppState,
    p: &Principal,
    host_id: String,
    schedule_id: Option<String>,
    form: ScheduleForm,
) -> Response {
    let mut as_forget = form.clone();
    as_forget.kind = "forget".into();
    let retention = match run::parse(&as_forget.as_run(), "") {
        Ok((JobParams::Forget { retention, .. }, _)) => retention,
        Ok(_) => Retention::default(),
        Err(errors) => {
            return page(state, p, &host_id, schedule_id, form, errors, None, None).await;
        }
    };
    match retention::run(
        state,
        p,
        &host_id,
        form.repo_id.trim(),
        retention,
        PREVIEW_WAIT,
    )
    .await
    {
        Ok(view) => {
            let failure = view
                .error
                .clone()
                .filter(|_| view.done && view.status != "succeeded");
            page(
                state,
                p,
                &host_id,
                schedule_id,
                form,
                Errors::new(),
                Some(view),
                failure.map(|e| format!("The preview failed: {e}")),
            )
            .await
        }
        Err(e) if e.status.is_client_error() || e.status == StatusCode::SERVICE_UNAVAILABLE => {
            let mut errors = Errors::new();
            if e.field.as_deref() == Some("retention") {
                errors.insert("keep_last", e.message.clone());
            }
            page(
                state,
                p,
                &host_id,
                schedule_id,
                form,
                errors,
                None,
                Some(format!("No preview: {}", e.message)),
            )
            .await
        }
        Err(e) => error_page(p, "hosts", &e),
    }
}

/// `enabled=1|0` of the enable / disable buttons.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EnableForm {
    pub enabled: String,
    /// Where to go back to (`host` or the schedule page).
    pub back: String,
}

pub(crate) async fn set_enabled(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<EnableForm>,
) -> Response {
    let s = match load_schedule(&state, &id).await {
        Ok(s) => s,
        Err(e) => return error_page(&p, "hosts", &e),
    };
    let params = match s.params() {
        Ok(x) => x,
        Err(e) => return error_page(&p, "hosts", &ApiError::from(e)),
    };
    let saved: Result<cp::ScheduleSaved, ApiError> = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::SCHEDULE_PUT,
        cp::SchedulePut {
            schedule_id: Some(s.id.clone()),
            host_id: s.host_id.clone(),
            repo_id: s.repo_id.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            params,
            enabled: f.enabled == "1",
            jitter_secs: u64::try_from(s.jitter_secs).unwrap_or(0),
            timeout_secs: u64::try_from(s.timeout_secs).ok(),
            grace_secs: u64::try_from(s.grace_secs).ok(),
        },
    )
    .await;
    match saved {
        Ok(_) if f.back == "schedule" => Redirect::to(&format!("/schedules/{id}")).into_response(),
        Ok(_) => Redirect::to(&format!("/hosts/{}#schedules", s.host_id)).into_response(),
        Err(e) => error_page(&p, "hosts", &e),
    }
}

/// One schedule from the store, for the enable / disable and delete forms.
async fn load_schedule(
    state: &AppState,
    id: &str,
) -> Result<rm_store::schedules::Schedule, ApiError> {
    let mut conn = state.store.read().await?;
    Ok(rm_store::schedules::get(&mut conn, id).await?)
}

/// The delete form's confirmation checkbox.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    pub confirm: Option<String>,
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    p: RequireOperator,
    Path(id): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    let s = match load_schedule(&state, &id).await {
        Ok(s) => s,
        Err(e) => return error_page(&p, "hosts", &e),
    };
    if f.confirm.is_none() {
        let mut errors = Errors::new();
        errors.insert(
            "delete_confirm",
            "tick the box to confirm the deletion".into(),
        );
        return page(
            &state,
            &p,
            &s.host_id,
            Some(id),
            ScheduleForm::of(&s),
            errors,
            None,
            None,
        )
        .await;
    }
    let done: Result<cp::Done, ApiError> = ask(
        &state,
        &p,
        SvcRole::Controlplane,
        cp::SCHEDULE_DELETE,
        cp::ScheduleRef {
            schedule_id: id.clone(),
        },
    )
    .await;
    match done {
        Ok(_) => Redirect::to(&format!("/hosts/{}#schedules", s.host_id)).into_response(),
        Err(e) => error_page(&p, "hosts", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(kind: &str) -> ScheduleForm {
        ScheduleForm {
            kind: kind.into(),
            repo_id: "r1".into(),
            cron: "0 3 * * *".into(),
            timezone: "Europe/Berlin".into(),
            ..ScheduleForm::default()
        }
    }

    const NOW: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

    #[test]
    fn a_bad_cron_and_zone_are_field_errors_and_a_good_one_reads_with_five_runs() {
        let mut f = form("backup");
        f.paths = "/srv".into();
        f.cron = "61 * * * *".into();
        let e = parse(&f, "h", NOW).0.unwrap_err();
        assert!(
            e.contains_key("cron") && !e.contains_key("timezone"),
            "{e:?}"
        );
        f.cron = "0 3 * * *".into();
        f.timezone = "Nowhere/Land".into();
        let e = parse(&f, "h", NOW).0.unwrap_err();
        assert!(e.contains_key("timezone"), "{e:?}");
        f.timezone = "Europe/Berlin".into();
        let (r, reading) = parse(&f, "h", NOW);
        assert!(r.is_ok());
        let reading = reading.unwrap();
        assert_eq!(reading.next.len(), 5);
        assert_eq!(reading.next[0], "2025-12-01 03:00 +01:00");
        assert!(reading.words.contains("03:00"), "{}", reading.words);
    }

    #[test]
    fn kind_parameters_are_checked_as_the_run_form_checks_them() {
        let e = parse(&form("backup"), "h", NOW).0.unwrap_err();
        assert!(e.contains_key("paths"));
        let e = parse(&form("forget"), "h", NOW).0.unwrap_err();
        assert!(e.contains_key("keep_last"), "{e:?}");
        let mut f = form("forget");
        f.keep_daily = "7".into();
        match parse(&f, "web-1", NOW).0.unwrap().0 {
            JobParams::Forget {
                retention,
                host_name,
                ..
            } => {
                assert_eq!(retention.keep_daily, Some(7));
                assert_eq!(host_name, "web-1");
            }
            other => panic!("{other:?}"),
        }
        let e = parse(&form("unlock"), "h", NOW).0.unwrap_err();
        assert!(e.contains_key("kind"));
    }

    #[test]
    fn a_stored_schedule_fills_the_form_back() {
        let s = rm_store::schedules::Schedule {
            id: "s1".into(),
            host_id: "h1".into(),
            repo_id: "r1".into(),
            kind: "backup".into(),
            cron: "30 2 * * 1-5".into(),
            timezone: "UTC".into(),
            params_json: serde_json::to_string(&JobParams::Backup {
                paths: vec!["/srv".into(), "/etc".into()],
                excludes: vec!["*.tmp".into()],
                tags: vec!["nightly".into()],
                one_file_system: true,
                host_name: Some("h".into()),
            })
            .unwrap(),
            enabled: false,
            jitter_secs: 0,
            timeout_secs: 7200,
            grace_secs: 3600,
            exec_host_id: "h1".into(),
            config_version: 1,
            created_at: 0,
            updated_at: 0,
        };
        let f = ScheduleForm::of(&s);
        assert_eq!(f.paths, "/srv\n/etc");
        assert_eq!(f.tags, "nightly");
        assert_eq!(f.timeout_minutes, "120");
        assert!(f.enabled.is_none() && f.one_file_system.is_some());
    }
}
