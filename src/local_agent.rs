//! `serve --local-agent`: this machine backs itself up too. At first start
//! the serve process adds a host for it and enrolls an agent exactly as an
//! endpoint does — keys generated locally, the one-time token sent over
//! HTTPS pinned to the web certificate — then runs that agent beside the
//! other roles. Its state lives in `<data-dir>/agent`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::Client;
use rm_agent::Settings;
use rm_agent::enroll::Fingerprint;
use rm_agent::state::StateDir;
use rm_bus::msg::{Actor, ActorVia, PROTOCOL_VERSION, SvcReply, SvcRequest, decode, encode};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::subject::{self, SvcRole};
use rm_controlplane::api;

/// What the local agent needs from the serve process.
pub struct Local<'a> {
    pub data_dir: &'a Path,
    pub name: &'a str,
    pub web_bus: &'a Client,
    pub web_addr: SocketAddr,
    pub fingerprint: &'a str,
    pub bus_url: &'a str,
    pub restic_bin: &'a Path,
    pub heartbeat: Duration,
}

/// Enrolls the local agent if it is not yet, and returns its settings.
pub async fn prepare(l: &Local<'_>) -> Result<Settings> {
    let state = StateDir::open(l.data_dir.join("agent"))?;
    if !state.is_enrolled() {
        let added: api::HostEnrollment = host_add(l.web_bus, l.name).await?;
        // the web service as this machine reaches it
        let ip = if l.web_addr.ip().is_unspecified() {
            "127.0.0.1".parse()?
        } else {
            l.web_addr.ip()
        };
        let server = format!("https://{}", SocketAddr::new(ip, l.web_addr.port()));
        let pin: Fingerprint = l.fingerprint.parse()?;
        let now = rm_bus::clock::system().now_ms();
        let id = rm_agent::enroll::enroll(&state, &server, &added.token, &pin, l.name, now)
            .await
            .context("enrolling the local agent")?;
        tracing::info!(host = %id.host_id, name = l.name, "local agent enrolled");
    }
    let mut settings = Settings::new(state.root().to_path_buf());
    settings.restic_bin = l.restic_bin.to_path_buf();
    settings.hostname = l.name.to_owned();
    settings.bus_urls = Some(vec![l.bus_url.to_owned()]);
    settings.timings.heartbeat = l.heartbeat;
    Ok(settings)
}

async fn host_add(web: &Client, name: &str) -> Result<api::HostEnrollment> {
    let req = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "serve".into(),
            via: ActorVia::System,
        },
        body: api::HostAdd { name: name.into() },
    };
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(10),
        deadline: Some(Duration::from_secs(30)),
        ..RetryPolicy::default()
    };
    let msg = request_with_retry(
        web,
        &subject::svc(SvcRole::Controlplane, api::HOST_ADD),
        &IdempotencyKey::new(format!("local-agent:{name}")),
        encode(&req),
        &policy,
    )
    .await
    .context("the control plane did not answer")?;
    let reply: SvcReply<api::HostEnrollment> = decode("host-add reply", &msg.payload)?;
    match (reply.ok, reply.error) {
        (Some(e), _) => Ok(e),
        (None, Some(e)) => bail!(
            "adding the local host {name:?} failed: {} (a host of that name exists but {} holds no enrollment: pick another --local-agent-name or revoke the old host)",
            e.message,
            "the agent state"
        ),
        (None, None) => bail!("empty reply to host-add"),
    }
}
