//! The route table: every route with its method, path and minimum role (or
//! public), in one place. The router is built only from it ([`app`]): each
//! entry's minimum role is enforced by `auth::guard` before its handler
//! runs, and the authorization-matrix test walks the same table. To add a
//! route (UI pages included), add an entry to [`table`]; nothing else
//! registers routes.
//!
//! Unknown paths answer 404 and wrong methods 405, as JSON under `/api/`.

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::auth::{self, Role};
use crate::error::ApiError;
use crate::{AppState, downloads, enroll, health, pages, ui};

/// True for machine routes (JSON refusals, no login redirect): `/api/...`
/// and `/metrics`.
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics" || path.starts_with("/metrics?")
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Signed in with at least this role.
    Min(Role),
}

/// Collects a type's schema (and those it refers to) for the OpenAPI document.
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;

fn schema_of<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(out);
    T::schema()
}

fn page_schema_of<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(out);
    out.push((T::name().into_owned(), T::schema()));
    <crate::api::Page<T> as utoipa::PartialSchema>::schema()
}

/// One entry of the table.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// The JSON request body's schema, if it takes one.
    pub body: Option<SchemaFn>,
    /// The success status and the JSON answer's schema, if any.
    pub returns: Option<(u16, Option<SchemaFn>)>,
    /// Query parameters: `(name, required)`.
    pub query: &'static [(&'static str, bool)],
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

impl Route {
    /// Documents the route.
    pub fn doc(mut self, summary: &'static str) -> Self {
        self.summary = summary;
        self
    }

    /// Documents the JSON request body.
    pub fn body<T: ToSchema>(mut self) -> Self {
        self.body = Some(schema_of::<T>);
        self
    }

    /// Documents the JSON answer and its status.
    pub fn returns<T: ToSchema>(mut self, status: u16) -> Self {
        self.returns = Some((status, Some(schema_of::<T>)));
        self
    }

    /// Documents a JSON answer that is a [`crate::api::Page`] of `T`.
    pub fn returns_page<T: ToSchema>(mut self) -> Self {
        self.returns = Some((200, Some(page_schema_of::<T>)));
        self
    }

    /// Documents the query parameters, `(name, required)`.
    pub fn query(mut self, params: &'static [(&'static str, bool)]) -> Self {
        self.query = params;
        self
    }

    /// Documents an answer without a JSON body.
    pub fn returns_nothing(mut self, status: u16) -> Self {
        self.returns = Some((status, None));
        self
    }
}

/// An entry: `handler` answers `method` on `path` for `access`.
pub fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    Route {
        method,
        path,
        access,
        summary: "",
        body: None,
        returns: None,
        query: &[],
        handler: on(filter, handler),
    }
}

const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::Min(Role::Viewer);
const OPERATOR: Access = Access::Min(Role::Operator);
const ADMIN: Access = Access::Min(Role::Admin);

/// Every route.
pub fn table() -> Vec<Route> {
    use crate::api::{
        alerts, cron, host_names, hosts, jobs, logs, rejected, repo_admin, repos, retention,
        schedules, snapshots, tokens, users,
    };
    use Method as M;
    vec![
        route(M::GET, "/healthz", PUBLIC, health::healthz),
        route(M::GET, "/readyz", PUBLIC, health::readyz),
        route(M::GET, "/login", PUBLIC, pages::login_form),
        route(M::POST, "/login", PUBLIC, pages::login),
        route(M::POST, "/logout", VIEWER, pages::logout),
        route(M::GET, "/setup", PUBLIC, pages::setup_form),
        route(M::POST, "/setup", PUBLIC, pages::setup),
        // ---- install: agent binaries for the install scripts (deploy/)
        route(M::GET, "/download/agent/{file}", PUBLIC, downloads::agent),
        // ---- UI pages (server-rendered; see `ui`)
        route(M::GET, "/static/app.css", PUBLIC, ui::assets::css),
        route(M::GET, "/static/app.js", PUBLIC, ui::assets::js),
        route(M::GET, "/", VIEWER, ui::dashboard::page),
        route(M::GET, "/hosts", VIEWER, ui::lists::hosts),
        route(M::GET, "/repositories", VIEWER, ui::lists::repositories),
        // ---- alerts area (issue 12 A): alert pages, mutes, maintenance windows
        route(M::GET, "/alerts", VIEWER, ui::alerts::list),
        route(M::GET, "/alerts/{id}", VIEWER, ui::alerts::page),
        route(M::POST, "/alerts/{id}/ack", OPERATOR, ui::alerts::ack),
        route(M::POST, "/alerts/{id}/resolve", OPERATOR, ui::alerts::resolve),
        route(M::POST, "/alerts/mute", OPERATOR, ui::alerts::mute),
        route(M::POST, "/alerts/unmute", OPERATOR, ui::alerts::unmute),
        route(
            M::POST,
            "/hosts/{id}/maintenance",
            OPERATOR,
            ui::alerts::window_add,
        ),
        route(
            M::POST,
            "/hosts/{id}/maintenance/{window}/delete",
            OPERATOR,
            ui::alerts::window_delete,
        ),
        route(
            M::GET,
            "/api/v1/alerts/{id}/history",
            VIEWER,
            crate::api::alerts::history,
        )
        .doc("One alert with its history: raised, acknowledged, resolved, and every delivery attempt")
        .returns::<crate::views::alert::AlertDetail>(200),
        route(
            M::GET,
            "/api/v1/hosts/{id}/mutes",
            VIEWER,
            crate::api::alerts::host_mutes,
        )
        .doc("A host's current mute (if any) and its recurring maintenance windows")
        .returns::<crate::views::alert::HostMutes>(200),
        route(
            M::POST,
            "/api/v1/hosts/{id}/maintenance",
            OPERATOR,
            crate::api::alerts::window_add,
        )
        .doc("Add a recurring maintenance window (cron, time zone, duration): alerts inside it are muted")
        .body::<crate::api::alerts::WindowBody>()
        .returns::<crate::api::alerts::WindowCreated>(201),
        route(
            M::DELETE,
            "/api/v1/hosts/{id}/maintenance/{window}",
            OPERATOR,
            crate::api::alerts::window_delete,
        )
        .doc("Delete a maintenance window")
        .returns_nothing(204),
        // ---- end of the alerts area
        route(M::GET, "/hosts/new", OPERATOR, ui::actions::add_host_form),
        route(M::POST, "/hosts/new", OPERATOR, ui::actions::add_host),
        route(M::GET, "/hosts/{id}", VIEWER, ui::pages::host_page),
        route(M::GET, "/hosts/{id}/run", OPERATOR, ui::actions::run_form),
        route(M::POST, "/hosts/{id}/run", OPERATOR, ui::actions::run_submit),
        route(M::POST, "/hosts/{id}/revoke", ADMIN, ui::actions::revoke),
        route(M::POST, "/hosts/{id}/token", OPERATOR, ui::actions::new_token),
        route(M::GET, "/restore", OPERATOR, ui::restore::form),
        route(M::POST, "/restore", OPERATOR, ui::restore::submit),
        // ---- schedules: create and edit per host, enable / disable, delete
        route(
            M::GET,
            "/hosts/{id}/schedules/new",
            OPERATOR,
            ui::schedules::new_form,
        ),
        route(
            M::POST,
            "/hosts/{id}/schedules/new",
            OPERATOR,
            ui::schedules::create,
        ),
        route(M::GET, "/schedules/{id}", VIEWER, ui::schedules::edit_form),
        route(M::POST, "/schedules/{id}", OPERATOR, ui::schedules::update),
        route(
            M::POST,
            "/schedules/{id}/enabled",
            OPERATOR,
            ui::schedules::set_enabled,
        ),
        route(
            M::POST,
            "/schedules/{id}/delete",
            OPERATOR,
            ui::schedules::delete,
        ),
        route(M::GET, "/jobs", VIEWER, ui::pages::jobs_page),
        route(M::GET, "/jobs/{id}", VIEWER, ui::pages::job_page),
        route(M::POST, "/jobs/{id}/cancel", OPERATOR, ui::actions::cancel),
        route(M::GET, "/metrics", VIEWER, crate::metrics::scrape),
        // ---- settings: notifications, users, API tokens, audit log, account
        // (ui::settings; the admin pages are refused to lower roles here)
        route(M::GET, "/settings", VIEWER, ui::settings::overview),
        route(M::GET, "/settings/notifications", ADMIN, ui::settings::channels::list),
        route(M::POST, "/settings/notifications", ADMIN, ui::settings::channels::create),
        route(M::GET, "/settings/notifications/{id}", ADMIN, ui::settings::channels::show),
        route(M::POST, "/settings/notifications/{id}", ADMIN, ui::settings::channels::update),
        route(
            M::POST,
            "/settings/notifications/{id}/enabled",
            ADMIN,
            ui::settings::channels::set_enabled,
        ),
        route(
            M::POST,
            "/settings/notifications/{id}/delete",
            ADMIN,
            ui::settings::channels::delete,
        ),
        route(M::GET, "/settings/users", ADMIN, ui::settings::users::list),
        route(M::POST, "/settings/users", ADMIN, ui::settings::users::add),
        route(M::POST, "/settings/users/{id}", ADMIN, ui::settings::users::change),
        // alerts, mutes, channels, users and audit: the gaps of issue 12
        route(
            M::POST,
            "/settings/users/{id}/delete",
            ADMIN,
            ui::settings::users::delete,
        ),
        route(M::GET, "/settings/tokens", ADMIN, ui::settings::tokens::list),
        route(M::POST, "/settings/tokens", ADMIN, ui::settings::tokens::create),
        route(
            M::POST,
            "/settings/tokens/{id}/revoke",
            ADMIN,
            ui::settings::tokens::revoke,
        ),
        route(M::GET, "/settings/audit", ADMIN, ui::settings::audit::page),
        // ---- control-plane backup and recovery kit (ui::settings::cpbackup)
        route(M::GET, "/settings/controlplane-backup", ADMIN, ui::settings::cpbackup::show),
        route(M::POST, "/settings/controlplane-backup", ADMIN, ui::settings::cpbackup::set_repo),
        route(M::POST, "/settings/controlplane-backup/run", ADMIN, ui::settings::cpbackup::run_now),
        route(
            M::POST,
            "/settings/controlplane-backup/recovery-kit",
            ADMIN,
            ui::settings::cpbackup::recovery_kit,
        ),
        route(M::GET, "/api/v1/controlplane-backup", ADMIN, ui::settings::cpbackup::api_status)
            .doc("The control-plane backup: its repository, next run, recent runs and whether a recovery kit was exported")
            .returns::<ui::settings::cpbackup::CpBackupView>(200),
        // ---- end of control-plane backup
        route(M::GET, "/account", VIEWER, ui::settings::account::page),
        route(M::POST, "/account/password", VIEWER, ui::settings::account::password),
        route(
            M::POST,
            "/account/sessions/{id}/end",
            VIEWER,
            ui::settings::account::end,
        ),
        route(M::GET, "/api/v1/me/sessions", VIEWER, crate::api::account::sessions)
            .doc("Your own sessions (this one marked `current`)")
            .returns::<Vec<crate::api::account::SessionView>>(200),
        route(
            M::DELETE,
            "/api/v1/me/sessions/{id}",
            VIEWER,
            crate::api::account::session_end,
        )
        .doc("End one of your own sessions")
        .returns_nothing(204),
        route(M::POST, "/api/v1/me/password", VIEWER, crate::api::account::password)
            .doc("Change your own password (every other session ends)")
            .body::<crate::api::account::PasswordChangeBody>()
            .returns::<crate::api::account::PasswordChanged>(200),
        // ---- end of settings
        // ---- repository pages (issue 11; `ui::repos`)
        route(M::GET, "/repositories/new", OPERATOR, ui::repos::new_form),
        route(M::POST, "/repositories/new", OPERATOR, ui::repos::add),
        route(M::GET, "/repositories/{id}", VIEWER, ui::repos::page),
        route(M::POST, "/repositories/{id}/test", OPERATOR, ui::repos::test),
        route(M::POST, "/repositories/{id}/attach", OPERATOR, ui::repos::attach),
        route(
            M::POST,
            "/repositories/{id}/maintenance",
            OPERATOR,
            ui::repos::maintenance,
        ),
        route(M::POST, "/repositories/{id}/locks", OPERATOR, ui::repos::list_locks),
        route(M::POST, "/repositories/{id}/unlock", OPERATOR, ui::repos::unlock),
        // repository refresh on demand (repoops: issue 14 item 6)
        route(M::POST, "/repositories/{id}/refresh", OPERATOR, ui::repos::refresh),
        // ---- end of repository pages
        // ---- repository edit, detach, delete pages (issue 10/11; `ui::repo_admin`)
        route(M::POST, "/repositories/{id}/edit", OPERATOR, ui::repo_admin::edit),
        route(M::POST, "/repositories/{id}/delete", OPERATOR, ui::repo_admin::delete),
        route(
            M::GET,
            "/repositories/{id}/hosts/{host}/detach",
            OPERATOR,
            ui::repo_admin::detach_form,
        ),
        route(
            M::POST,
            "/repositories/{id}/hosts/{host}/detach",
            OPERATOR,
            ui::repo_admin::detach,
        ),
        // ---- end of repository edit, detach, delete pages
        // ---- API
        route(
            M::GET,
            "/api/v1/openapi.json",
            PUBLIC,
            crate::openapi::document,
        )
        .doc("This document"),
        route(M::GET, "/api/docs", PUBLIC, crate::openapi::reference)
            .doc("A reference page of this API (HTML)"),
        route(M::POST, "/api/v1/enroll", PUBLIC, enroll::enroll)
            .doc("An agent enrolls with its one-time token (agents only)"),
        route(M::GET, "/api/v1/me", VIEWER, crate::me)
            .doc("Who the caller is, and the session's CSRF token")
            .returns::<crate::MeView>(200),
        route(M::GET, "/api/v1/events", VIEWER, crate::events::stream)
            .query(&[("topics", false), ("since", false), ("host", false), ("job", false)])
            .doc("Live events (Server-Sent Events): ?topics=hosts,jobs,alerts,channels,schedules,repos (the default) or vitals (agents' heartbeats, only when asked for)&since=(the last event id seen; Last-Event-ID wins)&host=(one host's events and those about no host) or &job=(one job's)&progress=h1,h2 (job progress and log lines of these hosts only; empty: none)"),
        // jobs
        route(M::GET, "/api/v1/jobs", VIEWER, jobs::list)
            .query(&[
                ("host", false),
                ("kind", false),
                ("status", false),
                ("repo", false),
                ("cursor", false),
                ("limit", false),
            ])
            .doc("Jobs, newest first: ?host=&kind=&status=&repo=&cursor=&limit=")
            .returns_page::<crate::views::job::JobRow>(),
        route(M::POST, "/api/v1/jobs", OPERATOR, jobs::create)
            .doc("Create a job of any kind")
            .body::<jobs::JobCreateBody>()
            .returns::<jobs::JobCreatedView>(201),
        route(M::GET, "/api/v1/jobs/{id}", VIEWER, jobs::get)
            .doc("One job as its page shows it: parameters, result (with readable facts and the first page of a snapshots or diff table), error with advice, the restic command line")
            .returns::<crate::views::job::JobView>(200),
        route(M::POST, "/api/v1/jobs/{id}/cancel", OPERATOR, jobs::cancel)
            .doc("Cancel a job")
            .returns::<jobs::JobStateView>(200),
        route(M::GET, "/api/v1/jobs/{id}/logs", OPERATOR, jobs::logs)
            .query(&[("after", false), ("limit", false)])
            .doc("A job's log lines: ?after=<seq>&limit= (operators: restic's output names files and paths, so viewers get neither this nor the live `job/log` events)")
            .returns::<jobs::LogPage>(200),
        // hosts
        route(M::GET, "/api/v1/hosts", VIEWER, ui::dashboard::api_list)
            .doc("The fleet as the dashboard shows it: counters and one page of hosts with their summary and 30-day compliance strip: ?q=&state=&tag=&sort=&page=")
            .returns::<crate::views::fleet::FleetPage>(200),
        route(M::POST, "/api/v1/hosts", OPERATOR, hosts::add)
            .doc("Add a host: the answer holds the command that enrolls its agent")
            .body::<hosts::HostAddBody>()
            .returns::<hosts::EnrollmentView>(201),
        route(M::GET, "/api/v1/hosts/{id}", VIEWER, hosts::get)
            .doc("One host as its page shows it: posture, dashboard row, repositories with health and snapshots, schedules, recent jobs, open alerts")
            .returns::<crate::views::host::HostView>(200),
        route(M::POST, "/api/v1/hosts/{id}/token", OPERATOR, hosts::token)
            .doc("A new enrollment token (re-enrollment)")
            .returns::<hosts::EnrollmentView>(200),
        route(M::POST, "/api/v1/hosts/{id}/revoke", ADMIN, hosts::revoke)
            .doc("Revoke a host: its agent is disconnected and cannot return")
            .returns_nothing(204),
        route(M::POST, "/api/v1/hosts/{id}/mute", OPERATOR, alerts::mute)
            .doc("Mute a host's notifications until a time (alerts are still recorded)")
            .body::<alerts::MuteBody>()
            .returns_nothing(204),
        route(
            M::DELETE,
            "/api/v1/hosts/{id}/mute",
            OPERATOR,
            alerts::unmute,
        )
        .doc("End a host's mute")
        .returns_nothing(204),
        // rejected results (issue 9: results the control plane refused)
        route(M::GET, "/api/v1/rejected", VIEWER, rejected::list)
            .query(&[("host", false), ("limit", false)])
            .doc("Results the control plane refused from agents (unknown job, a deleted schedule's run, another host's job, malformed), newest first: ?host=&limit=")
            .returns::<Vec<crate::views::rejected::RejectedRow>>(200),
        // repositories
        route(M::GET, "/api/v1/repos", VIEWER, repos::list)
            .query(&[("q", false), ("cursor", false), ("limit", false)])
            .doc("Repositories by name, a page at a time, each with its hosts counted: ?q= (text in the name or URL)&cursor=&limit=")
            .returns_page::<repos::RepoView>(),
        route(M::POST, "/api/v1/repos", OPERATOR, repos::add)
            .doc("Add a repository (optionally `restic init` on a host)")
            .body::<repos::RepoAddBody>()
            .returns::<repos::RepoAddedView>(201),
        route(M::GET, "/api/v1/repos/{id}", VIEWER, repos::get)
            .doc("One repository with the hosts attached")
            .returns::<repos::RepoView>(200),
        route(M::GET, "/api/v1/repos/{id}/health", VIEWER, repos::health)
            .doc("A repository's latest health record (sizes, snapshots, locks, last check)")
            .returns::<repos::HealthView>(200),
        route(M::POST, "/api/v1/repos/{id}/test", OPERATOR, repos::test)
            .doc("Test a host's connection to the repository")
            .body::<repos::HostBody>()
            .returns::<repos::RepoTestView>(200),
        route(
            M::POST,
            "/api/v1/repos/{id}/attach",
            OPERATOR,
            repos::attach,
        )
        .doc("Attach a host with append-only or full access")
        .body::<repos::AttachBody>()
        .returns_nothing(204),
        route(
            M::PUT,
            "/api/v1/repos/{id}/maintenance",
            OPERATOR,
            repos::maintenance,
        )
        .doc("Set (or clear) the maintenance host")
        .body::<repos::MaintenanceBody>()
        .returns_nothing(204),
        // ---- repository update, detach, delete (issue 10; `api::repo_admin`)
        route(M::PATCH, "/api/v1/repos/{id}", OPERATOR, repo_admin::patch)
            .doc("Rename a repository and/or change its URL, password or environment; new credentials are verified through a host first (nothing is saved when they fail), then reach the agents whose credential carried the old ones")
            .body::<repo_admin::RepoPatchBody>()
            .returns::<repo_admin::RepoUpdatedView>(200),
        route(M::DELETE, "/api/v1/repos/{id}", OPERATOR, repo_admin::delete)
            .doc("Delete a repository's record (its credentials, schedules, cached snapshots and health go with it; jobs stay; the data in the repository is never touched); refused while hosts are attached unless ?detach_hosts=true, and while jobs on it run")
            .query(&[("detach_hosts", false)])
            .returns_nothing(204),
        route(
            M::DELETE,
            "/api/v1/repos/{id}/hosts/{host}",
            OPERATOR,
            repo_admin::detach,
        )
        .doc("Detach a host: its credential is removed and its agent's config pushed without it; refused while it has schedules on the repository unless ?delete_schedules=true, and for the maintenance host unless ?new_maintenance_host= or ?no_maintenance_host=true")
        .query(&[
            ("delete_schedules", false),
            ("new_maintenance_host", false),
            ("no_maintenance_host", false),
        ])
        .returns_nothing(204),
        // ---- end of repository update, detach, delete
        // repositories: size over time, locks, safe unlock (issue 11)
        route(M::GET, "/api/v1/repos/{id}/history", VIEWER, repos::history)
            .doc("A repository's size over time, oldest first (stored and restore size)")
            .returns::<Vec<crate::views::repo::SizeView>>(200),
        route(M::GET, "/api/v1/repos/{id}/locks", VIEWER, repos::locks)
            .doc("A repository's locks as the newest lock listing found them, each with its host, process, age and whether it looks stale")
            .returns::<crate::views::repo::LocksView>(200),
        route(
            M::POST,
            "/api/v1/repos/{id}/locks",
            OPERATOR,
            repos::refresh_locks,
        )
        .doc("List the repository's locks now, through an attached host (a `locks` job)")
        .body::<repos::HostBody>()
        .returns::<jobs::JobCreatedView>(201),
        route(M::POST, "/api/v1/repos/{id}/unlock", OPERATOR, repos::unlock)
            .doc("Remove stale locks (`restic unlock`, never `--remove-all`) through an attached host")
            .body::<repos::HostBody>()
            .returns::<jobs::JobCreatedView>(201),
        // repository refresh on demand (repoops: issue 14 item 6)
        route(M::POST, "/api/v1/repos/{id}/refresh", OPERATOR, repos::refresh)
            .doc("Refresh the repository's snapshot list, sizes and locks now (snapshots, both stats modes and locks jobs on its maintenance host if online, else an attached online host); 409 when no such host is online")
            .returns::<repos::RefreshView>(202),
        // schedules
        route(M::GET, "/api/v1/schedules", VIEWER, schedules::list)
            .query(&[("host", false), ("cursor", false), ("limit", false)])
            .doc("Schedules by host, a page at a time: ?host=&cursor=&limit=")
            .returns_page::<schedules::ScheduleView>(),
        route(M::POST, "/api/v1/schedules", OPERATOR, schedules::create)
            .doc("Create a schedule")
            .body::<schedules::ScheduleBody>()
            .returns::<schedules::ScheduleSavedView>(201),
        route(M::GET, "/api/v1/schedules/{id}", VIEWER, schedules::get)
            .doc("One schedule")
            .returns::<schedules::ScheduleView>(200),
        route(
            M::PUT,
            "/api/v1/schedules/{id}",
            OPERATOR,
            schedules::update,
        )
        .doc("Edit a schedule")
        .body::<schedules::ScheduleBody>()
        .returns::<schedules::ScheduleSavedView>(200),
        route(
            M::DELETE,
            "/api/v1/schedules/{id}",
            OPERATOR,
            schedules::delete,
        )
        .doc("Delete a schedule")
        .returns_nothing(204),
        // ---- retention preview (schedules area): forget --dry-run on the real repository
        route(
            M::POST,
            "/api/v1/hosts/{id}/retention-preview",
            OPERATOR,
            retention::create,
        )
        .doc("What a forget policy would remove from this host's snapshots in a repository, and why each kept one is kept (restic forget --dry-run on the maintenance host, else the host); waits up to wait_secs for the plan")
        .body::<retention::PreviewBody>()
        .returns::<retention::PreviewView>(200),
        route(
            M::GET,
            "/api/v1/jobs/{id}/retention-plan",
            VIEWER,
            retention::get,
        )
        .doc("The plan of a retention preview job (see POST /api/v1/hosts/{id}/retention-preview)")
        .returns::<retention::PreviewView>(200),
        route(M::GET, "/api/v1/cron/preview", VIEWER, cron::preview)
            .query(&[("expr", true), ("tz", false), ("count", false)])
            .doc("Next run times of a cron expression: ?expr=&tz=&count=")
            .returns::<cron::Preview>(200),
        // snapshots
        route(M::GET, "/api/v1/snapshots", VIEWER, snapshots::list)
            .query(&[("repo", true), ("host", false), ("cursor", false), ("limit", false)])
            .doc("Snapshots of a repository (of one host with host=), newest first, a page at a time: ?repo=&host=&cursor=&limit=(1-500, default 50); total counts them all")
            .returns::<snapshots::SnapshotPage>(200),
        route(M::GET, "/api/v1/snapshots/{id}/ls", VIEWER, snapshots::ls)
            .query(&[("host", true), ("repo", true), ("dir", false)])
            .doc("One directory level of a snapshot: ?host=&repo=&dir=")
            .returns::<snapshots::LsView>(200),
        // alerts and channels
        route(M::GET, "/api/v1/alerts", VIEWER, alerts::list)
            .query(&[
                ("host", false),
                ("state", false),
                ("kind", false),
                ("severity", false),
                ("cursor", false),
                ("limit", false),
            ])
            .doc("Alerts, newest first: ?host=&state=open|unacknowledged|acknowledged|resolved|all&kind=&severity=&cursor=&limit=")
            .returns_page::<alerts::AlertViewBody>(),
        route(M::GET, "/api/v1/alerts/{id}", VIEWER, alerts::get)
            .doc("One alert")
            .returns::<alerts::AlertViewBody>(200),
        route(M::POST, "/api/v1/alerts/{id}/ack", OPERATOR, alerts::ack)
            .doc("Acknowledge an alert")
            .returns_nothing(204),
        route(
            M::POST,
            "/api/v1/alerts/{id}/resolve",
            OPERATOR,
            alerts::resolve,
        )
        .doc("Resolve an alert")
        .returns_nothing(204),
        route(M::GET, "/api/v1/channels", VIEWER, alerts::channels)
            .doc("Notification channels (no secrets)")
            .returns::<Vec<alerts::ChannelViewBody>>(200),
        route(M::POST, "/api/v1/channels", ADMIN, alerts::channel_create)
            .doc("Create a channel")
            .body::<alerts::ChannelBody>()
            .returns::<alerts::ChannelViewBody>(201),
        route(
            M::POST,
            "/api/v1/channels/test",
            ADMIN,
            alerts::channel_test_unsaved,
        )
        .doc("Test an unsaved channel definition")
        .body::<alerts::ChannelBody>()
        .returns::<alerts::ChannelTestView>(200),
        route(
            M::PUT,
            "/api/v1/channels/{id}",
            ADMIN,
            alerts::channel_update,
        )
        .doc("Edit a channel")
        .body::<alerts::ChannelBody>()
        .returns::<alerts::ChannelViewBody>(200),
        route(
            M::DELETE,
            "/api/v1/channels/{id}",
            ADMIN,
            alerts::channel_delete,
        )
        .doc("Delete a channel")
        .returns_nothing(204),
        route(
            M::POST,
            "/api/v1/channels/{id}/test",
            ADMIN,
            alerts::channel_test,
        )
        .doc("Test a saved channel")
        .returns::<alerts::ChannelTestView>(200),
        route(M::GET, "/api/v1/deliveries", VIEWER, logs::deliveries)
            .query(&[
                ("alert", false),
                ("channel", false),
                ("cursor", false),
                ("limit", false),
            ])
            .doc("The notification delivery log: ?alert=&channel=&cursor=&limit=")
            .returns_page::<logs::DeliveryView>(),
        route(M::GET, "/api/v1/audit", ADMIN, logs::audit)
            .query(&[
                ("actor", false),
                ("action", false),
                ("target_kind", false),
                ("target_id", false),
                ("since", false),
                ("until", false),
                ("cursor", false),
                ("limit", false),
            ])
            .doc("The audit log, newest first: ?actor=&action=(exact, or a prefix ending in '.')&target_kind=&target_id=&since=&until=(Unix ms or YYYY-MM-DD, UTC)&cursor=&limit=")
            .returns_page::<logs::AuditView>(),
        // API tokens and users
        route(M::GET, "/api/v1/tokens", ADMIN, tokens::list)
            .doc("API tokens (never their secrets)")
            .returns::<Vec<tokens::TokenView>>(200),
        route(M::POST, "/api/v1/tokens", ADMIN, tokens::create)
            .doc("Create an API token: its secret is in this answer only")
            .body::<tokens::TokenCreateBody>()
            .returns::<tokens::TokenCreated>(201),
        route(M::DELETE, "/api/v1/tokens/{id}", ADMIN, tokens::revoke)
            .doc("Revoke an API token")
            .returns_nothing(204),
        route(M::GET, "/api/v1/users", ADMIN, users::list)
            .doc("Operator accounts")
            .returns::<Vec<users::UserView>>(200),
        route(M::POST, "/api/v1/users", ADMIN, users::create)
            .doc("Create an account")
            .body::<users::UserCreateBody>()
            .returns::<users::UserView>(201),
        route(M::PATCH, "/api/v1/users/{id}", ADMIN, users::update)
            .doc("Change an account's role, disabled flag or password")
            .body::<users::UserUpdateBody>()
            .returns::<users::UserView>(200),
        route(M::DELETE, "/api/v1/users/{id}", ADMIN, users::delete)
            .doc("Delete an account")
            .returns_nothing(204),
        // ---- fleet scale (scale branch): host tags, the dashboard's live fragment
        route(M::GET, "/fragments/fleet", VIEWER, ui::dashboard::fragment),
        route(M::POST, "/hosts/{id}/tags", OPERATOR, ui::tags::save),
        route(M::PUT, "/api/v1/hosts/{id}/tags", OPERATOR, hosts::set_tags)
            .doc("Replace a host's tags (at most 16, each at most 40 characters, no commas)")
            .body::<hosts::HostTagsBody>()
            .returns::<hosts::HostTagsView>(200),
        // ---- fleet UI at scale (issue 11): host filters suggest names page by page
        route(M::GET, "/api/v1/host-names", VIEWER, host_names::list)
            .query(&[("q", false), ("cursor", false), ("limit", false)])
            .doc("Host names for a host filter, by name: ?q=(text in the name, or an exact id)&cursor=&limit=(1-100, default 20)")
            .returns_page::<host_names::HostName>(),
    ]
}

/// The router: every entry of [`table`] behind its guard, authentication
/// and CSRF, and the HTTP hygiene layers.
pub fn app(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for r in table() {
        let path = r.path;
        let timed = state.clone();
        let handler = r
            .handler
            .route_layer(axum::middleware::from_fn(move |req, next| {
                crate::metrics::time(timed.clone(), path, req, next)
            }));
        let r = Route { handler, ..r };
        let handler = match r.access {
            Access::Public => r.handler,
            Access::Min(min) => {
                r.handler
                    .route_layer(axum::middleware::from_fn(move |req, next| {
                        auth::guard(min, req, next)
                    }))
            }
        };
        router = router.route(r.path, handler);
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::ui::settings::cpbackup::banner,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::events::mark_render,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state);
    crate::layers::apply(router)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError::not_found(format!("no such route: {}", uri.path())).into_response()
    } else {
        auth::page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {}", uri.path()),
        )
        .into_response()
    } else {
        auth::page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "This page does not accept that method.",
        )
    }
}
