//! `GET /metrics` in the Prometheus text format (`prometheus-client`).
//! Protected like the API: a bearer token (any role; make a viewer token
//! for the scraper) or a session. Fleet gauges are read from SQLite at
//! scrape time; HTTP request durations, SSE clients and bus counters come
//! from this process.
//!
//! - `rm_hosts{state}`, `rm_jobs{kind,status}`,
//!   `rm_last_backup_success_timestamp_seconds{host,repo}`,
//!   `rm_alerts_open{kind,severity}`, `rm_delivery_attempts{outcome}`;
//! - `rm_bus_connected`, `rm_bus_messages_in`, `rm_bus_messages_out`,
//!   `rm_bus_connects`;
//! - `rm_sse_clients`, `rm_sse_clients_fell_behind`, `rm_sse_events_published`;
//! - `rm_live_progress_lag_seconds` (histogram): how late agents' progress
//!   messages reach this process, from the agent's own `ts_ms` (the bus's
//!   share of the live path); `rm_sse_send_lag_seconds` (histogram): from
//!   a progress event's publication here to its hand-over to each
//!   client's connection (this process's fan-out share);
//! - `rm_http_request_duration_seconds{method,route,status}` (histogram);
//! - asked of the other roles over the bus at scrape time (their
//!   `metrics` verb, at most [`ROLE_WAIT`] each; a role that does not
//!   answer is `rm_role_up{role} 0` and its families are left out):
//!   `rm_controlplane_loop_errors{loop}`, `rm_controlplane_ingest_results`,
//!   `rm_controlplane_ingest_commits`, `rm_controlplane_ingest_commits_cut`,
//!   `rm_controlplane_ingest_commits_cut_by{cause}`,
//!   `rm_controlplane_write_batches_failed`,
//!   `rm_controlplane_hellos_waiting`, `rm_controlplane_hellos_expired`,
//!   `rm_controlplane_replies_refused`,
//!   `rm_alerts_suppressed{reason}` (deliveries not sent: host muted,
//!   maintenance window, never notified, channel disabled),
//!   `rm_alerts_pass_errors`, `rm_alerts_write_batches_failed`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

type Labels = Vec<(String, String)>;

/// How long a scrape waits for another role's counters.
pub const ROLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// This process's own instruments.
pub struct Http {
    durations: Family<Labels, Histogram>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        }
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

/// What a request being served has waited for, so far.
#[derive(Debug, Clone, Copy, Default)]
struct Waits {
    /// Other roles' answers over the bus, from sending to the answer read.
    bus: std::time::Duration,
    /// Of `bus`, the answering roles' own time, as their replies state it
    /// ([`rm_bus::msg::SVC_TOOK_HEADER`]; the control plane's today).
    owner: std::time::Duration,
}

tokio::task_local! {
    /// The request's [`Waits`] ([`crate::svc::call`] adds each call).
    static WAITS: std::cell::Cell<Waits>;
}

/// `took` more spent waiting for another role's answer over the bus, `owner`
/// of it in that role by its own reply's word, for the request being served
/// (nothing outside a request).
pub fn bus_wait(took: std::time::Duration, owner: Option<std::time::Duration>) {
    let _ = WAITS.try_with(|w| {
        let mut v = w.get();
        v.bus += took;
        // a reply claiming more than the whole wait counts as the wait
        v.owner += owner.unwrap_or_default().min(took);
        w.set(v);
    });
}

/// The `server-timing` value for a request whose handler took `took`, after
/// authentication took `auth` (when known), with `waits` inside the
/// handler: `app`, `auth`, `bus` and `owner` (the last two left out when
/// the request asked no other role).
fn server_timing(
    took: std::time::Duration,
    auth: Option<std::time::Duration>,
    waits: Waits,
) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let mut v = format!("app;dur={:.3}", ms(took));
    if let Some(a) = auth {
        v.push_str(&format!(", auth;dur={:.3}", ms(a)));
    }
    if !waits.bus.is_zero() {
        v.push_str(&format!(
            ", bus;dur={:.3}, owner;dur={:.3}",
            ms(waits.bus),
            ms(waits.owner)
        ));
    }
    v
}

/// Times one request of `route` (a route-table path).
pub async fn time(state: AppState, route: &'static str, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let auth = req.extensions().get::<crate::auth::AuthTook>().map(|a| a.0);
    let start = Instant::now();
    let (mut resp, waits) = WAITS
        .scope(std::cell::Cell::new(Waits::default()), async {
            let resp = next.run(req).await;
            (resp, WAITS.with(std::cell::Cell::get))
        })
        .await;
    let took = start.elapsed();
    // The handler's own time, for benchmarks and browser devtools
    // (`bench/fleet-ui` reads it); the authentication layer's before it;
    // and of the handler's, the wait for other roles' answers over the bus
    // and their own share of it by their word (`bench/web_adds.py`).
    if let Ok(v) = axum::http::HeaderValue::from_str(&server_timing(took, auth, waits)) {
        resp.headers_mut().insert("server-timing", v);
    }
    let labels = vec![
        ("method".to_owned(), method),
        ("route".to_owned(), route.to_owned()),
        ("status".to_owned(), resp.status().as_u16().to_string()),
    ];
    state
        .http
        .durations
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    resp
}

fn family(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).set(v);
    }
    registry.register(name, help, f);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    registry.register(name, help, g);
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `GET /metrics`.
pub(crate) async fn scrape(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Response, ApiError> {
    let mut conn = state.store.read().await?;
    let hosts = rm_store::stats::hosts_by_status(&mut conn).await?;
    let jobs = rm_store::stats::jobs_by_kind_and_status(&mut conn).await?;
    let backups = rm_store::stats::last_backup_success(&mut conn).await?;
    let alerts = rm_store::stats::open_alerts(&mut conn).await?;
    let deliveries = rm_store::stats::deliveries_by_outcome(&mut conn).await?;
    drop(conn);

    let mut r = Registry::default();
    family(
        &mut r,
        "rm_hosts",
        "Hosts by state",
        hosts
            .iter()
            .map(|(s, n)| (l(&[("state", s)]), *n))
            .collect(),
    );
    family(
        &mut r,
        "rm_jobs",
        "Jobs by kind and status",
        jobs.iter()
            .map(|(k, s, n)| (l(&[("kind", k), ("status", s)]), *n))
            .collect(),
    );
    family(
        &mut r,
        "rm_last_backup_success_timestamp_seconds",
        "When the last successful backup of a host to a repository finished",
        backups
            .iter()
            .map(|(h, repo, ms)| (l(&[("host", h), ("repo", repo)]), ms / 1000))
            .collect(),
    );
    family(
        &mut r,
        "rm_alerts_open",
        "Unresolved alerts by kind and severity",
        alerts
            .iter()
            .map(|(k, s, n)| (l(&[("kind", k), ("severity", s)]), *n))
            .collect(),
    );
    family(
        &mut r,
        "rm_delivery_attempts",
        "Notification delivery attempts by outcome",
        deliveries
            .iter()
            .map(|(o, n)| (l(&[("outcome", o)]), *n))
            .collect(),
    );
    gauge(
        &mut r,
        "rm_bus_connected",
        "1 while both bus connections (requests, live events) are up",
        i64::from(crate::health::bus_connected(&state)),
    );
    // both connections' counters summed (one where they are the same)
    let both: &[&async_nats::Client] = if same_connection(&state) {
        &[&state.bus]
    } else {
        &[&state.bus, &state.live_bus]
    };
    let sum = |f: fn(&async_nats::Statistics) -> u64| {
        let total: u64 = both.iter().map(|c| f(&c.statistics())).sum();
        i64::try_from(total).unwrap_or(i64::MAX)
    };
    gauge(
        &mut r,
        "rm_bus_messages_in",
        "Messages received from the bus",
        sum(|s| s.in_messages.load(Ordering::Relaxed)),
    );
    gauge(
        &mut r,
        "rm_bus_messages_out",
        "Messages sent to the bus",
        sum(|s| s.out_messages.load(Ordering::Relaxed)),
    );
    gauge(
        &mut r,
        "rm_bus_connects",
        "Bus connections made (reconnects included)",
        sum(|s| s.connects.load(Ordering::Relaxed)),
    );
    gauge(
        &mut r,
        "rm_sse_clients",
        "Event-stream clients connected",
        i64::try_from(state.events.clients()).unwrap_or(i64::MAX),
    );
    gauge(
        &mut r,
        "rm_sse_clients_fell_behind",
        "Times an event-stream client fell behind and was told to refetch",
        i64::try_from(state.events.fell_behind()).unwrap_or(i64::MAX),
    );
    gauge(
        &mut r,
        "rm_sse_events_published",
        "Live events this process published to its event-stream clients, since start",
        i64::try_from(state.events.last_id()).unwrap_or(i64::MAX),
    );
    r.register(
        "rm_live_progress_lag_seconds",
        "How late agents' progress messages reached this process, from the agent's own timestamp",
        state.events.progress_lag(),
    );
    r.register(
        "rm_sse_send_lag_seconds",
        "From a job progress event's publication on this process to its hand-over to an event-stream client's connection, per client",
        state.events.send_lag(),
    );
    roles(&mut r, &state, &who).await;
    r.register(
        "rm_http_request_duration_seconds",
        "HTTP request durations by method, route and status",
        state.http.durations.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &r).map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}

/// Are the requests' and the live events' connections one (tests and
/// embedding give the same client twice)?
fn same_connection(state: &AppState) -> bool {
    std::sync::Arc::ptr_eq(&state.bus.statistics(), &state.live_bus.statistics())
}

/// The control plane's and the alerts role's own counters, asked over the
/// bus (both at once, [`ROLE_WAIT`] each).
async fn roles(r: &mut Registry, state: &AppState, who: &Principal) {
    use rm_bus::subject::SvcRole;
    let wait = ROLE_WAIT.min(state.svc_timeout);
    let (cp, alerts) = tokio::join!(
        crate::svc::call::<_, rm_cp_api::Metrics>(
            &state.bus,
            SvcRole::Controlplane,
            rm_cp_api::METRICS,
            who.actor(),
            serde_json::json!({}),
            wait,
        ),
        crate::svc::call::<_, rm_alerts::api::Metrics>(
            &state.bus,
            SvcRole::Alerts,
            rm_alerts::api::METRICS,
            who.actor(),
            serde_json::json!({}),
            wait,
        ),
    );
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    family(
        r,
        "rm_role_up",
        "1 when the role answered this scrape's request for its counters",
        vec![
            (l(&[("role", "controlplane")]), i64::from(cp.is_ok())),
            (l(&[("role", "alerts")]), i64::from(alerts.is_ok())),
        ],
    );
    if let Ok(m) = cp {
        family(
            r,
            "rm_controlplane_loop_errors",
            "Errors each control-plane background loop logged and continued after",
            m.loop_errors
                .iter()
                .map(|(lp, v)| (l(&[("loop", lp)]), n(*v)))
                .collect(),
        );
        family(
            r,
            "rm_controlplane_ingest_commits_cut_by",
            "Transactions of job results ended after a part, by cause: an operator's write waiting, another role waiting for the shared connection, the parts' 2 s",
            vec![
                (l(&[("cause", "operator")]), n(m.ingest_cut_operator)),
                (l(&[("cause", "role")]), n(m.ingest_cut_role)),
                (l(&[("cause", "time")]), n(m.ingest_cut_time)),
            ],
        );
        for (name, help, v) in [
            (
                "rm_controlplane_ingest_results",
                "Job results committed and acknowledged since start",
                m.ingest_results,
            ),
            (
                "rm_controlplane_ingest_commits",
                "Transactions those results were committed in",
                m.ingest_commits,
            ),
            (
                "rm_controlplane_ingest_commits_cut",
                "Of those transactions, ended after a part for a waiting operator's write or their time",
                m.ingest_commits_cut,
            ),
            (
                "rm_controlplane_write_batches_failed",
                "Control-plane writer batches that did not commit",
                m.write_batches_failed,
            ),
            (
                "rm_controlplane_hellos_waiting",
                "Agent hellos waiting for a handler now (at most one per host)",
                m.hellos_waiting,
            ),
            (
                "rm_controlplane_hellos_expired",
                "Agent hellos dropped unanswered after waiting longer than their agent waits",
                m.hellos_expired,
            ),
            (
                "rm_controlplane_replies_refused",
                "Agent requests refused for a reply subject not their own",
                m.replies_refused,
            ),
            (
                "rm_controlplane_offline_sweep_behind_ms",
                "How much longer than the offline window the latest offline sweep waited because heartbeat delivery ran behind",
                m.offline_sweep_behind_ms,
            ),
            (
                "rm_controlplane_offline_sweep_held_by_node",
                "Hosts offline sweeps kept back, silent for the window but behind a bus node quiet at the time, since start (each sweep counts its own)",
                m.offline_sweep_held_by_node,
            ),
            (
                "rm_controlplane_offline_sweep_held_since_start",
                "Hosts offline sweeps kept back as not heard since the control plane connected, within four offline windows of that (each sweep counts its own)",
                m.offline_sweep_held_since_start,
            ),
        ] {
            gauge(r, name, help, n(v));
        }
    }
    if let Ok(m) = alerts {
        let s = m.suppressed;
        family(
            r,
            "rm_alerts_suppressed",
            "Deliveries not sent (one alert change to one channel), by reason, since start",
            vec![
                (l(&[("reason", "host_muted")]), n(s.host_muted)),
                (
                    l(&[("reason", "maintenance_window")]),
                    n(s.maintenance_window),
                ),
                (l(&[("reason", "never_notified")]), n(s.never_notified)),
                (l(&[("reason", "channel_disabled")]), n(s.channel_disabled)),
            ],
        );
        gauge(
            r,
            "rm_alerts_pass_errors",
            "Alert rule passes that failed (logged; the next one retries)",
            n(m.pass_errors),
        );
        gauge(
            r,
            "rm_alerts_write_batches_failed",
            "Alerts-role writer batches that did not commit",
            n(m.write_batches_failed),
        );
    }
}
