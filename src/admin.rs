//! `restic-manager admin ...`: operator actions from the command line of
//! the server machine. They go over the bus as service requests with the
//! web role's permissions — the same path the UI takes — using credentials
//! minted from this installation's authority (so only someone who can read
//! the data directory can use them). Each action is audited as `admin`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use rm_bus::connect::{ConnectSpec, connect};
use rm_bus::msg::{Actor, ActorVia};
use rm_bus::subject::SvcRole;
use rm_bus_server::creds::{Authority, Role};
use rm_controlplane::api;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The installation's data directory (holds the credential authority).
    #[arg(long, default_value = "/var/lib/restic-manager")]
    pub data_dir: PathBuf,
    /// The bus to talk to; repeat or separate with commas for several
    /// servers.
    #[arg(
        long = "nats-url",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    pub nats_urls: Vec<String>,
    #[command(subcommand)]
    pub action: AdminAction,
}

// The variants name the subcommands (`host-add`, `host-token`, ...), where
// the shared prefix is the point.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, clap::Subcommand)]
pub enum AdminAction {
    /// Add a host and print the command that enrolls its agent.
    HostAdd {
        /// A name for the host (shown in the UI).
        name: String,
    },
    /// Issue a new enrollment token for a host (re-enrollment).
    HostToken { host_id: String },
    /// Revoke a host: its agent is disconnected at once and cannot return.
    HostRevoke { host_id: String },
}

async fn call<B: Serialize, R: DeserializeOwned>(
    args: &AdminArgs,
    verb: rm_bus::subject::Verb,
    body: B,
) -> Result<R> {
    let authority = Authority::load_or_create(&args.data_dir.join("bus"), rm_bus::clock::system())
        .with_context(|| {
            format!(
                "loading the credential authority in {}",
                args.data_dir.display()
            )
        })?;
    let creds = authority.mint_new_user("admin-cli", Role::Web.permissions())?;
    let mut spec = ConnectSpec::new(String::new(), creds, &Role::Web);
    spec.urls = args.nats_urls.clone();
    // a tls:// bus is trusted as agents and the roles trust it (DATA_DIR/ca)
    spec.tls_ca_pem = rm_controlplane::bus_ca_pem(&args.data_dir)?;
    let (client, _events) = connect(&spec).await?;
    request(&client, "admin", verb, body)
        .await
        .map_err(|e| e.context("is `restic-manager serve` running?"))
}

/// One control-plane service request as `actor` (a system actor) over a
/// client with the web role's permissions, through the web role's service
/// helper; the service's error becomes `code: message`.
pub(crate) async fn request<B: Serialize, R: DeserializeOwned>(
    client: &async_nats::Client,
    actor: &str,
    verb: rm_bus::subject::Verb,
    body: B,
) -> Result<R> {
    let actor = Actor {
        name: actor.into(),
        via: ActorVia::System,
        address: None,
    };
    rm_web::svc::call(
        client,
        SvcRole::Controlplane,
        verb,
        actor,
        body,
        Duration::from_secs(40),
    )
    .await
    .map_err(|e| match e {
        rm_web::svc::SvcCallError::Refused(e) => anyhow::anyhow!("{}: {}", e.code, e.message),
        other => anyhow::Error::new(other).context("the control plane did not answer"),
    })
}

pub async fn run(args: AdminArgs) -> Result<()> {
    match &args.action {
        AdminAction::HostAdd { name } => {
            let (req, key) = api::HostAdd::new(name.clone());
            let e: api::SealedEnrollment = call(&args, api::HOST_ADD, req).await?;
            let e = e.open(&key)?;
            println!(
                "host {} added; on the endpoint, run:\n\n  {}\n",
                e.host_id, e.command
            );
        }
        AdminAction::HostToken { host_id } => {
            let (req, key) = api::HostTokenRequest::new(host_id.clone());
            let e: api::SealedEnrollment = call(&args, api::HOST_TOKEN, req).await?;
            let e = e.open(&key)?;
            println!("on the endpoint, run:\n\n  {}\n", e.command);
        }
        AdminAction::HostRevoke { host_id } => {
            let _: api::Done = call(
                &args,
                api::HOST_REVOKE,
                api::HostRef {
                    host_id: host_id.clone(),
                },
            )
            .await?;
            println!("host {host_id} revoked");
        }
    }
    Ok(())
}
