//! Live events: each web process subscribes to the bus once and fans the
//! events out to browsers over SSE (`GET /api/v1/events?topics=…`).
//!
//! - What is sent: `job` (queued / started / finished from the owning
//!   role's `rm.evt.job.*`, progress and log lines straight from the
//!   agents), `host` (online / offline / changed / vitals, schedule and
//!   repository changes), `alert` (raised / acknowledged / resolved, with
//!   the fleet's open-alert count). Every event's data is JSON with `what`
//!   and the ids it concerns; events only *tell* a page to update: pages
//!   re-read the committed state for anything but progress and log lines.
//! - Every role may see every topic (a viewer reads all of it in the UI).
//! - Fan-out is one bounded broadcast channel into a bounded buffer per
//!   client: a client whose buffer holds [`CLIENT_BUFFER`] unsent events
//!   is dropped (its browser reconnects and resumes or refetches), so one
//!   slow client never slows another and memory stays bounded.
//! - Each event has an id; a reconnecting client's `Last-Event-ID` resumes
//!   from a ring of the last [`RING`] events, or gets `refetch` when its
//!   position has left the ring.
//! - Comments every 15 s keep proxies from closing idle streams; stopping
//!   the hub (at shutdown) ends every stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use rm_bus::msg::{EventMsg, LogBatch, Progress, decode};
use rm_bus::subject::{self, AgentSubject, AgentTopic, JobTopic};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::AppState;

/// Events kept for `Last-Event-ID` resumption.
pub const RING: usize = 1024;
/// Events a client may fall behind before it is dropped.
pub const CLIENT_BUFFER: usize = 256;
/// Events the broadcast holds for the slowest client task.
const FANOUT: usize = 1024;
/// Most log lines forwarded in one event.
const LOG_LINES: usize = 200;

/// Which pages want an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Hosts,
    Jobs,
    Alerts,
}

impl Topic {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "hosts" => Some(Self::Hosts),
            "jobs" => Some(Self::Jobs),
            "alerts" => Some(Self::Alerts),
            _ => None,
        }
    }

    /// The SSE event name.
    fn name(self) -> &'static str {
        match self {
            Self::Hosts => "host",
            Self::Jobs => "job",
            Self::Alerts => "alert",
        }
    }
}

/// One event as sent.
#[derive(Debug)]
pub struct Live {
    pub id: u64,
    pub topic: Topic,
    pub data: String,
}

/// The fan-out point, shared by every request of one web process.
pub struct Hub {
    tx: broadcast::Sender<Arc<Live>>,
    ring: Mutex<VecDeque<Arc<Live>>>,
    next_id: AtomicU64,
    clients: AtomicUsize,
    dropped: AtomicU64,
    stop: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(FANOUT);
        Self {
            tx,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            next_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            stop: watch::channel(false).0,
        }
    }

    /// Sends `data` to every client subscribed to `topic`.
    pub fn publish(&self, topic: Topic, data: serde_json::Value) {
        let ev = {
            // The id is taken under the ring's lock so ring order is id order.
            let mut ring = self
                .ring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ev = Arc::new(Live {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                topic,
                data: data.to_string(),
            });
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(ev.clone());
            ev
        };
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Ends every stream (at shutdown).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Connected clients now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Clients dropped for falling behind, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events after `last` still in the ring, and whether `last` is so old
    /// that some were lost (the client must refetch).
    fn since(&self, last: u64) -> (Vec<Arc<Live>>, bool) {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let oldest = ring
            .front()
            .map_or(self.next_id.load(Ordering::Relaxed), |e| e.id);
        let gap = last + 1 < oldest;
        (ring.iter().filter(|e| e.id > last).cloned().collect(), gap)
    }
}

/// Converts bus messages to live events until the subscription ends.
pub async fn pump(state: AppState, bus: async_nats::Client) {
    let subs = async {
        let a = bus.subscribe(subject::agent_any_job_all()).await?;
        let e = bus.subscribe(subject::evt_all()).await?;
        Ok::<_, async_nats::SubscribeError>(futures_util::stream::select(a, e))
    };
    let mut messages = match subs.await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "live events: cannot subscribe; pages will not update live");
            return;
        }
    };
    while let Some(m) = messages.next().await {
        if let Some((topic, data)) = convert(&state, &m.subject, &m.payload).await {
            state.events.publish(topic, data);
        }
    }
}

async fn convert(
    state: &AppState,
    subject: &str,
    payload: &[u8],
) -> Option<(Topic, serde_json::Value)> {
    if let Some(s) = AgentSubject::parse(subject) {
        let AgentTopic::Job(job, topic) = s.topic else {
            return None;
        };
        return match topic {
            JobTopic::Progress => {
                let p: Progress = decode("progress", payload).ok()?;
                Some((
                    Topic::Jobs,
                    json!({"what": "progress", "job_id": job, "host_id": s.host, "progress": p}),
                ))
            }
            JobTopic::Log => {
                let b: LogBatch = decode("log", payload).ok()?;
                let lines: Vec<_> = b
                    .lines
                    .iter()
                    .take(LOG_LINES)
                    .map(|l| json!({"stream": l.stream, "text": l.text}))
                    .collect();
                Some((
                    Topic::Jobs,
                    json!({"what": "log", "job_id": job, "host_id": s.host, "seq": b.seq, "lines": lines}),
                ))
            }
            // Started and done are the control plane's to announce after commit.
            JobTopic::Started | JobTopic::Done => None,
        };
    }
    let ev = subject::Event::parse(subject)?;
    let msg: EventMsg = decode("event", payload).ok()?;
    let (thing, what) = ev.parts();
    let base = json!({"what": what, "host_id": msg.host, "job_id": msg.job, "id": msg.id, "ts_ms": msg.ts_ms});
    match thing {
        "job" => Some((Topic::Jobs, base)),
        "alert" => {
            let open = match state.store.read().await {
                Ok(mut c) => rm_store::fleet::open_alerts(&mut c).await.ok(),
                Err(_) => None,
            };
            let mut data = base;
            data["open_alerts"] = json!(open);
            Some((Topic::Alerts, data))
        }
        "host" | "schedule" | "repo" => {
            let mut data = base;
            data["thing"] = json!(thing);
            Some((Topic::Hosts, data))
        }
        _ => None,
    }
}

/// `?topics=hosts,jobs,alerts` (default: all).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventsQuery {
    pub topics: String,
}

/// Keeps the client count right however the stream ends.
struct ClientGuard(Arc<crate::state::Shared>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.events.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn event(ev: &Live) -> Event {
    Event::default()
        .id(ev.id.to_string())
        .event(ev.topic.name())
        .data(&ev.data)
}

fn refetch() -> Event {
    Event::default().event("refetch").data("{}")
}

/// `GET /api/v1/events`: the live stream.
pub async fn stream(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, crate::error::ApiError>
{
    let mut topics = Vec::new();
    for t in q.topics.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match Topic::parse(t) {
            Some(topic) => topics.push(topic),
            None => {
                return Err(crate::error::ApiError::invalid(
                    "topics",
                    format!("unknown topic {t:?}: hosts, jobs or alerts"),
                ));
            }
        }
    }
    if topics.is_empty() {
        topics = vec![Topic::Hosts, Topic::Jobs, Topic::Alerts];
    }
    let hub = &state.events;
    // Subscribe before reading the ring, so nothing falls between them.
    let mut rx = hub.tx.subscribe();
    let last: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let (replay, gap) = match last {
        Some(last) => hub.since(last),
        None => (Vec::new(), false),
    };
    let mut seen = replay.last().map_or(last.unwrap_or(0), |e| e.id);
    hub.clients.fetch_add(1, Ordering::Relaxed);
    let guard = ClientGuard(state.shared());
    let mut stop = hub.stop.subscribe();
    let stream = async_stream(move |tx| async move {
        let _guard = guard;
        if gap && !tx.send(refetch()).await {
            return;
        }
        for ev in replay.iter().filter(|e| topics.contains(&e.topic)) {
            if !tx.send(event(ev)).await {
                return;
            }
        }
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.id > seen && topics.contains(&ev.topic) {
                            seen = ev.id;
                            match tx.try_send(event(&ev)) {
                                Ok(()) => {}
                                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                                    _guard.0.events.dropped.fetch_add(1, Ordering::Relaxed);
                                    tracing::debug!("live events: a client fell behind and is dropped");
                                    return;
                                }
                                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        _guard.0.events.dropped.fetch_add(1, Ordering::Relaxed);
                        tx.send(refetch()).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = stopped(&mut stop) => return,
                () = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Completes when the hub is stopped.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The borrowed value is dropped here, before the caller's next await.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A tiny generator: `body` pushes items through the client's bounded
/// buffer; the stream ends when `body` returns and the buffer is drained.
fn async_stream<F, Fut>(body: F) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(Sender) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(body(Sender(tx)));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// The producing half of [`async_stream`]; the producer ends as soon as
/// the client has gone.
struct Sender(tokio::sync::mpsc::Sender<Event>);

impl Sender {
    /// False once the client has gone.
    async fn send(&self, e: Event) -> bool {
        self.0.send(e).await.is_ok()
    }

    /// Queues without waiting; a full buffer means the client is too slow.
    fn try_send(&self, e: Event) -> Result<(), tokio::sync::mpsc::error::TrySendError<Event>> {
        self.0.try_send(e)
    }

    async fn closed(&self) {
        self.0.closed().await;
    }
}
