//! The operator side, over the bus as the web role forwards it: service
//! calls to the control plane, bulk enrollment (host add, then the agent's
//! own enrollment request with keys generated here: the same control-plane
//! code and the same minted JWT as an agent enrolling over HTTPS), and
//! operators adding hosts while the fleet runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use async_nats::Client;
use futures_util::StreamExt;
use nkeys::{KeyPair, XKey};
use rm_bus::creds::{Role, UserCreds};
use rm_bus::msg::{
    Actor, ActorVia, EnrollReply, EnrollRequest, PROTOCOL_VERSION, SvcReply, SvcRequest, decode,
    encode,
};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::subject::{self, SvcRole, Verb};
use rm_controlplane::api;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::ident::Identity;

/// Connects as the web role (the operator's side of the bus).
pub async fn connect(url: &str, creds: UserCreds) -> Result<Client> {
    let mut spec = rm_bus::connect::ConnectSpec::new(url, creds, &Role::Web);
    spec.name = "sim operator".into();
    let (client, _events) = rm_bus::connect::connect(&spec).await?;
    Ok(client)
}

/// Calls the control plane's `verb` as operator `sim`.
pub async fn call<B: Serialize, R: DeserializeOwned>(
    client: &Client,
    verb: Verb,
    body: B,
) -> Result<R> {
    let key = IdempotencyKey::new(rm_bus::ids::random_token(8));
    call_keyed(client, verb, body, &key).await
}

/// [`call`] with the idempotency key `key`, which the control plane's log
/// names beside a slow request's phases.
pub async fn call_keyed<B: Serialize, R: DeserializeOwned>(
    client: &Client,
    verb: Verb,
    body: B,
    key: &IdempotencyKey,
) -> Result<R> {
    let req = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "sim".into(),
            via: ActorVia::ApiToken,
            address: None,
        },
        body,
    };
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(20),
        deadline: Some(Duration::from_secs(60)),
        ..RetryPolicy::default()
    };
    let subj = subject::svc(SvcRole::Controlplane, verb);
    let msg = request_with_retry(client, &subj, key, encode(&req), &policy)
        .await
        .with_context(|| format!("{} not answered", verb.as_str()))?;
    let reply: SvcReply<R> = decode("svc reply", &msg.payload)?;
    match (reply.ok, reply.error) {
        (Some(v), None) => Ok(v),
        (_, Some(e)) => Err(anyhow!("{}: {}: {}", verb.as_str(), e.code, e.message)),
        (None, None) => Err(anyhow!("{}: empty reply", verb.as_str())),
    }
}

/// Adds host `name` and enrolls it with fresh keys; `cp_xkey` is the
/// control plane's public xkey (the `pubkey` verb).
pub async fn enroll_one(client: &Client, cp_xkey: &str, name: &str) -> Result<Identity> {
    let (req, key) = api::HostAdd::new(name);
    let sealed: api::SealedEnrollment = call(client, api::HOST_ADD, req).await?;
    let added = sealed
        .open(&key)
        .map_err(|e| anyhow!("host-add reply: {e}"))?;
    let nkey = KeyPair::new_user();
    let xkey = XKey::new();
    let enroll = EnrollRequest {
        v: PROTOCOL_VERSION,
        token: added.token.clone(),
        nkey: nkey.public_key(),
        xkey: xkey.public_key(),
        hostname: name.into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: format!("{}-sim", rm_agent::VERSION),
    };
    let sealed = api::SealedEnroll::seal(&enroll, cp_xkey).map_err(|e| anyhow!("seal: {e}"))?;
    let reply: EnrollReply = call(client, api::ENROLL, sealed).await?;
    Ok(Identity {
        host_id: reply.host_id,
        jwt: reply.jwt,
        seed: nkey.seed()?,
        xkey_seed: xkey.seed()?,
    })
}

/// Enrolls `count` hosts named `<prefix>-<i>`, `concurrency` at a time.
pub async fn enroll_bulk(
    client: &Client,
    prefix: &str,
    start: usize,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Identity>> {
    let key: api::PubKey = call(client, api::PUBKEY, serde_json::json!({})).await?;
    let cp_xkey = Arc::new(key.xkey);
    let results: Vec<Result<Identity>> = futures_util::stream::iter(start..start + count)
        .map(|i| {
            let (client, cp_xkey) = (client.clone(), cp_xkey.clone());
            let name = format!("{prefix}-{i:05}");
            async move { enroll_one(&client, &cp_xkey, &name).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// What operators adding hosts achieved.
#[derive(Debug, Default)]
pub struct Churn {
    pub adds_ok: AtomicU64,
    pub adds_failed: AtomicU64,
    /// Sum and max of the add latencies, milliseconds.
    pub latency_sum_ms: AtomicU64,
    pub latency_max_ms: AtomicU64,
    /// The max since the last [`Churn::snapshot`] (which resets it).
    pub recent_max_ms: AtomicU64,
    /// Every add: when it was sent (wall ms), how long it took (ms),
    /// whether it succeeded; the newest [`MAX_SAMPLES`] of them, for
    /// [`Churn::window`].
    samples: std::sync::Mutex<std::collections::VecDeque<AddSample>>,
}

/// One host add, as [`Churn::window`] reads it.
#[derive(Debug, Clone, Copy)]
struct AddSample {
    sent_ms: i64,
    took_ms: u64,
    ok: bool,
}

/// Adds kept for [`Churn::window`]: at 2 a second, about 14 hours.
const MAX_SAMPLES: usize = 100_000;

impl Churn {
    /// Records one add sent at `sent_ms` (wall clock) that took `took_ms`.
    pub fn record(&self, sent_ms: i64, took_ms: u64, ok: bool) {
        if ok {
            self.adds_ok.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_ms.fetch_add(took_ms, Ordering::Relaxed);
            self.latency_max_ms.fetch_max(took_ms, Ordering::Relaxed);
            self.recent_max_ms.fetch_max(took_ms, Ordering::Relaxed);
        } else {
            self.adds_failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.len() == MAX_SAMPLES {
            s.pop_front();
        }
        s.push_back(AddSample {
            sent_ms,
            took_ms,
            ok,
        });
    }

    /// The adds sent in `[from_ms, to_ms]` (wall clock) that have been
    /// answered: how many succeeded and failed, and the successful ones'
    /// mean, p50, p99 and max in milliseconds. An add still unanswered is
    /// not counted; ask again after its timeout for a window's last ones.
    pub fn window(&self, from_ms: i64, to_ms: i64) -> serde_json::Value {
        let s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inside = s.iter().filter(|a| (from_ms..=to_ms).contains(&a.sent_ms));
        let (mut ms, mut failed) = (Vec::new(), 0u64);
        for a in inside {
            if a.ok {
                ms.push(i64::try_from(a.took_ms).unwrap_or(i64::MAX));
            } else {
                failed += 1;
            }
        }
        ms.sort_unstable();
        let sum: i64 = ms.iter().sum();
        serde_json::json!({
            "host_adds_ok": ms.len(),
            "host_adds_failed": failed,
            "host_add_mean_ms": i64::try_from(ms.len()).ok().and_then(|n| sum.checked_div(n)),
            "host_add_p50_ms": crate::percentile(&ms, 50.0),
            "host_add_p99_ms": crate::percentile(&ms, 99.0),
            "host_add_max_ms": ms.last(),
        })
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let ok = self.adds_ok.load(Ordering::Relaxed);
        let sum = self.latency_sum_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "host_adds_ok": ok,
            "host_adds_failed": self.adds_failed.load(Ordering::Relaxed),
            "host_add_mean_ms": sum.checked_div(ok),
            "host_add_max_ms": self.latency_max_ms.load(Ordering::Relaxed),
            "host_add_sum_ms": sum,
            "host_add_max_since_last_ms": self.recent_max_ms.swap(0, Ordering::Relaxed),
        })
    }
}

/// An add taking this long or longer is logged with its key and send time.
const SLOW_ADD_MS: u64 = 500;

/// Adds a host `per_sec` times a second until `stop`, as operators would.
pub async fn churn(client: Client, per_sec: f64, churn: Arc<Churn>, stop: CancellationToken) {
    if per_sec <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let (client, churn) = (client.clone(), churn.clone());
        tokio::spawn(async move {
            let (t, sent_ms) = (Instant::now(), crate::now_ms());
            let (req, _key) = api::HostAdd::new(format!("operator-added-{sent_ms}-{n}"));
            let key = IdempotencyKey::new(rm_bus::ids::random_token(8));
            let res =
                call_keyed::<_, api::SealedEnrollment>(&client, api::HOST_ADD, req, &key).await;
            let ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
            if let Err(e) = &res {
                tracing::warn!(error = %format!("{e:#}"), key = key.as_str(), sent_ms, "operator host add failed");
            } else if ms >= SLOW_ADD_MS {
                // beside the control plane's "slow service request" (same key)
                tracing::warn!(
                    key = key.as_str(),
                    sent_ms,
                    took_ms = ms,
                    "slow operator host add"
                );
            }
            churn.record(sent_ms, ms, res.is_ok());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_only_the_adds_sent_inside_it_with_their_percentiles() {
        let c = Churn::default();
        c.record(999, 5_000, true); // before the window
        for i in 0..100 {
            c.record(1_000 + i, u64::try_from(i + 1).unwrap(), true);
        }
        c.record(1_050, 20_000, false);
        c.record(2_001, 9_000, true); // after it
        let w = c.window(1_000, 2_000);
        assert_eq!(w["host_adds_ok"], 100);
        assert_eq!(w["host_adds_failed"], 1);
        assert_eq!(w["host_add_p50_ms"], 50);
        assert_eq!(w["host_add_p99_ms"], 99);
        assert_eq!(w["host_add_max_ms"], 100);
        assert_eq!(w["host_add_mean_ms"], 50); // 5,050 / 100, rounded down
        // the whole-run counters take every add
        assert_eq!(c.adds_ok.load(Ordering::Relaxed), 102);
        assert_eq!(c.latency_max_ms.load(Ordering::Relaxed), 9_000);
        let empty = c.window(3_000, 4_000);
        assert_eq!(empty["host_adds_ok"], 0);
        assert!(empty["host_add_p99_ms"].is_null());
    }

    #[test]
    fn the_oldest_samples_give_way_past_the_cap() {
        let c = Churn::default();
        for i in 0..=i64::try_from(MAX_SAMPLES).unwrap() {
            c.record(i, 1, true);
        }
        assert_eq!(c.window(0, 0)["host_adds_ok"], 0);
        assert_eq!(c.window(1, i64::MAX)["host_adds_ok"], MAX_SAMPLES);
    }
}
