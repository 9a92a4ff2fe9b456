//! `serve --local-agent`: this machine backs itself up too. At first start
//! the serve process adds a host for it and enrolls an agent exactly as an
//! endpoint does — keys generated locally, the one-time token sent over
//! HTTPS pinned to the web certificate — then runs that agent beside the
//! other roles. Its state lives in `<data-dir>/agent`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::Client;
use rm_agent::Settings;
use rm_agent::enroll::Fingerprint;
use rm_agent::state::StateDir;
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
    // this machine's backups give way to the roles serve runs beside them
    settings.restic_yields = true;
    Ok(settings)
}

async fn host_add(web: &Client, name: &str) -> Result<api::HostEnrollment> {
    let (req, key) = api::HostAdd::new(name);
    let e: api::SealedEnrollment = crate::admin::request(web, "serve", api::HOST_ADD, req)
        .await
        .with_context(|| {
            format!(
                "adding the local host {name:?} (if a host of that name exists but the agent state holds no enrollment, pick another --local-agent-name or revoke the old host)"
            )
        })?;
    Ok(e.open(&key)?)
}
