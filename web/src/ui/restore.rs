//! The restore wizard (`/restore`): host → repository → snapshot (filtered
//! by date, tag, path) → browse one directory level at a time and select
//! files and folders → target (the original location, with an overwrite
//! warning and a confirmation naming host and paths, or another host and
//! path) → a summary and the job, whose page shows live progress and the
//! result. Every step is a GET with the wizard's state in the query
//! (selections as repeated `sel=`), so each has a stable URL and works
//! without script. Listings come from the control plane's `ls` through the
//! [`listing`](super::listing) cache; the response header `x-rm-listing`
//! says whether a page was answered from the cache or by an agent.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rm_bus::msg::{JobParams, LsEntry, RestoreTarget};
use rm_bus::subject::SvcRole;
use rm_cp_api as api;

use crate::AppState;
use crate::auth::{Principal, RequireOperator};
use crate::error::ApiError;
use crate::svc;
use crate::ui::listing::{self, Key};
use crate::ui::open_alerts;
use crate::ui::run::Errors;
use crate::ui::{Layout, error_page, render};

/// Header naming where a listing came from: `cache` or `agent`.
pub const LISTING_HEADER: &str = "x-rm-listing";

/// The wizard's state, from the query string (or the final form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wizard {
    pub host: String,
    pub repo: String,
    pub snapshot: String,
    pub dir: String,
    pub page: usize,
    pub sel: Vec<String>,
    /// `""` (browse) or `target`.
    pub step: String,
    pub from: String,
    pub to: String,
    pub tag: String,
    pub path: String,
    /// The snapshot list's cursor: `time:snapshot_id` of the last row
    /// shown, for the page of older snapshots.
    pub before: String,
    /// `path` (another location) or `original`.
    pub target: String,
    /// The target host: a host's id or name (the form's search box).
    pub target_host: String,
    pub target_path: String,
    pub confirm: bool,
    /// The host step's list of hosts: the name after which the page starts.
    pub hosts_after: String,
}

impl Wizard {
    /// Parses `application/x-www-form-urlencoded` pairs; unknown keys are ignored.
    pub fn parse(raw: &str) -> Self {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_default();
        let mut w = Wizard {
            dir: "/".into(),
            page: 1,
            ..Wizard::default()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "host" => w.host = v,
                "repo" => w.repo = v,
                "snapshot" => w.snapshot = v,
                "dir" => w.dir = v,
                "page" => w.page = v.parse().unwrap_or(1),
                "sel" if !v.trim().is_empty() && !w.sel.contains(&v) => w.sel.push(v),
                "step" => w.step = v,
                "from" => w.from = v.trim().into(),
                "to" => w.to = v.trim().into(),
                "tag" => w.tag = v.trim().into(),
                "path" => w.path = v.trim().into(),
                "before" => w.before = v,
                "target" => w.target = v,
                "target_host" => w.target_host = v,
                "target_path" => w.target_path = v.trim().into(),
                "confirm" => w.confirm = !v.is_empty(),
                "hosts_after" => w.hosts_after = v,
                _ => {}
            }
        }
        if w.target.is_empty() {
            w.target = "path".into();
        }
        w
    }

    /// A wizard URL with this state's host, repository, snapshot and
    /// selection, plus `extra` pairs.
    pub fn href(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("host", &self.host),
            ("repo", &self.repo),
            ("snapshot", &self.snapshot),
        ] {
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        pairs.extend(extra.iter().copied());
        for s in &self.sel {
            pairs.push(("sel", s));
        }
        format!(
            "/restore?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    }

    /// A wizard URL for another directory of the snapshot.
    pub fn dir_href(&self, dir: &str) -> String {
        self.href(&[("dir", dir)])
    }

    pub fn page_href(&self, page: usize) -> String {
        self.href(&[("dir", &self.dir), ("page", &page.to_string())])
    }

    /// The snapshot list after `before` (`""`: the newest), filters kept.
    pub fn snapshots_page_href(&self, before: &str) -> String {
        let mut extra: Vec<(&str, &str)> = [
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("tag", self.tag.as_str()),
            ("path", self.path.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        if !before.is_empty() {
            extra.push(("before", before));
        }
        self.href(&extra)
    }

    /// The cursor of `before`: `(time, snapshot_id)`.
    fn before_cursor(&self) -> Option<(i64, &str)> {
        let (t, id) = self.before.split_once(':')?;
        Some((t.parse().ok()?, id))
    }

    /// Back to the choice of snapshot (filters cleared).
    pub fn snapshots_href(&self) -> String {
        Wizard {
            snapshot: String::new(),
            sel: vec![],
            ..self.clone()
        }
        .href(&[])
    }

    /// Back to browsing, at the folder of the first selection.
    pub fn change_href(&self) -> String {
        let dir = self
            .sel
            .first()
            .map_or_else(|| "/".to_owned(), |s| listing::parent(s));
        self.dir_href(&dir)
    }

    pub fn is_selected(&self, path: &str) -> bool {
        self.sel.iter().any(|s| s == path)
    }
}

/// What the final step asks restic for, or the field errors (input kept).
pub fn validate(w: &Wizard) -> Result<(JobParams, Option<String>), Errors> {
    let mut errors = Errors::new();
    if w.snapshot.is_empty() {
        errors.insert("snapshot", "choose a snapshot first".into());
    }
    if w.sel.is_empty() {
        errors.insert(
            "sel",
            "select at least one file or folder to restore".into(),
        );
    }
    if w.sel
        .iter()
        .any(|s| !s.starts_with('/') || listing::normalize(s).is_none())
    {
        errors.insert(
            "sel",
            "a selected path must be absolute and may not contain `..`".into(),
        );
    }
    let (target, target_host) = match w.target.as_str() {
        "original" => {
            if !w.confirm {
                errors.insert(
                    "confirm",
                    "confirm that the files at their original location will be overwritten".into(),
                );
            }
            (RestoreTarget::Original, None)
        }
        _ => {
            let p = &w.target_path;
            if p.is_empty() {
                errors.insert(
                    "target_path",
                    "give the directory to restore into, e.g. /tmp/restore".into(),
                );
            } else if !p.starts_with('/') {
                errors.insert(
                    "target_path",
                    "give an absolute path (starting with /)".into(),
                );
            } else if p.split('/').any(|seg| seg == "..") {
                errors.insert("target_path", "a path may not contain `..`".into());
            }
            let other = Some(w.target_host.clone()).filter(|h| !h.is_empty() && *h != w.host);
            (RestoreTarget::Path { path: p.clone() }, other)
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((
        JobParams::Restore {
            snapshot: w.snapshot.clone(),
            include: w.sel.clone(),
            target,
        },
        target_host,
    ))
}

/// The wizard's snapshot filters for the store: the day span (dates as
/// `YYYY-MM-DD`, UTC, both days included), the tag and a path substring.
pub fn snapshot_filter(w: &Wizard) -> rm_store::snapshots::PageFilter<'_> {
    let midnight = |d: &str| -> Option<i64> {
        let date: jiff::civil::Date = d.parse().ok()?;
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_millisecond())
    };
    rm_store::snapshots::PageFilter {
        since: midnight(&w.from),
        until: midnight(&w.to).map(|t| t + 86_400_000),
        tag: Some(w.tag.as_str()).filter(|t| !t.is_empty()),
        path: Some(w.path.as_str()).filter(|p| !p.is_empty()),
    }
}

/// Host names per page of the choose-a-host step.
pub const HOSTS_PER_PAGE: i64 = 50;

/// The wizard's source host from what the host step sent (an id or a
/// name): the host, or why not — `None` when nothing was given yet, else
/// a sentence for the `host` field.
async fn source_host(
    conn: &mut rm_store::Conn,
    typed: &str,
) -> Result<Result<rm_store::hosts::Host, Option<String>>, ApiError> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(Err(None));
    }
    let Some(id) = rm_store::hosts::resolve(&mut *conn, typed).await? else {
        return Ok(Err(Some(format!(
            "no host is named “{typed}”: type a host's exact name or id, or pick one below"
        ))));
    };
    let host = rm_store::hosts::get(&mut *conn, &id).await?;
    if host.revoked_at.is_some() || host.status == "revoked" {
        return Ok(Err(Some(format!(
            "“{}” is revoked: restore from a current host, or to one",
            host.name
        ))));
    }
    Ok(Ok(host))
}

/// Resolves the target host the final form names (an id or a name) to its
/// id; a name that names no current host is a `target_host` field error.
async fn resolve_target(state: &AppState, w: &mut Wizard) -> Result<Option<String>, ApiError> {
    let typed = w.target_host.trim().to_owned();
    if typed.is_empty() || w.target == "original" {
        return Ok(None);
    }
    let mut conn = state.store.read().await?;
    if let Ok(host) = source_host(&mut conn, &typed).await? {
        w.target_host = host.id;
        return Ok(None);
    }
    Ok(Some(format!(
        "no current host is named “{typed}”: type the exact name or id of the host to restore to"
    )))
}

/// Snapshots per page of the choose-a-snapshot step.
pub const SNAPSHOTS_PER_PAGE: i64 = 50;

fn date_ok(s: &str) -> bool {
    s.is_empty() || s.parse::<jiff::civil::Date>().is_ok()
}

// ------------------------------------------------------------ the page

/// One snapshot row of the choose-a-snapshot step.
pub struct SnapRow {
    pub short_id: String,
    pub time: i64,
    pub paths: String,
    pub tags: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "restore.html")]
pub(crate) struct RestorePage {
    pub(crate) layout: Layout,
    pub(crate) now: i64,
    /// `host`, `repo`, `snapshot`, `browse` or `target`.
    pub(crate) step: &'static str,
    pub(crate) w: Wizard,
    pub(crate) host_name: String,
    pub(crate) repo_name: String,
    pub(crate) short_id: String,
    pub(crate) choices: Vec<(String, String)>,
    pub(crate) snaps: Vec<SnapRow>,
    /// The link to older snapshots, when there are more.
    pub(crate) older: Option<String>,
    pub(crate) entries: Vec<LsEntry>,
    pub(crate) total: usize,
    pub(crate) page: usize,
    pub(crate) pages: usize,
    pub(crate) crumbs: Vec<(String, String)>,
    /// The first names for the target host's suggestions (script fetches more).
    pub(crate) targets: Vec<String>,
    /// What the target host's search box shows.
    pub(crate) target_label: String,
    /// The host step's link to the next page of host names.
    pub(crate) more_hosts: Option<String>,
    /// The host step lists the hosts matching what was typed.
    pub(crate) host_list_filtered: bool,
    pub(crate) errors: Errors,
    pub(crate) failure: Option<String>,
}

impl RestorePage {
    /// Selections not on the listed page (carried as hidden fields).
    pub(crate) fn kept_elsewhere(&self) -> Vec<&String> {
        self.w
            .sel
            .iter()
            .filter(|s| !self.entries.iter().any(|e| &e.path == *s))
            .collect()
    }
}

/// A file's size in binary units (`—` when unknown).
pub fn size(n: &Option<u64>) -> String {
    n.map_or_else(
        || "—".to_owned(),
        |n| crate::ui::fmt::bytes(i64::try_from(n).unwrap_or(i64::MAX)),
    )
}

/// restic's modification time as `2026-11-30 12:00:00`.
pub fn mtime(m: &Option<String>) -> String {
    m.as_deref()
        .map(|m| m.chars().take(19).collect::<String>().replace('T', " "))
        .unwrap_or_default()
}

/// A listing of one directory: from the cache, or asked of an agent.
async fn list_dir(
    state: &AppState,
    who: &Principal,
    w: &Wizard,
    dir: &str,
) -> Result<(Arc<Vec<LsEntry>>, &'static str), ApiError> {
    let key = Key {
        repo_id: w.repo.clone(),
        snapshot: w.snapshot.clone(),
        dir: dir.to_owned(),
    };
    if let Some(hit) = state.listings.get(&key) {
        return Ok((hit, "cache"));
    }
    let reply: api::LsReply = svc::call(
        &state.bus,
        SvcRole::Controlplane,
        api::LS,
        who.actor(),
        api::LsRequest {
            host_id: w.host.clone(),
            repo_id: w.repo.clone(),
            snapshot: w.snapshot.clone(),
            dir: dir.to_owned(),
        },
        state.svc_timeout,
    )
    .await?;
    if !reply.ok {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "restic_failed",
            reply
                .error
                .unwrap_or_else(|| "listing the snapshot failed".into()),
        ));
    }
    Ok((state.listings.put(key, reply.entries), "agent"))
}

async fn page(
    state: &AppState,
    who: &Principal,
    mut w: Wizard,
    errors: Errors,
    failure: Option<String>,
) -> Response {
    let mut p = RestorePage {
        layout: Layout::new(who, "hosts", "", open_alerts(state).await),
        now: state.now(),
        step: "host",
        host_name: String::new(),
        repo_name: String::new(),
        short_id: String::new(),
        choices: vec![],
        snaps: vec![],
        older: None,
        entries: vec![],
        total: 0,
        page: 1,
        pages: 1,
        crumbs: vec![],
        targets: vec![],
        target_label: String::new(),
        more_hosts: None,
        host_list_filtered: false,
        errors,
        failure,
        w: Wizard::default(),
    };
    let mut source = None;
    let loaded = async {
        let mut conn = state.store.read().await?;
        // The host step: a name or id typed (suggestions from
        // `GET /api/v1/host-names`) or picked from a list paged by name,
        // never the whole fleet in one page.
        let host = match source_host(&mut conn, &w.host).await? {
            Ok(host) => host,
            Err(problem) => {
                let text = match &problem {
                    Some(_) => w.host.as_str(),
                    None => "",
                };
                if let Some(message) = problem {
                    p.errors.insert("host", message);
                }
                let after = Some(w.hosts_after.as_str()).filter(|a| !a.is_empty());
                let mut names =
                    rm_store::hosts::search_names(&mut conn, text, after, HOSTS_PER_PAGE + 1)
                        .await?;
                if names.len() > usize::try_from(HOSTS_PER_PAGE).unwrap_or(usize::MAX) {
                    names.truncate(usize::try_from(HOSTS_PER_PAGE).unwrap_or(0));
                    p.more_hosts = names.last().map(|(_, name)| {
                        let mut pairs = vec![("hosts_after", name.as_str())];
                        if !text.is_empty() {
                            pairs.push(("host", text));
                        }
                        format!(
                            "/restore?{}",
                            serde_urlencoded::to_string(&pairs).unwrap_or_default()
                        )
                    });
                }
                p.host_list_filtered = !text.is_empty();
                p.choices = names
                    .into_iter()
                    .map(|(id, name)| {
                        (
                            Wizard {
                                host: id,
                                ..Wizard::default()
                            }
                            .href(&[]),
                            name,
                        )
                    })
                    .collect();
                return Ok(());
            }
        };
        w.host = host.id.clone();
        p.host_name = host.name.clone();
        // the host's repositories only: a fleet where every host has its
        // own holds as many repositories as hosts
        let creds = rm_store::repos::credentials_of_host(&mut conn, &w.host).await?;
        let ids: Vec<&str> = creds.iter().map(|c| c.repo_id.as_str()).collect();
        let attached = rm_store::repos::of_ids(&mut conn, &ids).await?;
        if w.repo.is_empty() || !attached.iter().any(|r| r.id == w.repo) {
            w.repo.clear();
            p.step = "repo";
            p.choices = attached
                .iter()
                .map(|r| (w.href(&[("repo", &r.id)]), r.name.clone()))
                .collect();
            return Ok(());
        }
        p.repo_name = attached
            .iter()
            .find(|r| r.id == w.repo)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let restic_host = host.restic_host.clone().unwrap_or_else(|| host.id.clone());
        if w.snapshot.is_empty() {
            p.step = "snapshot";
            for (field, v) in [("from", &w.from), ("to", &w.to)] {
                if !date_ok(v) {
                    p.errors
                        .insert(field, "a date as YYYY-MM-DD, e.g. 2026-11-30".into());
                }
            }
            if !w.before.is_empty() && w.before_cursor().is_none() {
                return Err(ApiError::invalid(
                    "before",
                    "not a cursor of this list: follow the “Older” link",
                ));
            }
            let mut snaps = rm_store::snapshots::page(
                &mut conn,
                &w.repo,
                &restic_host,
                &snapshot_filter(&w),
                w.before_cursor(),
                SNAPSHOTS_PER_PAGE + 1,
            )
            .await?;
            if snaps.len() > usize::try_from(SNAPSHOTS_PER_PAGE).unwrap_or(usize::MAX) {
                snaps.truncate(usize::try_from(SNAPSHOTS_PER_PAGE).unwrap_or(0));
                p.older = snaps
                    .last()
                    .map(|s| w.snapshots_page_href(&format!("{}:{}", s.time, s.snapshot_id)));
            }
            for s in snaps {
                let tags: Vec<String> = serde_json::from_str(&s.tags_json).unwrap_or_default();
                let paths: Vec<String> = serde_json::from_str(&s.paths_json).unwrap_or_default();
                p.snaps.push(SnapRow {
                    href: w.href(&[("snapshot", &s.snapshot_id)]),
                    short_id: s.short_id,
                    time: s.time,
                    paths: paths.join(", "),
                    tags: tags.join(", "),
                });
            }
            return Ok(());
        }
        p.short_id = rm_store::snapshots::find(&mut conn, &w.repo, &restic_host, &w.snapshot)
            .await?
            .map(|s| s.short_id)
            .unwrap_or_else(|| w.snapshot.chars().take(8).collect());
        if w.step == "target" || !p.errors.is_empty() || p.failure.is_some() {
            p.step = "target";
            // the target host's search box shows a name: the chosen
            // host's, or what was typed when it names no host
            p.target_label = if w.target_host.is_empty() {
                host.name.clone()
            } else {
                match rm_store::hosts::resolve(&mut conn, &w.target_host).await? {
                    Some(id) => rm_store::hosts::get(&mut conn, &id).await?.name,
                    None => w.target_host.clone(),
                }
            };
            p.targets = rm_store::hosts::search_names(&mut conn, "", None, 20)
                .await?
                .into_iter()
                .map(|(_, name)| name)
                .collect();
            return Ok(());
        }
        drop(conn);
        p.step = "browse";
        let Some(dir) = listing::normalize(&w.dir) else {
            return Err(ApiError::invalid("dir", "a path may not contain `..`"));
        };
        w.dir = dir.clone();
        let (all, from) = list_dir(state, who, &w, &dir).await?;
        source = Some(from);
        let (range, page, pages) = listing::page_range(all.len(), w.page);
        p.entries = all[range].to_vec();
        p.total = all.len();
        p.page = page;
        p.pages = pages;
        p.crumbs = listing::crumbs(&dir);
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = loaded {
        return error_page(who, "hosts", &e);
    }
    let status = if p.errors.is_empty() && p.failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    p.w = w;
    let mut resp = render(&p);
    *resp.status_mut() = status;
    if let Some(from) = source {
        resp.headers_mut()
            .insert(LISTING_HEADER, HeaderValue::from_static(from));
    }
    resp
}

/// `GET /restore?host=&repo=&snapshot=&dir=&page=&sel=…&step=`.
pub async fn form(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    RawQuery(q): RawQuery,
) -> Response {
    let w = Wizard::parse(q.as_deref().unwrap_or(""));
    let errors = if w.step == "target" && w.sel.is_empty() {
        let mut e = Errors::new();
        e.insert(
            "sel",
            "select at least one file or folder to restore".into(),
        );
        e
    } else {
        Errors::new()
    };
    page(&state, &who, w, errors, None).await
}

/// `POST /restore`: creates the restore job and shows its page.
pub async fn submit(
    State(state): State<AppState>,
    RequireOperator(who): RequireOperator,
    body: Bytes,
) -> Response {
    let mut w = Wizard::parse(&String::from_utf8_lossy(&body));
    w.step = "target".into();
    let unknown_target = match resolve_target(&state, &mut w).await {
        Ok(x) => x,
        Err(e) => return error_page(&who, "hosts", &e),
    };
    let (params, target_host_id) = match (validate(&w), unknown_target) {
        (Ok(x), None) => x,
        (Ok(_), Some(message)) => {
            let mut errors = Errors::new();
            errors.insert("target_host", message);
            return page(&state, &who, w, errors, None).await;
        }
        (Err(mut errors), unknown) => {
            if let Some(message) = unknown {
                errors.insert("target_host", message);
            }
            return page(&state, &who, w, errors, None).await;
        }
    };
    let body = api::JobCreate {
        host_id: w.host.clone(),
        repo_id: w.repo.clone(),
        params,
        timeout_secs: None,
        target_host_id,
    };
    let created: Result<api::JobCreated, ApiError> = svc::call(
        &state.bus,
        SvcRole::Controlplane,
        api::JOB_CREATE,
        who.actor(),
        body,
        state.svc_timeout,
    )
    .await
    .map_err(ApiError::from);
    match created {
        Ok(c) => Redirect::to(&format!("/jobs/{}", c.job_id)).into_response(),
        Err(e) => page(&state, &who, w, Errors::new(), Some(e.message)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wizard(q: &str) -> Wizard {
        Wizard::parse(q)
    }

    #[test]
    fn the_query_carries_the_wizard_state_with_repeated_selections() {
        let w = wizard(
            "host=h1&repo=r1&snapshot=abcd1234&dir=%2Fsrv&sel=%2Fsrv%2Fa&sel=%2Fsrv%2Fb+c&sel=%2Fsrv%2Fa&_csrf=x",
        );
        assert_eq!(w.host, "h1");
        assert_eq!(w.dir, "/srv");
        assert_eq!(w.sel, ["/srv/a", "/srv/b c"]);
        assert_eq!(w.target, "path");
        let again = wizard(w.dir_href("/srv/x").trim_start_matches("/restore?"));
        assert_eq!(again.sel, w.sel);
        assert_eq!(again.dir, "/srv/x");
        assert_eq!(again.snapshot, "abcd1234");
    }

    #[test]
    fn a_restore_to_another_path_on_another_host_becomes_that_job() {
        let w = wizard(
            "host=h1&repo=r1&snapshot=s1&sel=/a&sel=/b&target=path&target_host=h2&target_path=/tmp/r",
        );
        let (params, other) = validate(&w).expect("valid");
        assert_eq!(
            params,
            JobParams::Restore {
                snapshot: "s1".into(),
                include: vec!["/a".into(), "/b".into()],
                target: RestoreTarget::Path {
                    path: "/tmp/r".into()
                },
            }
        );
        assert_eq!(other.as_deref(), Some("h2"));
        let same = wizard("host=h1&snapshot=s1&sel=/a&target_host=h1&target_path=/tmp/r");
        assert_eq!(validate(&same).expect("valid").1, None);
    }

    #[test]
    fn a_relative_or_dot_dot_target_path_is_a_field_error() {
        for bad in ["tmp/r", "/tmp/../etc", ""] {
            let w = wizard(&format!(
                "host=h1&snapshot=s1&sel=/a&target=path&target_path={bad}"
            ));
            let errors = validate(&w).expect_err(bad);
            assert!(errors.contains_key("target_path"), "{bad}");
        }
        let w = wizard("host=h1&snapshot=s1&sel=/a/../b&target_path=/tmp");
        assert!(validate(&w).expect_err("dot dot").contains_key("sel"));
        let w = wizard("host=h1&snapshot=s1&target_path=/tmp");
        assert!(validate(&w).expect_err("nothing").contains_key("sel"));
    }

    #[test]
    fn the_original_location_needs_the_overwrite_confirmation() {
        let w = wizard("host=h1&snapshot=s1&sel=/a&target=original");
        assert!(
            validate(&w)
                .expect_err("unconfirmed")
                .contains_key("confirm")
        );
        let w = wizard("host=h1&snapshot=s1&sel=/a&target=original&confirm=on");
        let (params, other) = validate(&w).expect("confirmed");
        assert!(matches!(
            params,
            JobParams::Restore {
                target: RestoreTarget::Original,
                ..
            }
        ));
        assert_eq!(other, None);
    }

    #[test]
    fn the_snapshot_filters_become_a_day_span_a_tag_and_a_path_for_the_store() {
        // 2026-11-30T00:00Z
        let day = 1_795_996_800_000;
        let w = wizard("from=2026-11-30&to=2026-11-30&tag=daily&path=www");
        let f = snapshot_filter(&w);
        assert_eq!((f.since, f.until), (Some(day), Some(day + 86_400_000)));
        assert_eq!((f.tag, f.path), (Some("daily"), Some("www")));
        let w = wizard("");
        let f = snapshot_filter(&w);
        assert_eq!((f.since, f.until, f.tag, f.path), (None, None, None, None));
        let w = wizard("host=h&repo=r&tag=daily&before=5:abc");
        assert_eq!(w.before_cursor(), Some((5, "abc")));
        assert_eq!(
            w.snapshots_page_href("4:xyz"),
            "/restore?host=h&repo=r&tag=daily&before=4%3Axyz"
        );
        assert_eq!(wizard("before=nope").before_cursor(), None);
    }
}
