//! Live events over Server-Sent Events: `GET /api/v1/events?topics=...`.
//!
//! Each web process subscribes to the bus once ([`pump`]: job progress and
//! log lines, and every `rm.evt.*`) and fans the events out through one
//! bounded broadcast channel ([`Hub`]). Every
//! client reads at its own pace from its own position in that channel: a
//! client that falls more than [`CLIENT_BUFFER`] events behind is sent
//! `refetch` and goes on from the newest event on the same connection
//! (until stop 50 it was dropped, and reconnected only to be told to
//! refetch: a burst of results at 100,000 hosts dropped every fleet-wide
//! page at once), and nobody else waits for it.
//! The last [`RING`] events are kept so a reconnecting client resumes where
//! it left off; if its `Last-Event-ID` is older than that, it first gets a
//! `refetch` event telling it to reload what it shows. A page carries the
//! id of the last event published before it read the database
//! (`data-event-id`, [`mark_render`]); its first connection passes it as
//! `?since=`, so an event that falls between the page's render and its
//! stream's start (a job that finishes meanwhile) is replayed, not lost.
//! An id from before this process started (the web role restarted) gets a
//! `refetch`. A comment every
//! [`KEEP_ALIVE`] keeps proxies from closing idle streams; shutdown ends
//! every stream.
//!
//! Agents' heartbeats (`vitals`) are apart: every host sends one every
//! 15 s, so they come at a rate set by the size of the fleet, not by what
//! happens in it (6,700 a second at 100,000 hosts), and each one only
//! repeats the last with newer figures. Through the hub they would push
//! every other event out of the ring within a fraction of a second and
//! drop clients that only want jobs. They go only to clients that ask for
//! the `vitals` topic, through a channel of their own
//! ([`pump_vitals`]): no `id:`, not kept for resumption, and a client that
//! falls behind skips to the newest instead of being dropped. The web
//! process holds its heartbeat subscription only while such a client is
//! connected.
//!
//! Event names (the `event:` field) and `data:` (JSON):
//! - `host`: `{"type": "online" | "offline" | "changed", "host_id", ...}`;
//!   `{"type": "vitals", "host_id", ...}` (the heartbeat's fields; topic
//!   `vitals` only);
//! - `job`: `{"type": "queued" | "started" | "progress" | "log" | "finished",
//!   "job_id", "host_id", ...}` (queued, started and finished add the job's
//!   `repo_id` when it runs against a repository; progress carries the
//!   progress message's fields, log its `seq` and `lines`);
//! - `alert`: `{"type": "raised" | "acknowledged" | "resolved", "alert_id", "host_id"}`;
//! - `channels`, `schedule`, `repo`: `{"type": "changed" | "health", "id"}`;
//! - `refetch`: `{}`: events were missed, reload.
//!
//! Topics (`?topics=`, comma-separated): `hosts`, `jobs`, `alerts`,
//! `channels`, `schedules`, `repos` (the default: all of these), and
//! `vitals` (only when asked for). `?host=` narrows the stream to one
//! host's events (and those about no host), `?job=` to one job's,
//! `?repo=` to one repository's and its jobs' ([`Scope`]): the host, job
//! and repository pages ask for theirs. `?progress=h1,h2`
//! keeps job progress and log lines to those hosts' (`?progress=`: none;
//! [`OutputOf`]): the dashboard asks for its page's hosts, the job lists
//! and a repository's page for none.
//!
//! Who receives what is decided in one place, [`VISIBILITY`] (event name and
//! `type` → the weakest role that receives it), applied to live events and
//! to the `Last-Event-ID` replay alike; docs/api.md repeats the table.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rm_bus::subject::{AgentSubject, AgentTopic, JobTopic};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

use crate::AppState;
use crate::api::ApiQuery;
use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// Events kept for `Last-Event-ID` resumption.
pub const RING: usize = 512;
/// How far a client may fall behind before it is told to refetch.
pub const CLIENT_BUFFER: usize = 1024;
/// Interval of keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The topic of agents' heartbeats (event `host`, type `vitals`): not in
/// the default, see the module's documentation.
pub const VITALS_TOPIC: &str = "vitals";

/// Topics a client gets by default, and the event names they carry.
const TOPICS: [(&str, &str); 6] = [
    ("hosts", "host"),
    ("jobs", "job"),
    ("alerts", "alert"),
    ("channels", "channels"),
    ("schedules", "schedule"),
    ("repos", "repo"),
];

/// The weakest role that receives an event, by event name and `type`
/// (`"*"`: any type). The first matching row wins; an event no row matches
/// goes to admins only, so a new kind of event is never sent to more roles
/// than someone decided.
///
/// - job log lines carry restic's output (file paths, error text): an
///   operator's; viewers see a job's state and progress live, and its
///   stored log on reload;
/// - notification channels are configured on admin pages only.
pub const VISIBILITY: [(&str, &str, Role); 7] = [
    ("job", "log", Role::Operator),
    ("job", "*", Role::Viewer),
    ("host", "*", Role::Viewer),
    ("alert", "*", Role::Viewer),
    ("schedule", "*", Role::Viewer),
    ("repo", "*", Role::Viewer),
    ("channels", "*", Role::Admin),
];

/// The weakest role that receives event `name` of type `kind`
/// ([`VISIBILITY`]).
pub fn min_role(name: &str, kind: &str) -> Role {
    VISIBILITY
        .iter()
        .find(|(n, t, _)| *n == name && (*t == "*" || *t == kind))
        .map_or(Role::Admin, |(_, _, role)| *role)
}

/// One event as sent.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub id: u64,
    pub name: String,
    pub data: String,
    /// Who may receive it ([`min_role`]).
    pub min_role: Role,
    /// The host and job it is about, if any (`data`'s `host_id` and
    /// `job_id`): what a scoped stream ([`Scope`]) keeps.
    pub host_id: Option<String>,
    pub job_id: Option<String>,
    /// The repository it is about: a job event's `repo_id` (the job's
    /// repository), a `repo` event's `id`.
    pub repo_id: Option<String>,
    /// A job's progress or log lines: the job events that come at a rate
    /// set by how many jobs run, each superseding the last
    /// ([`OutputOf`]).
    pub job_output: bool,
    /// When this process published it, for a job's progress (the live
    /// path's event): the stream that hands it to a client times the
    /// wait ([`Hub::send_lag`]).
    pub progress_at: Option<std::time::Instant>,
}

/// What a page's stream is narrowed to (`?host=`, `?job=` or `?repo=`):
/// the host page and a host's job list want that host's events, a job's
/// page that job's, a repository's page that repository's, not every
/// event of the fleet. Without it each such page open
/// during a fleet's backups would be sent every job's events and reload
/// itself for each (at 100,000 hosts, thousands a second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every event of the topics asked for.
    #[default]
    Fleet,
    /// Events about this host, and those about no host (a schedule or a
    /// repository changed: the page may show it).
    Host(String),
    /// Events about this job only.
    Job(String),
    /// Events about this repository: its own (`repo`) and its jobs'
    /// (a snapshot added, sizes or locks measured).
    Repo(String),
}

impl Scope {
    /// Whether `e` is in this scope.
    pub fn holds(&self, e: &LiveEvent) -> bool {
        match self {
            Self::Fleet => true,
            Self::Host(h) => e.host_id.as_ref().is_none_or(|id| id == h),
            Self::Job(j) => e.job_id.as_ref() == Some(j),
            Self::Repo(r) => e.repo_id.as_ref() == Some(r),
        }
    }
}

/// Whose job output (progress and log lines) a stream carries:
/// `?progress=h1,h2` those hosts' only, `?progress=` nobody's; without it
/// everyone's. A fleet-wide page gets every other job event (a job queued,
/// started, finished), but only the dashboard shows progress bars, for the
/// hosts on its page, and a job list or a repository's page shows none:
/// sent every job's progress, such a page open while 100,000 hosts back up
/// was sent thousands of events a second it drops, and a browser (or the
/// bench's clients) falls minutes behind reading them (stop 47).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OutputOf {
    #[default]
    Everyone,
    Hosts(std::collections::HashSet<String>),
}

impl OutputOf {
    /// Host ids one stream may name (a dashboard page shows
    /// `views::fleet::PAGE_SIZE`, 50, rows).
    pub const MAX_HOSTS: usize = 500;

    /// Parses `?progress=`.
    pub fn parse(list: Option<&str>) -> Result<Self, ApiError> {
        let Some(list) = list else {
            return Ok(Self::Everyone);
        };
        let hosts: std::collections::HashSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if hosts.len() > Self::MAX_HOSTS {
            return Err(ApiError::invalid(
                "progress",
                format!(
                    "{} hosts named; a stream takes the progress of at most {}",
                    hosts.len(),
                    Self::MAX_HOSTS
                ),
            ));
        }
        Ok(Self::Hosts(hosts))
    }

    /// Whether `e` passes: any event but job output, and the job output of
    /// the hosts named.
    pub fn holds(&self, e: &LiveEvent) -> bool {
        match self {
            Self::Everyone => true,
            Self::Hosts(hosts) => {
                !e.job_output || e.host_id.as_ref().is_some_and(|h| hosts.contains(h))
            }
        }
    }
}

/// `data`'s string field `key`.
fn str_field(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The fan-out point: a bounded broadcast plus the recent-event ring.
#[derive(Debug)]
pub struct Hub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Heartbeats, for clients of the `vitals` topic only.
    vitals_tx: broadcast::Sender<Arc<LiveEvent>>,
    /// Clients of the `vitals` topic connected now ([`pump_vitals`]
    /// subscribes while there is one).
    vitals_wanted: watch::Sender<usize>,
    /// Whether [`pump_vitals`] holds its heartbeat subscription now.
    vitals_subscribed: std::sync::atomic::AtomicBool,
    ring: Mutex<VecDeque<Arc<LiveEvent>>>,
    next_id: AtomicU64,
    clients: AtomicUsize,
    fell_behind: AtomicU64,
    /// How late agents' progress messages reach this process: the
    /// message's own `ts_ms` to its publication here ([`Hub::publish`]).
    progress_lag: Histogram,
    /// From a progress event's publication here to its hand-over to a
    /// client's connection, per client ([`Hub::send_lag`]).
    send_lag: Histogram,
    closed: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CLIENT_BUFFER).0,
            vitals_tx: broadcast::channel(CLIENT_BUFFER).0,
            vitals_wanted: watch::channel(0).0,
            vitals_subscribed: std::sync::atomic::AtomicBool::new(false),
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            next_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            fell_behind: AtomicU64::new(0),
            progress_lag: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 0.1 ms to 13 s: a hand-over is usually well under a millisecond
            send_lag: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            closed: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Publishes an event to every client.
    pub fn publish(&self, name: &str, data: Value) {
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        // ids are assigned under the ring's lock, so the ring stays ordered
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        let progress = name == "job" && kind == "progress";
        if progress && let Some(sent) = data.get("ts_ms").and_then(Value::as_i64) {
            // an agent's clock ahead of ours counts as no lag
            let lag_ms = (crate::ui::fmt::now_ms() - sent).max(0);
            #[allow(clippy::cast_precision_loss)] // milliseconds: exact below 2^52
            self.progress_lag.observe(lag_ms as f64 / 1000.0);
        }
        let event = Arc::new(LiveEvent {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            name: name.to_owned(),
            min_role: min_role(name, kind),
            host_id: str_field(&data, "host_id"),
            job_id: str_field(&data, "job_id"),
            repo_id: str_field(&data, if name == "repo" { "id" } else { "repo_id" }),
            job_output: name == "job" && matches!(kind, "progress" | "log"),
            progress_at: progress.then(std::time::Instant::now),
            data: data.to_string(),
        });
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        // no receiver is fine
        let _ = self.tx.send(event);
    }

    /// Sends a heartbeat's event to the clients of the `vitals` topic: no
    /// id, not kept in the ring.
    pub fn publish_vitals(&self, data: Value) {
        let event = Arc::new(LiveEvent {
            id: 0,
            name: "host".to_owned(),
            min_role: min_role("host", "vitals"),
            host_id: str_field(&data, "host_id"),
            job_id: None,
            repo_id: None,
            job_output: false,
            progress_at: None,
            data: data.to_string(),
        });
        // no receiver is fine
        let _ = self.vitals_tx.send(event);
    }

    /// Clients of the `vitals` topic connected now.
    pub fn vitals_clients(&self) -> usize {
        *self.vitals_wanted.borrow()
    }

    /// Whether this process holds a subscription to agents' heartbeats
    /// now (only while a client of the `vitals` topic is connected).
    pub fn vitals_subscribed(&self) -> bool {
        self.vitals_subscribed.load(Ordering::SeqCst)
    }

    /// A receiver of every event published from now on (server-side
    /// waiters; SSE clients go through the stream handler).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// The id of the last event published (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst).saturating_sub(1)
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// Times a client fell more than [`CLIENT_BUFFER`] events behind and
    /// was told to refetch, since start.
    pub fn fell_behind(&self) -> u64 {
        self.fell_behind.load(Ordering::SeqCst)
    }

    /// How late agents' progress messages reached this process, from the
    /// agent's `ts_ms` to their publication here (the bus's share of the
    /// live path; a client's share comes after). Sums the agents' clock
    /// offsets in: a figure for a fleet whose clocks are synchronised.
    pub fn progress_lag(&self) -> Histogram {
        self.progress_lag.clone()
    }

    /// How long job progress events wait, once published here, until a
    /// client's stream hands them to its connection (one observation per
    /// client and event, live events only): the web role's fan-out share
    /// of the live path, from which the network and the browser remain.
    pub fn send_lag(&self) -> Histogram {
        self.send_lag.clone()
    }

    /// Events held for resumption (at most [`RING`]); with the broadcast's
    /// fixed capacity, this is all the memory events take, whatever the
    /// number or speed of clients.
    pub fn retained(&self) -> usize {
        self.ring.lock().map_or(0, |r| r.len())
    }

    /// Ends every stream (shutdown).
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

/// Counts a client for as long as its stream lives.
struct ClientGuard(Arc<Shared>);
type Shared = crate::state::Shared;

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.events.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a client of the `vitals` topic for as long as its stream lives.
struct VitalsGuard(Arc<Shared>);

impl VitalsGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.events.vitals_wanted.send_modify(|n| *n += 1);
        Self(shared)
    }
}

impl Drop for VitalsGuard {
    fn drop(&mut self) {
        self.0
            .events
            .vitals_wanted
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Turns a bus message into `(event name, data)`, or `None` to skip it.
pub fn translate(subject: &str, payload: &[u8]) -> Option<(&'static str, Value)> {
    let body: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let fields = |extra: Value| -> Value {
        let mut map = match body.clone() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        map.remove("v");
        if let Value::Object(e) = extra {
            map.extend(e);
        }
        Value::Object(map)
    };
    if let Some(s) = AgentSubject::parse(subject) {
        let host = s.host.to_string();
        return match s.topic {
            AgentTopic::Heartbeat => {
                Some(("host", fields(json!({"type": "vitals", "host_id": host}))))
            }
            AgentTopic::Job(job, JobTopic::Progress) => Some((
                "job",
                fields(json!({"type": "progress", "job_id": job.to_string(), "host_id": host})),
            )),
            AgentTopic::Job(job, JobTopic::Log) => Some((
                "job",
                fields(json!({"type": "log", "job_id": job.to_string(), "host_id": host})),
            )),
            // started/done are the control plane's to commit; their
            // rm.evt.job.* events follow
            _ => None,
        };
    }
    let rest = subject.strip_prefix("rm.evt.")?;
    let (thing, what) = rest.split_once('.')?;
    let name = match thing {
        "host" => "host",
        "job" => "job",
        "alert" => "alert",
        "channels" => "channels",
        "schedule" => "schedule",
        "repo" => "repo",
        _ => return None,
    };
    let mut data = json!({"type": what});
    if let Value::Object(m) = &mut data {
        if let Some(h) = body.get("host").filter(|v| !v.is_null()) {
            m.insert("host_id".into(), h.clone());
        }
        if let Some(j) = body.get("job").filter(|v| !v.is_null()) {
            m.insert("job_id".into(), j.clone());
        }
        if let Some(r) = body.get("repo").filter(|v| !v.is_null()) {
            m.insert("repo_id".into(), r.clone());
        }
        if let Some(id) = body.get("id").filter(|v| !v.is_null()) {
            let key = if name == "alert" { "alert_id" } else { "id" };
            m.insert(key.into(), id.clone());
        }
        if let Some(ts) = body.get("ts_ms") {
            m.insert("ts_ms".into(), ts.clone());
        }
    }
    Some((name, data))
}

/// Feeds the hub from the bus, and the `vitals` channel while anyone
/// wants it ([`pump_vitals`]), until the process ends.
pub async fn pump(state: AppState) {
    tokio::join!(pump_events(state.clone()), pump_vitals(state));
}

/// Subscribes once and feeds the hub until the subscription ends (it is
/// re-made while the process runs: a broken subscription is logged and
/// retried).
async fn pump_events(state: AppState) {
    loop {
        let subjects = [
            rm_bus::subject::agent_any_job(JobTopic::Progress),
            rm_bus::subject::agent_any_job(JobTopic::Log),
            rm_bus::subject::evt_all(),
        ];
        let mut subs = Vec::new();
        for s in &subjects {
            match state.live_bus.subscribe(s.clone()).await {
                Ok(sub) => subs.push(sub),
                Err(e) => tracing::warn!(subject = %s, error = %e, "event subscription failed"),
            }
        }
        if subs.len() == subjects.len() {
            let mut all = futures_util::stream::select_all(subs);
            while let Some(msg) = all.next().await {
                if let Some((name, data)) = translate(msg.subject.as_str(), &msg.payload) {
                    state.events.publish(name, data);
                }
            }
            tracing::warn!("event subscriptions ended; subscribing again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Agents' heartbeats to the clients of the `vitals` topic: subscribed
/// while at least one is connected, unsubscribed when the last one goes
/// (at 100,000 hosts that is 6,700 messages a second this process would
/// otherwise receive and parse for nobody).
pub async fn pump_vitals(state: AppState) {
    let mut wanted = state.events.vitals_wanted.subscribe();
    let subject = rm_bus::subject::agent_any(rm_bus::subject::AgentTopicKind::Heartbeat);
    loop {
        if wanted.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        let mut sub = match state.live_bus.subscribe(subject.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(subject = %subject, error = %e, "heartbeat subscription failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        state.events.vitals_subscribed.store(true, Ordering::SeqCst);
        let ended = loop {
            tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => {
                        if let Some((_, data)) = translate(msg.subject.as_str(), &msg.payload) {
                            state.events.publish_vitals(data);
                        }
                    }
                    None => break true,
                },
                _ = wanted.wait_for(|n| *n == 0) => break false,
            }
        };
        // dropping the subscription unsubscribes
        drop(sub);
        state
            .events
            .vitals_subscribed
            .store(false, Ordering::SeqCst);
        if ended {
            tracing::warn!("heartbeat subscription ended; subscribing again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct EventQuery {
    pub topics: Option<String>,
    /// Only this host's events (and those about no host): [`Scope::Host`].
    pub host: Option<String>,
    /// Only this job's events: [`Scope::Job`].
    pub job: Option<String>,
    /// Only this repository's events and its jobs': [`Scope::Repo`].
    pub repo: Option<String>,
    /// Job progress and log lines of these hosts only (comma-separated;
    /// empty: none): [`OutputOf`].
    pub progress: Option<String>,
    /// The last event id the client has seen, as `Last-Event-ID` (which
    /// wins when both are sent): a page's first connection sends the id
    /// it was rendered at.
    pub since: Option<u64>,
}

tokio::task_local! {
    /// The last event id published when this request arrived.
    static RENDERED_AT: u64;
}

/// The last event id published when the request being served arrived
/// (`None` outside a request, e.g. in unit tests): what a page renders
/// into `data-event-id`. Taken before the handler reads the database, so
/// every later event is one the page may not show yet.
pub fn rendered_at() -> Option<u64> {
    RENDERED_AT.try_with(|id| *id).ok()
}

/// Middleware: records the hub's last event id for [`rendered_at`].
pub async fn mark_render(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let last = state.events.last_id();
    RENDERED_AT.scope(last, next.run(req)).await
}

fn sse_event(e: &LiveEvent) -> Event {
    let event = Event::default().event(e.name.clone()).data(e.data.clone());
    // vitals have no id: the client's Last-Event-ID stays at the last
    // event it can resume from
    if e.id == 0 {
        event
    } else {
        event.id(e.id.to_string())
    }
}

/// The next heartbeat event for a client of the `vitals` topic; never,
/// for others.
async fn next_vitals(
    rx: &mut Option<broadcast::Receiver<Arc<LiveEvent>>>,
) -> Result<Arc<LiveEvent>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `refetch`: events were missed, reload what the page shows.
fn refetch_event() -> Event {
    Event::default().event("refetch").data("{}")
}

/// `GET /api/v1/events`.
pub(crate) async fn stream(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let mut names: Vec<&'static str> = Vec::new();
    let mut vitals = false;
    match q.topics.as_deref().filter(|t| !t.trim().is_empty()) {
        None => names.extend(TOPICS.iter().map(|(_, n)| *n)),
        Some(list) => {
            for t in list.split(',').map(str::trim) {
                if t == VITALS_TOPIC {
                    vitals = true;
                    continue;
                }
                let Some((_, name)) = TOPICS.iter().find(|(topic, _)| *topic == t) else {
                    return Err(ApiError::invalid(
                        "topics",
                        format!(
                            "unknown topic {t:?}; known: hosts, jobs, alerts, channels, schedules, repos, vitals"
                        ),
                    ));
                };
                names.push(name);
            }
        }
    }
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let scope = match (given(q.host), given(q.job), given(q.repo)) {
        (None, None, None) => Scope::Fleet,
        (Some(h), None, None) => Scope::Host(h),
        (None, Some(j), None) => Scope::Job(j),
        (None, None, Some(r)) => Scope::Repo(r),
        (_, _, repo) => {
            return Err(ApiError::invalid(
                if repo.is_some() { "repo" } else { "job" },
                "ask for one host's, one job's or one repository's events, not several",
            ));
        }
    };
    let output = OutputOf::parse(q.progress.as_deref())?;
    let last_id: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(q.since);
    let hub = &state.events;
    // subscribe before reading the ring, so nothing falls in between
    let rx = hub.tx.subscribe();
    let vitals = vitals.then(|| (hub.vitals_tx.subscribe(), VitalsGuard::new(state.shared())));
    let mut backlog: Vec<Arc<LiveEvent>> = Vec::new();
    let mut refetch = false;
    if let Some(last) = last_id {
        let ring = hub
            .ring
            .lock()
            .map_err(|_| ApiError::internal("event ring poisoned"))?;
        let next = hub.next_id.load(Ordering::SeqCst);
        let oldest = ring.front().map_or(next, |e| e.id);
        if last >= next {
            // an id this process never gave out: it was restarted since
            refetch = true;
        } else {
            if last + 1 < oldest {
                refetch = true;
            }
            backlog.extend(ring.iter().filter(|e| e.id > last).cloned());
        }
    }
    // live events up to here were replayed (or are older than the client)
    let replayed_up_to = backlog
        .last()
        .map_or(last_id.filter(|_| !refetch).unwrap_or(0), |e| e.id);
    hub.clients.fetch_add(1, Ordering::SeqCst);
    let guard = ClientGuard(state.shared());
    let role = who.role;
    let names = Arc::new(names);
    let scope = Arc::new(scope);
    let wanted = {
        let names = names.clone();
        let scope = scope.clone();
        move |e: &LiveEvent| {
            e.min_role <= role
                && names.iter().any(|n| *n == e.name)
                && scope.holds(e)
                && output.holds(e)
        }
    };
    let head = futures_util::stream::iter(
        refetch
            .then(|| Ok::<_, Infallible>(refetch_event()))
            .into_iter()
            .chain(
                backlog
                    .into_iter()
                    .filter(|e| wanted(e))
                    .map(|e| Ok(sse_event(&e)))
                    .collect::<Vec<_>>(),
            ),
    );
    let mut closed = hub.closed.subscribe();
    let (vitals_rx, vitals_guard) = vitals.unzip();
    let live = futures_util::stream::unfold(
        (rx, vitals_rx, (guard, vitals_guard), wanted),
        move |(mut rx, mut vitals_rx, guards, wanted)| {
            let scope = scope.clone();
            async move {
                loop {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Ok(e) if e.id <= replayed_up_to => continue,
                            Ok(e) if wanted(&e) => {
                                if let Some(at) = e.progress_at {
                                    guards.0.0.events.send_lag.observe(at.elapsed().as_secs_f64());
                                }
                                let event = Ok::<_, Infallible>(sse_event(&e));
                                return Some((event, (rx, vitals_rx, guards, wanted)));
                            }
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                // what it missed is gone: it reloads what it
                                // shows and goes on from the newest event, on
                                // the same connection
                                guards.0.0.events.fell_behind.fetch_add(1, Ordering::SeqCst);
                                tracing::info!(missed = n, "an event client fell behind: told to refetch");
                                rx = rx.resubscribe();
                                let event = Ok::<_, Infallible>(refetch_event());
                                return Some((event, (rx, vitals_rx, guards, wanted)));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        r = next_vitals(&mut vitals_rx) => match r {
                            Ok(e) if e.min_role <= role && scope.holds(&e) => {
                                let event = Ok::<_, Infallible>(sse_event(&e));
                                return Some((event, (rx, vitals_rx, guards, wanted)));
                            }
                            Ok(_) => continue,
                            // each heartbeat supersedes the host's last: skip
                            // to the newest rather than drop the client
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    }
                }
            }
        },
    );
    let ended = async move {
        let _ = closed.wait_for(|c| *c).await;
    };
    let body: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(head.chain(live).take_until(ended));
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_events_time_their_way_from_the_agent_and_other_events_do_not() {
        let hub = Hub::default();
        let now = crate::ui::fmt::now_ms();
        hub.publish(
            "job",
            json!({"type": "progress", "job_id": "j1", "ts_ms": now - 2_000}),
        );
        // an agent's clock ahead of ours: no lag, not a negative one
        hub.publish(
            "job",
            json!({"type": "progress", "job_id": "j1", "ts_ms": now + 60_000}),
        );
        hub.publish(
            "job",
            json!({"type": "finished", "job_id": "j1", "ts_ms": now - 9_000}),
        );
        hub.publish(
            "host",
            json!({"type": "online", "host_id": "h1", "ts_ms": now - 9_000}),
        );
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("lag", "", hub.progress_lag());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(value("lag_count "), 2.0, "{text}");
        let sum = value("lag_sum ");
        assert!(
            (2.0..2.5).contains(&sum),
            "2 s late and 0 s late sum to about 2 s: {text}"
        );
        // the one on time is in the lowest bucket, the late one in neither
        assert_eq!(value("lag_bucket{le=\"0.001\"} "), 1.0, "{text}");
        assert_eq!(hub.last_id(), 4, "every event is published");
    }

    #[test]
    fn bus_messages_become_named_events() {
        let (name, data) = translate(
            "rm.agent.h1.job.j1.progress",
            br#"{"v":1,"ts_ms":5,"elapsed_ms":9,"percent_done":0.5}"#,
        )
        .unwrap();
        assert_eq!(name, "job");
        assert_eq!(data["type"], "progress");
        assert_eq!(data["job_id"], "j1");
        assert_eq!(data["host_id"], "h1");
        assert_eq!(data["percent_done"], 0.5);
        assert!(data.get("v").is_none());
        let (name, data) = translate(
            "rm.evt.alert.raised",
            br#"{"v":1,"ts_ms":1,"host":"h1","id":"a1"}"#,
        )
        .unwrap();
        assert_eq!(name, "alert");
        assert_eq!(data["alert_id"], "a1");
        assert_eq!(data["host_id"], "h1");
        // a job event names its repository; a repository's event is about its id
        let (name, data) = translate(
            "rm.evt.job.finished",
            br#"{"v":1,"ts_ms":1,"host":"h1","job":"j1","id":null,"repo":"r1"}"#,
        )
        .unwrap();
        assert_eq!((name, &data["repo_id"]), ("job", &json!("r1")));
        let hub = Hub::default();
        hub.publish(name, data);
        hub.publish("repo", json!({"type": "changed", "id": "r2"}));
        let held: Vec<Option<String>> = hub
            .ring
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.repo_id.clone())
            .collect();
        assert_eq!(held, [Some("r1".to_owned()), Some("r2".to_owned())]);
        assert!(translate("rm.agent.h1.job.j1.done", b"{}").is_none());
        assert!(translate("rm.svc.controlplane.ls", b"{}").is_none());
    }
}
