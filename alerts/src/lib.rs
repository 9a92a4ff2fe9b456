//! The alerts role: the one writer of alerts, host mutes, notification
//! channels and the delivery outbox and log.
//!
//! - `rules`: the rule engine. It evaluates from SQLite — a saved cursor
//!   over finished jobs, current host state, enabled schedules — so `rm.evt.*`
//!   events only wake it: a lost event delays an alert by at most one tick.
//!   One ticker runs stale-schedule detection and the auto-resolution sweep.
//! - `anomaly`: the `backup_anomaly` judgement (median and MAD over the
//!   host's earlier backups), pure; `rules` applies it.
//! - `change`: every raise / acknowledge / resolve writes one outbox row per
//!   enabled channel in the same transaction, and is published as
//!   `rm.evt.alert.*` after commit.
//! - `outbox`: the sender loop: each row is a request to the notifier queue
//!   group with the channel sealed to the notifier role's xkey; no
//!   responder, a timeout or a retryable outcome means a retry with backoff
//!   and the same `webhook-id`; every attempt goes to the delivery log.
//! - `channels`, `svc`: the services on `rm.svc.alerts.<verb>` ([`api`]).
//! - `retention`: purges finished deliveries (and their log) after
//!   [`Timings::delivery_retention`]; the owner purges its own tables.
//! - `metrics`: passes, deliveries suppressed (by reason), the writer
//!   task's batches and the store's commits.
//!
//! Every write goes through the role's writer task (`rm_store::writer`):
//! one transaction per batch of whatever is queued, on the store's one
//! write connection; operators' actions in its first lane
//! (`Ctx::write_first`), rule passes, delivery claims and attempt
//! records and retention in the ordinary lane. Reads use the store's
//! read-only pool.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::Client;
use futures_util::StreamExt;
use nkeys::XKey;
use rm_bus::clock::SharedClock;
use rm_bus::connect::{ConnectSpec, connect};
use rm_bus::msg::{EventMsg, PROTOCOL_VERSION, encode};
use rm_bus::reqack::RetryPolicy;
use rm_bus::subject::{self, Event as Evt};
use rm_store::Store;
use rm_store::secrets::MasterKey;
use tokio::sync::Notify;

pub mod anomaly;
pub mod api;
mod change;
mod channels;
mod group;
mod metrics;
mod outbox;
mod retention;
mod rules;
mod svc;

/// Every interval and limit; tests shorten them.
#[derive(Debug, Clone)]
pub struct Timings {
    /// The ticker: stale-schedule detection, the auto-resolution sweep and
    /// the `last_seen_at` bump of confirmed alerts.
    pub tick: Duration,
    /// How far behind its saved watermark the job cursor looks again, for
    /// results committed out of timestamp order (evaluation is idempotent).
    pub cursor_overlap: Duration,
    /// A pass woken by an event reads job results and host status changes
    /// back only this far before the last completed pass (still within
    /// the overlap); a ticker pass reads the whole overlap. Re-reading
    /// five minutes of a 50,000-host fleet at every event was 1–3 s a
    /// pass and the role's CPU (docs/benchmarks.md, stop 30); something
    /// committed later than this after its time stamp waits for the tick.
    pub event_lookback: Duration,
    /// Delivery requests: `attempt_timeout` is how long one request waits
    /// for the notifier's reply (longer than the notifier's own HTTP timeout
    /// plus its queue wait); the backoff fields space retries; `deadline`
    /// is the age after which a delivery is given up.
    pub deliver: RetryPolicy,
    /// After an event wakes the rule engine, how long it waits for more
    /// before its pass, so a burst of results is evaluated at once.
    pub wake_debounce: Duration,
    /// Longest sleep of the sender loop between looks at the outbox.
    pub outbox_poll: Duration,
    /// Deliveries in flight at once.
    pub max_in_flight: usize,
    /// How long finished deliveries (and their attempt log) are kept.
    pub delivery_retention: Duration,
    /// How often old deliveries are purged.
    pub retention_every: Duration,
    /// Most writes in one transaction of the writer task ...
    pub write_batch: usize,
    /// ... and most waiting for it.
    pub writer_queue: usize,
    /// Service requests handled at once.
    pub svc_concurrency: usize,
    /// How long a host stays offline before `agent_offline` is raised. A
    /// host back sooner raises nothing: a bus node restarted, a network
    /// blip or a reboot marks thousands of hosts offline for a minute or
    /// two, and an alert per host for each would bury the ones that stay.
    pub offline_grace: Duration,
    /// This many changes (or more) of one kind due to one channel at once
    /// go as one grouped notification; below 2, never grouped
    /// (`group.rs`).
    pub notify_group_from: usize,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(60),
            cursor_overlap: Duration::from_secs(300),
            event_lookback: Duration::from_secs(60),
            deliver: RetryPolicy {
                attempt_timeout: Duration::from_secs(10),
                deadline: Some(Duration::from_secs(24 * 3600)),
                initial_backoff: Duration::from_secs(5),
                max_backoff: Duration::from_secs(300),
                jitter: 0.2,
            },
            wake_debounce: Duration::from_millis(250),
            outbox_poll: Duration::from_secs(1),
            max_in_flight: 32,
            delivery_retention: Duration::from_secs(30 * 24 * 3600),
            retention_every: Duration::from_secs(3600),
            write_batch: 256,
            writer_queue: 1024,
            svc_concurrency: 64,
            offline_grace: Duration::from_secs(180),
            notify_group_from: 5,
        }
    }
}

/// How to run the alerts role.
#[derive(Debug, Clone)]
pub struct Config {
    /// Master key (shared with the control plane), the alerts role's xkey
    /// seed (`alerts.xk`), and the database by default.
    pub data_dir: PathBuf,
    /// The SQLite file (default `<data_dir>/restic-manager.db`).
    pub db_path: Option<PathBuf>,
    /// The bus connection (the alerts role's credentials).
    pub connect: ConnectSpec,
    /// The notifier role's public xkey: channels are sealed to it.
    pub notifier_xkey: String,
    /// The UI's base URL: alerts link to `<base>/alerts/<id>`.
    pub ui_base_url: Option<String>,
    pub timings: Timings,
    /// Thresholds of the `backup_anomaly` rule.
    pub anomaly: anomaly::AnomalyConfig,
    pub clock: SharedClock,
}

/// `d` in milliseconds, as the store's times are.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// State shared by the role's tasks.
pub(crate) struct Ctx {
    pub store: Store,
    pub client: Client,
    pub master: MasterKey,
    /// The alerts role's xkey: secrets sent to it are sealed to it; it
    /// seals channels to the notifier.
    pub xkey: XKey,
    pub notifier_xkey: String,
    pub ui_base_url: Option<String>,
    pub clock: SharedClock,
    pub t: Timings,
    pub anomaly: anomaly::AnomalyConfig,
    /// Wakes the rule engine (an event arrived).
    pub wake: Notify,
    /// Wakes the sender loop (outbox rows were written).
    pub outbox_wake: Notify,
    /// The role's writer task.
    pub writer: rm_store::writer::Writer,
    pub metrics: metrics::Metrics,
    /// The job keys the last completed pass saw, with their signature
    /// (`mark`, `results`): an event-woken pass skips a key whose results
    /// did not change since (see `rules::plan`).
    pub judged: std::sync::Mutex<rules::Judged>,
    /// The hosts the last completed pass saw, with their status and
    /// change time: an event-woken pass skips a host whose status did not
    /// change since.
    pub hosts_judged: std::sync::Mutex<rules::HostsJudged>,
    /// Per host and repository, the newest backup the `backup_anomaly`
    /// rule judged in the last completed pass: later passes judge only
    /// backups after it (see `rules::eval_anomaly`).
    pub anomaly_judged: std::sync::Mutex<rules::AnomalyJudged>,
    /// When the last completed pass began (its clock time): a pass woken
    /// by an event reads back `Timings::event_lookback` before it.
    pub last_pass: std::sync::Mutex<Option<i64>>,
}

impl Ctx {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// An operator's write (a service request): `f` runs in the writer
    /// task's first lane, ahead of pending rule-engine and delivery writes,
    /// in its own savepoint (an error rolls back only its changes). Its
    /// result after commit. `f` must not queue another write (it would
    /// wait for itself).
    pub(crate) async fn write_first<R, F>(&self, f: F) -> svc::Outcome<R>
    where
        F: for<'c> FnOnce(
                &'c mut rm_store::Conn,
            ) -> rm_store::writer::WriteFuture<'c, R, svc::Fail>
            + Send
            + 'static,
        R: Send + 'static,
    {
        self.writer.run_first(f).await
    }

    /// Publishes an alert event; call only after its write committed.
    pub async fn event(&self, e: Evt, host: &str, alert_id: &str) {
        let msg = EventMsg {
            v: PROTOCOL_VERSION,
            ts_ms: self.now(),
            host: rm_bus::HostId::parse(host).ok(),
            job: None,
            id: Some(alert_id.to_owned()),
            repo: None,
        };
        if let Err(err) = self.client.publish(e.subject(), encode(&msg)).await {
            tracing::warn!(event = %e.subject(), error = %err, "event not published");
        }
    }
}

impl Ctx {
    /// Tells live pages a host's mutes changed; call after commit.
    pub async fn mutes_changed(&self, host: &str) {
        let msg = EventMsg {
            v: PROTOCOL_VERSION,
            ts_ms: self.now(),
            host: rm_bus::HostId::parse(host).ok(),
            job: None,
            id: None,
            repo: None,
        };
        let e = Evt::AlertMutes;
        if let Err(err) = self.client.publish(e.subject(), encode(&msg)).await {
            tracing::warn!(event = %e.subject(), error = %err, "event not published");
        }
    }
}

/// Events that can change what the rules see (job results, host status,
/// schedules). Vitals, progress and our own alert events do not.
fn wakes_rules(subject: &str) -> bool {
    matches!(
        Evt::parse(subject),
        Some(
            Evt::JobFinished
                | Evt::HostOnline
                | Evt::HostOffline
                | Evt::HostChanged
                | Evt::ScheduleChanged
        )
    )
}

/// The alerts role's xkey seed in its data dir, created at first start.
/// Deliveries are sealed by this key; notifiers trust only it.
pub const XKEY_FILE: &str = "alerts.xk";

/// Runs the alerts role until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    XKey::from_public_key(&config.notifier_xkey).map_err(|e| {
        anyhow::anyhow!(
            "the notifier xkey {:?} is not a public xkey: {e}",
            config.notifier_xkey
        )
    })?;
    let db = config
        .db_path
        .clone()
        .unwrap_or_else(|| config.data_dir.join("restic-manager.db"));
    let store = Store::open_shared(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let master = MasterKey::load_or_create(&config.data_dir)?;
    let xkey = rm_bus::seal::load_or_create_xkey(&config.data_dir.join(XKEY_FILE))?;
    // Its connection events are logged by `connect`; nobody reads them.
    let (client, _) = connect(&config.connect).await?;

    let writer = rm_store::writer::Writer::spawn(
        store.clone(),
        config.timings.write_batch,
        config.timings.writer_queue,
    );
    let ctx = std::sync::Arc::new(Ctx {
        writer,
        metrics: metrics::Metrics::default(),
        store,
        client,
        master,
        xkey,
        notifier_xkey: config.notifier_xkey.clone(),
        ui_base_url: config.ui_base_url.clone(),
        clock: config.clock.clone(),
        t: config.timings.clone(),
        anomaly: config.anomaly.clone(),
        wake: Notify::new(),
        outbox_wake: Notify::new(),
        judged: Default::default(),
        hosts_judged: Default::default(),
        anomaly_judged: Default::default(),
        last_pass: Default::default(),
    });

    let mut events = ctx
        .client
        .subscribe(subject::evt_all())
        .await
        .context("subscribing to events")?;
    let svc_sub = ctx
        .client
        .subscribe(subject::svc_all_of(subject::SvcRole::Alerts))
        .await
        .context("subscribing to the alerts services")?;
    ctx.client
        .flush()
        .await
        .context("confirming the subscriptions with the bus")?;

    let waker = {
        let ctx = ctx.clone();
        async move {
            while let Some(msg) = events.next().await {
                if wakes_rules(msg.subject.as_str()) {
                    ctx.wake.notify_one();
                }
            }
            anyhow::bail!("the event subscription ended")
        }
    };

    tracing::info!(
        db = %db.display(),
        xkey = %ctx.xkey.public_key(),
        notifier_xkey = %ctx.notifier_xkey,
        tick_ms = u64::try_from(ctx.t.tick.as_millis()).unwrap_or(u64::MAX),
        "alerts role running"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sender = tokio::spawn(outbox::serve(ctx.clone(), stop_rx));
    let result = tokio::select! {
        r = svc::serve(ctx.clone(), svc_sub) => r.context("service handler stopped"),
        r = rules::serve(ctx.clone()) => r.context("rule engine stopped"),
        () = retention::serve(ctx.clone()) => Ok(()),
        r = &mut sender => match r {
            Ok(r) => r.context("delivery sender stopped"),
            Err(e) => Err(anyhow::anyhow!("delivery sender panicked: {e}")),
        },
        r = waker => r,
        // a newer build of another role migrated the database: stop
        e = ctx.store.schema_overtaken(ctx.t.tick) => Err(e.into()),
        () = shutdown => {
            tracing::info!("alerts role shutting down");
            Ok(())
        }
    };
    // Let deliveries in flight finish and be logged (each is bounded by
    // the request timeout).
    let _ = stop_tx.send(true);
    let grace = ctx.t.deliver.attempt_timeout + Duration::from_secs(2);
    if !sender.is_finished() && tokio::time::timeout(grace, &mut sender).await.is_err() {
        tracing::warn!("deliveries still in flight at shutdown; they are retried at next start");
        sender.abort();
    }
    // every write already queued is applied (and its caller answered)
    ctx.writer.shutdown().await;
    let _ = ctx.client.flush().await;
    ctx.store.close_shared().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_change_rule_inputs_wake_the_engine() {
        for e in [
            Evt::JobFinished,
            Evt::HostOnline,
            Evt::HostOffline,
            Evt::HostChanged,
            Evt::ScheduleChanged,
        ] {
            assert!(wakes_rules(&e.subject()), "{e:?}");
        }
        for e in [
            Evt::HostVitals,
            Evt::JobStarted,
            Evt::AlertRaised,
            Evt::AlertResolved,
            Evt::ChannelsChanged,
        ] {
            assert!(!wakes_rules(&e.subject()), "{e:?}");
        }
        assert!(!wakes_rules("rm.evt.something.new"));
    }
}
