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
    let key = IdempotencyKey::new(rm_bus::ids::random_token(8));
    let subj = subject::svc(SvcRole::Controlplane, verb);
    let msg = request_with_retry(client, &subj, &key, encode(&req), &policy)
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
}

impl Churn {
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
            let t = Instant::now();
            let (req, _key) = api::HostAdd::new(format!("operator-added-{}-{n}", crate::now_ms()));
            match call::<_, api::SealedEnrollment>(&client, api::HOST_ADD, req).await {
                Ok(_) => {
                    let ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
                    churn.adds_ok.fetch_add(1, Ordering::Relaxed);
                    churn.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
                    churn.latency_max_ms.fetch_max(ms, Ordering::Relaxed);
                    churn.recent_max_ms.fetch_max(ms, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "operator host add failed");
                    churn.adds_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}
