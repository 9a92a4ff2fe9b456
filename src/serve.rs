//! `restic-manager serve`: every server role in one process on one SQLite
//! file — the embedded bus (operator mode, trusting this installation's
//! credential authority), the control plane, the alerts role, a notifier
//! and the web role (`rm_web::run`: HTTPS, accounts, the API). Roles talk over
//! the bus exactly as they do when run as separate processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rm_bus::connect::ConnectSpec;
use rm_bus_server::creds::{Authority, Role};
use rm_bus_server::server::{Auth, OperatorAuth, Server, ServerConfig};
use tokio::sync::watch;

/// Settings of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Keys, master key, database and bus state live here.
    #[arg(long, default_value = "/var/lib/restic-manager")]
    pub data_dir: PathBuf,
    /// Where the embedded bus listens (agents connect here).
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub bus_listen: SocketAddr,
    /// Bus URL(s) agents are told at enrollment (default: the listen address).
    #[arg(long = "agent-nats-url")]
    pub agent_nats_urls: Vec<String>,
    /// Where the web service listens (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub web_listen: SocketAddr,
    /// The web service's URL as endpoints reach it, printed in enrollment
    /// commands (default: https://<web-listen>).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Extra DNS names or addresses for the bus and web certificates
    /// (issued by the installation's CA in <data-dir>/ca; the listen
    /// addresses, the hosts of --server-url and --agent-nats-url, and
    /// loopback are always in them).
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Life of each bus and web certificate the installation's CA issues,
    /// in seconds; renewed at two thirds of it without dropping
    /// connections [default: 90 days].
    #[arg(long, default_value_t = rm_bus_server::pki::ca::LEAF_LIFE.as_secs())]
    pub tls_life_secs: u64,
    /// The web service's own certificate chain (PEM) instead of one issued
    /// by the installation's CA; needs --web-tls-key. Enrollment commands
    /// then pin this certificate (renew it yourself).
    #[arg(long, requires = "web_tls_key")]
    pub web_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --web-tls-cert.
    #[arg(long, requires = "web_tls_cert")]
    pub web_tls_key: Option<PathBuf>,
    /// The bus's own certificate chain (PEM) instead of one issued by the
    /// installation's CA; needs --bus-tls-key. Put the CA that issued it in
    /// <data-dir>/ca/agent-bus-ca.pem: agents get it at enrollment and the
    /// roles in this process trust it (the certificate must be valid for
    /// 127.0.0.1 too).
    #[arg(long, requires = "bus_tls_key")]
    pub bus_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --bus-tls-cert.
    #[arg(long, requires = "bus_tls_cert")]
    pub bus_tls_key: Option<PathBuf>,
    /// Let the bus accept plain (unencrypted) connections although it
    /// listens beyond loopback. Without it such a bus serves TLS from the
    /// installation's CA. On loopback the bus is always plain.
    #[arg(long)]
    pub bus_allow_plaintext: bool,
    /// Reverse proxies (addresses or CIDR ranges; repeat or separate with
    /// commas) whose X-Forwarded-For names the client for the login
    /// throttle, sessions and the audit log [default: none: the TCP peer
    /// is the client and X-Forwarded-For is ignored].
    #[arg(long = "trusted-proxy", value_delimiter = ',')]
    pub trusted_proxies: Vec<rm_web::auth::client::Cidr>,
    /// Agents' heartbeat interval in seconds.
    #[arg(long, default_value_t = 15)]
    pub heartbeat_secs: u64,
    /// Also back up this machine: enroll (first start) and run a local
    /// agent in this process, state in `<data-dir>/agent`.
    #[arg(long)]
    pub local_agent: bool,
    /// The local agent's host name (default: this machine's).
    #[arg(long)]
    pub local_agent_name: Option<String>,
    /// The restic binary the local agent runs.
    #[arg(long, default_value = "restic")]
    pub restic: PathBuf,
    #[command(flatten)]
    pub anomaly: crate::cli::AnomalyArgs,
    #[command(flatten)]
    pub offline: crate::cli::OfflineAlertArgs,
    #[command(flatten)]
    pub group: crate::cli::NotifyGroupArgs,
    /// Give the local agent a clearly labelled demo repository (an
    /// append-only REST server over `<data-dir>/demo`), a sample backup
    /// set, a daily schedule and a first backup. Needs --local-agent.
    #[arg(long, requires = "local_agent")]
    pub demo: bool,
    /// Where the demo's append-only REST server (rclone) listens; kept
    /// across restarts, since the local agent's credential names it.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub demo_rest_listen: SocketAddr,
    /// Agent binaries offered at /download/agent/ [default:
    /// /usr/lib/restic-manager/agents if it exists, else this binary's
    /// directory].
    #[arg(long)]
    pub agent_dir: Option<PathBuf>,
    /// Seconds between looks whether the daily control-plane backup is due
    /// (or was asked for on the settings page).
    #[arg(long, default_value_t = 5)]
    pub controlplane_backup_poll_secs: u64,
    /// The rclone binary serving the demo repository.
    #[arg(long, default_value = "rclone")]
    pub rclone: PathBuf,
    /// The control plane's timeouts and writer limits, as the separate
    /// `controlplane` command has them (the writer ones apply to the
    /// alerts role in this process too).
    #[command(flatten)]
    pub limits: crate::cli::ControlplaneLimits,
}

impl ServeArgs {
    /// The control plane's timings: the built-in defaults, the heartbeat
    /// and every limit that was set.
    pub fn controlplane_timings(&self) -> rm_controlplane::Timings {
        self.limits.apply(rm_controlplane::Timings {
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            ..rm_controlplane::Timings::default()
        })
    }

    /// The alerts role's timings: the defaults and the writer limits set.
    pub fn alerts_timings(&self) -> rm_alerts::Timings {
        let mut t = self.limits.apply_alerts(rm_alerts::Timings::default());
        t.offline_grace = self.offline.grace();
        t.notify_group_from = self.group.notify_group_from;
        t
    }
}

/// A future that completes when `rx` says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How long the roles wait for the local agent to stop before they stop
/// too (its own stop is bounded: a job's grace, then a short last try to
/// deliver results).
const AGENT_STOP_GRACE: Duration = Duration::from_secs(15);

/// How long the other roles get to stop after one failed, before serve
/// exits with the failure anyway.
const FAILED_STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs everything until `shutdown` completes, then stops the roles and
/// finally the bus.
pub async fn run(args: ServeArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let authority = Arc::new(
        Authority::load_or_create(&args.data_dir.join("bus"), rm_bus::clock::system())
            .context("loading the credential authority")?,
    );
    let tls_life = Duration::from_secs(args.tls_life_secs.max(1));
    let ca = Arc::new(rm_web::tls::load_ca(&args.data_dir)?);
    let names = cert_names(&args);
    let bus_tls = bus_tls(&args, &ca, &names, tls_life)?;
    let mut bus_config = ServerConfig::new(
        args.bus_listen,
        Auth::Operator(OperatorAuth {
            operator_jwt: authority.operator_jwt()?,
            system_account: Some(authority.system_account_public_key()),
            preload: vec![authority.account_jwt()?, authority.system_account_jwt()?],
            resolver_dir: Some(args.data_dir.join("bus").join("jwt")),
        }),
    );
    bus_config.server_name = "restic-manager".into();
    bus_config.allow_plaintext = args.bus_allow_plaintext;
    if bus_tls.is_none() && !args.bus_listen.ip().is_loopback() {
        tracing::warn!(listen = %args.bus_listen, "the bus accepts plain connections beyond loopback (--bus-allow-plaintext)");
    }
    let (bus_tls_ca, bus_renewal) = match bus_tls {
        Some(t) => {
            bus_config.tls = Some(t.config);
            (Some(t.ca_pem), t.renewal)
        }
        None => (None, None),
    };
    let server = Server::start(bus_config)
        .await
        .context("starting the embedded bus")?;
    let bus_url = internal_url(&server);
    tracing::info!(url = %bus_url, "embedded bus listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    // The local agent stops first, on a signal of its own, while the
    // control plane still answers: the result of a job the stop cancelled
    // reaches it instead of waiting in the outbox for the next start.
    let (agent_stop_tx, agent_stop_rx) = watch::channel(false);
    let bus_renewal = bus_renewal.map(|r| tokio::spawn(r.run(stopped(stop_rx.clone()))));

    let fingerprint = match &args.web_tls_cert {
        Some(cert) => {
            rm_bus_server::pki::expiry::warn_at_start(args.web_listen, cert);
            let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            rm_bus::pki::fingerprint_of(&rm_bus::pki::verify::first_cert(&pem)?)
        }
        None => ca.fingerprint(),
    };
    let web_listener = tokio::net::TcpListener::bind(args.web_listen)
        .await
        .with_context(|| format!("binding the web service to {}", args.web_listen))?;
    let server_url = args.server_url.clone().unwrap_or_else(|| {
        format!(
            "https://{}",
            web_listener.local_addr().map_or(args.web_listen, |a| a)
        )
    });
    tracing::info!(url = %server_url, %fingerprint, "web service listening");

    let cp_config = rm_controlplane::Config {
        data_dir: args.data_dir.clone(),
        db_path: None,
        bus_urls: vec![bus_url.clone()],
        agent_bus_urls: if args.agent_nats_urls.is_empty() {
            vec![bus_url.clone()]
        } else {
            args.agent_nats_urls.clone()
        },
        authority: authority.clone(),
        server_url: server_url.clone(),
        server_fingerprint: Some(fingerprint.clone()),
        timings: args.controlplane_timings(),
        clock: rm_bus::clock::system(),
    };
    let controlplane = tokio::spawn(rm_controlplane::run(cp_config, stopped(stop_rx.clone())));

    let notifier_key = rm_bus::seal::load_or_create_xkey(&args.data_dir.join("notifier.xk"))?;
    let creds = authority.mint_new_user("notifier", Role::Notifier.permissions())?;
    let mut spec = ConnectSpec::new(bus_url.clone(), creds, &Role::Notifier);
    spec.retry_on_initial_connect = true;
    spec.tls_ca_pem = bus_tls_ca.clone();
    let mut n_config = rm_notifier::NotifierConfig::new(spec, notifier_key);
    n_config.instance = "serve".into();
    // Open only what the alerts role sealed (same data dir, same key file).
    let alerts_key = rm_bus::seal::load_or_create_xkey(&args.data_dir.join(rm_alerts::XKEY_FILE))?;
    n_config.trusted_senders = vec![alerts_key.public_key()];
    let notifier_xkey = n_config.xkey.public_key();
    let notifier = tokio::spawn(rm_notifier::run(n_config, stopped(stop_rx.clone())));

    let creds = authority.mint_new_user("alerts", Role::Alerts.permissions())?;
    let mut spec = ConnectSpec::new(bus_url.clone(), creds, &Role::Alerts);
    spec.retry_on_initial_connect = true;
    spec.tls_ca_pem = bus_tls_ca.clone();
    if let Some(v) = args.limits.events_capacity {
        spec.events_capacity = v.max(1);
    }
    let a_config = rm_alerts::Config {
        data_dir: args.data_dir.clone(),
        db_path: None,
        connect: spec,
        notifier_xkey,
        ui_base_url: Some(server_url.clone()),
        timings: args.alerts_timings(),
        anomaly: args.anomaly.config(),
        clock: rm_bus::clock::system(),
    };
    let alerts = tokio::spawn(rm_alerts::run(a_config, stopped(stop_rx.clone())));

    let web_creds = authority.mint_new_user("web", Role::Web.permissions())?;
    let mut web_spec = ConnectSpec::new(bus_url.clone(), web_creds, &Role::Web);
    web_spec.retry_on_initial_connect = true;
    web_spec.tls_ca_pem = bus_tls_ca.clone();
    let web_addr = web_listener.local_addr()?;
    let mut w_config = rm_web::WebConfig::new(
        args.data_dir.clone(),
        web_spec.clone(),
        rm_web::Listen::Bound(web_listener),
    );
    w_config.tls_names = names.clone();
    w_config.tls_life = tls_life;
    w_config.tls_files = args.web_tls_cert.clone().zip(args.web_tls_key.clone());
    w_config.print_setup_code = true;
    w_config.agent_dir = args.agent_dir.clone();
    w_config.auth.trusted_proxies = args.trusted_proxies.clone();
    let web = tokio::spawn(rm_web::run(w_config, stopped(stop_rx.clone())));

    let demo_rest = if args.demo {
        Some(
            crate::demo::start_rest(&args.data_dir, args.demo_rest_listen, &args.rclone)
                .await
                .context("the demo repository")?,
        )
    } else {
        None
    };
    let mut demo_ctx = None;
    let agent = if args.local_agent {
        let name = args
            .local_agent_name
            .clone()
            .unwrap_or_else(rm_agent::vitals::hostname);
        // its own connection with the web role's permissions, to add the host
        let (state_bus, _events) = rm_bus::connect::connect(&web_spec).await?;
        let settings = crate::local_agent::prepare(&crate::local_agent::Local {
            data_dir: &args.data_dir,
            name: &name,
            web_bus: &state_bus,
            web_addr,
            fingerprint: &fingerprint,
            bus_url: &bus_url,
            restic_bin: &args.restic,
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        })
        .await?;
        println!(
            "  local agent: {name} (state in {})",
            settings.state_dir.display()
        );
        if let Some(rest) = &demo_rest {
            demo_ctx = Some(crate::demo::Ctx {
                data_dir: args.data_dir.clone(),
                db: args.data_dir.join("restic-manager.db"),
                bus: state_bus.clone(),
                host_name: name.clone(),
                rest: rest.listen,
            });
        }
        Some(tokio::spawn(rm_agent::run(
            settings,
            stopped(agent_stop_rx.clone()),
        )))
    } else {
        None
    };

    // The control plane's own backup (through the local agent) and the
    // warning until a recovery kit exists.
    let cp_backup = {
        let db = args.data_dir.join(crate::cpbackup::manifest::DB_FILE);
        let store = rm_store::Store::open(&db)
            .await
            .with_context(|| format!("opening {}", db.display()))?;
        let (bus, _events) = rm_bus::connect::connect(&web_spec).await?;
        let task = crate::cpbackup::schedule::Task {
            data_dir: args.data_dir.clone(),
            store,
            bus,
            local_host: args.local_agent.then(|| {
                args.local_agent_name
                    .clone()
                    .unwrap_or_else(rm_agent::vitals::hostname)
            }),
            poll: Duration::from_secs(args.controlplane_backup_poll_secs.max(1)),
            warn_every: Duration::from_secs(6 * 3600),
        };
        tokio::spawn(crate::cpbackup::schedule::run(
            task,
            stopped(stop_rx.clone()),
        ))
    };

    println!("restic-manager is running");
    println!("  bus: {bus_url}");
    println!("  web: {server_url} (certificate {})", fingerprint);
    let demo = demo_ctx.map(|ctx| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stdout(),
            "  demo: repository over {} (append-only REST on {}), sample set {}",
            args.data_dir.join("demo").display(),
            ctx.rest,
            crate::demo::Paths::new(&args.data_dir).sample().display()
        );
        tokio::spawn(crate::demo::run(ctx))
    });

    // Run until asked to stop or until a role fails.
    let mut web = web;
    let mut controlplane = controlplane;
    let mut notifier = notifier;
    let mut alerts = alerts;
    let mut agent = agent;
    let agent_done = async {
        match &mut agent {
            Some(a) => a.await,
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        () = shutdown => None,
        r = agent_done => Some(("local agent", r)),
        r = &mut controlplane => Some(("control plane", r)),
        r = &mut notifier => Some(("notifier", r)),
        r = &mut alerts => Some(("alerts role", r)),
        r = &mut web => Some(("web service", r)),
    };
    let _ = agent_stop_tx.send(true);
    // each part of the stop says when it ended: a slow stop names its part
    let stopping = std::time::Instant::now();
    // Every part is stopped and joined whatever failed first (a role that
    // failed, a local agent whose stop failed): the first error is
    // serve's, the others are logged. The failed part's task has ended
    // already and is not awaited again.
    let mut errors: Vec<anyhow::Error> = Vec::new();
    let mut failed_part = None;
    if let Some((part, r)) = failed {
        failed_part = Some(part);
        stopped_after(part, stopping);
        errors.push(
            flatten(r)
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly"))
                .context(format!("the {part} stopped")),
        );
        // the roles stop at once when one of them failed
        let _ = stop_tx.send(true);
    }
    if let Some(mut a) = agent.take().filter(|_| failed_part != Some("local agent")) {
        // the agent first: its last results still reach the control
        // plane, which stops after it (or after AGENT_STOP_GRACE)
        let done = tokio::time::timeout(AGENT_STOP_GRACE, &mut a).await;
        let _ = stop_tx.send(true);
        let r = match done {
            Ok(r) => r,
            Err(_) => a.await,
        };
        stopped_after("local agent", stopping);
        if let Err(e) = flatten(r) {
            errors.push(e.context("local agent"));
        }
    }
    let _ = stop_tx.send(true);
    let timed = |part: &'static str, task: tokio::task::JoinHandle<Result<()>>| async move {
        if failed_part == Some(part) {
            return Ok(());
        }
        let r = task.await;
        stopped_after(part, stopping);
        flatten(r).context(part)
    };
    let joined = async {
        tokio::join!(
            timed("control plane", controlplane),
            timed("notifier", notifier),
            timed("alerts role", alerts),
            timed("web service", web)
        )
    };
    // After a failure nobody asked serve to stop: a role that hangs in its
    // stop must not keep a failed serve from exiting (and being restarted)
    let joined = match failed_part {
        None => Some(joined.await),
        Some(_) => tokio::time::timeout(FAILED_STOP_GRACE, joined).await.ok(),
    };
    match joined {
        Some((c, n, a, w)) => errors.extend([c, n, a, w].into_iter().filter_map(Result::err)),
        None => tracing::warn!(
            grace_s = FAILED_STOP_GRACE.as_secs(),
            "roles still stopping after a failure; left to the process's end"
        ),
    }
    if let Some(d) = demo {
        d.abort();
    }
    let _ = cp_backup.await;
    if let Some(rest) = demo_rest {
        rest.stop().await;
    }
    if let Some(r) = bus_renewal {
        let _ = r.await;
    }
    server.shutdown().await;
    stopped_after("embedded bus", stopping);
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(first) => {
            for e in errors {
                tracing::error!(error = %format_args!("{e:#}"), "also failed while stopping");
            }
            Err(first)
        }
    }
}

/// Logs that `part` of serve finished stopping, and how long after the
/// stop began.
fn stopped_after(part: &'static str, since: std::time::Instant) {
    let stop_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(part, stop_ms, "stopped");
}

/// Names for the bus and web certificates: --tls-name, the listen
/// addresses, and the hosts of --server-url and --agent-nats-url.
fn cert_names(args: &ServeArgs) -> Vec<String> {
    let mut names = args.tls_names.clone();
    names.push(args.bus_listen.ip().to_string());
    names.push(args.web_listen.ip().to_string());
    let urls = args.server_url.iter().chain(&args.agent_nats_urls);
    names.extend(urls.filter_map(|u| rm_bus_server::pki::ca::url_host(u)));
    names
}

/// The bus's TLS: the operator's certificate, or one issued by the CA when
/// it listens beyond loopback (unless plain is allowed), or none.
struct BusTls {
    config: Arc<rm_bus::pki::rustls::ServerConfig>,
    /// What the roles in this process trust for it.
    ca_pem: String,
    renewal: Option<rm_bus_server::pki::Renewal>,
}

fn bus_tls(
    args: &ServeArgs,
    ca: &Arc<rm_bus_server::pki::Ca>,
    names: &[String],
    life: Duration,
) -> Result<Option<BusTls>> {
    if let (Some(cert), Some(key)) = (&args.bus_tls_cert, &args.bus_tls_key) {
        let ca_pem = rm_controlplane::bus_ca_pem(&args.data_dir)?.unwrap_or_default();
        if !rm_bus_server::pki::ca::dir_of(&args.data_dir)
            .join(rm_controlplane::AGENT_BUS_CA)
            .exists()
        {
            anyhow::bail!(
                "--bus-tls-cert: put the CA that issued it in {}/{} (agents verify the bus against it)",
                rm_bus_server::pki::ca::dir_of(&args.data_dir).display(),
                rm_controlplane::AGENT_BUS_CA
            );
        }
        rm_bus_server::pki::expiry::warn_at_start(args.bus_listen, cert);
        return Ok(Some(BusTls {
            config: rm_bus_server::server::tls::server_config_from_files(cert, key)?,
            ca_pem,
            renewal: None,
        }));
    }
    if args.bus_listen.ip().is_loopback() || args.bus_allow_plaintext {
        return Ok(None);
    }
    let (renewal, config) =
        rm_bus_server::pki::Renewal::start(ca.clone(), names.to_vec(), life, "bus")?;
    Ok(Some(BusTls {
        config,
        ca_pem: ca.cert_pem().to_owned(),
        renewal: Some(renewal),
    }))
}

/// The bus URL for the roles in this process: loopback when the bus
/// listens on every address.
fn internal_url(server: &Server) -> String {
    let mut addr = server.local_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        });
    }
    let scheme = server
        .url()
        .split_once("://")
        .map_or("nats", |(s, _)| s)
        .to_owned();
    format!("{scheme}://{addr}")
}

fn flatten(r: Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.context("role task panicked")?
}
