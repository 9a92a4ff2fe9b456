//! What the benchmark observes on the bus beside the control plane, with
//! the web role's permissions: every heartbeat's lag (sent, by the clock
//! in the message, to received here), when each host was last heard, and
//! every `host.offline` event with when the host was last heard here
//! (a host the bus kept delivering but the control plane marked offline
//! was lost on the control plane's side). Given a sample of hosts it
//! subscribes to theirs alone: the lag of a spread sample, without a
//! second fleet-wide delivery loading the bus.

use std::sync::Mutex;

use async_nats::Client;
use futures_util::StreamExt;
use rm_bus::HostId;
use rm_bus::msg::{EventMsg, Heartbeat, decode};
use rm_bus::subject::{self, AgentTopicKind, Event};

use crate::now_ms;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Heartbeat lags since the last [`Observer::take_lags`], and every
/// offline event.
#[derive(Default)]
pub struct Observer {
    lags: Mutex<Vec<i64>>,
    offline: Mutex<Vec<(String, i64)>>,
    /// Per host: when its last heartbeat arrived here, and its send time.
    heard: Mutex<std::collections::HashMap<String, (i64, i64)>>,
    /// The same for each host of an offline event, as it was when the
    /// event came (the latest such event).
    heard_at_offline: Mutex<std::collections::HashMap<String, (i64, i64)>>,
}

impl Observer {
    /// Subscribes and records until the client closes: every host's
    /// heartbeats, or only `sample`'s.
    pub async fn run(
        self: std::sync::Arc<Self>,
        client: Client,
        sample: Option<Vec<HostId>>,
    ) -> anyhow::Result<()> {
        let mut beats = match sample {
            None => client
                .subscribe(subject::agent_any(AgentTopicKind::Heartbeat))
                .await?
                .boxed(),
            Some(hosts) => {
                let mut subs = Vec::with_capacity(hosts.len());
                for h in &hosts {
                    subs.push(client.subscribe(subject::agent_heartbeat(h)).await?);
                }
                futures_util::stream::select_all(subs).boxed()
            }
        };
        let mut offline = client.subscribe(Event::HostOffline.subject()).await?;
        client.flush().await?;
        loop {
            tokio::select! {
                Some(m) = beats.next() => {
                    if let Ok(hb) = decode::<Heartbeat>("heartbeat", &m.payload) {
                        let now = now_ms();
                        lock(&self.lags).push(now - hb.ts_ms);
                        // rm.agent.<host>.heartbeat; a host's key is
                        // allocated once, not per beat
                        if let Some(host) = m.subject.as_str().split('.').nth(2) {
                            let mut heard = lock(&self.heard);
                            match heard.get_mut(host) {
                                Some(e) => *e = (now, hb.ts_ms),
                                None => {
                                    heard.insert(host.to_owned(), (now, hb.ts_ms));
                                }
                            }
                        }
                    }
                }
                Some(m) = offline.next() => {
                    if let Ok(e) = decode::<EventMsg>("event", &m.payload)
                        && let Some(h) = e.host
                    {
                        let h = h.to_string();
                        if let Some(last) = lock(&self.heard).get(&h).copied() {
                            lock(&self.heard_at_offline).insert(h.clone(), last);
                        }
                        lock(&self.offline).push((h, now_ms()));
                    }
                }
                else => return Ok(()),
            }
        }
    }

    /// The heartbeat lags (ms) since the last call, sorted.
    pub fn take_lags(&self) -> Vec<i64> {
        let mut v = std::mem::take(&mut *lock(&self.lags));
        v.sort_unstable();
        v
    }

    /// Every offline event so far: host and when it arrived.
    pub fn offline_events(&self) -> Vec<(String, i64)> {
        lock(&self.offline).clone()
    }

    /// For each host of an offline event: when its last heartbeat before
    /// the event arrived here and when it was sent (ms since epoch), if
    /// one ever did.
    pub fn offline_heard(&self) -> serde_json::Value {
        let m: serde_json::Map<String, serde_json::Value> = lock(&self.heard_at_offline)
            .iter()
            .map(|(h, (r, s))| (h.clone(), serde_json::json!([r, s])))
            .collect();
        serde_json::Value::Object(m)
    }
}
