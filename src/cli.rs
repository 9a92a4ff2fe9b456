//! Command-line interface of the `restic-manager` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
#[cfg(test)]
use clap::CommandFactory;
use clap::{Args, Parser, Subcommand};
use rm_bus::connect::ConnectSpec;
use rm_bus::shutdown::signal as shutdown_signal;
use rm_bus_server::creds::{Authority, Role, UserCreds, server_config};

#[derive(Debug, Parser)]
#[command(
    name = "restic-manager",
    version,
    about = "A single pane of glass for restic backups across a fleet"
)]
struct Cli {
    /// Configuration file (TOML; `[serve]`, `[web]`, ... sections) [default:
    /// /etc/restic-manager/config.toml when it exists]. Flags override
    /// environment variables, which override the file.
    #[arg(long, global = true, env = "RM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// What the configuration file and the environment can set: every option
/// of the role commands (docs/configuration.md).
pub const CONFIG: rm_agent::layers::Spec = rm_agent::layers::Spec {
    prefix: "RM_",
    sections: &["serve", "bus", "controlplane", "alerts", "notifier", "web"],
    config_flag: "config",
    default_file: "/etc/restic-manager/config.toml",
};

/// Parses the command line over the configuration file and environment;
/// a bad file or argument is reported (clap's usage error) and exits.
fn parse_layered(argv: Vec<std::ffi::OsString>) -> Result<Cli> {
    use clap::{CommandFactory, FromArgMatches};
    let file = match rm_agent::layers::config_path(&CONFIG, &argv) {
        Some(path) => {
            let table = rm_agent::layers::read_file(&path)?;
            Some((path, table))
        }
        None => None,
    };
    let cmd = rm_agent::layers::apply(
        Cli::command(),
        &CONFIG,
        file.as_ref().map(|(p, t)| (p.as_path(), t)),
    )?;
    let matches = cmd.try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).map_err(|e| e.exit())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Credential authority: operator, account and signing keys.
    #[command(subcommand)]
    Authority(AuthorityCmd),
    /// Run the embedded bus (a core-NATS server) on its own.
    Bus(BusArgs),
    /// Run everything in one process: embedded bus, control plane, notifier.
    Serve(Box<crate::serve::ServeArgs>),
    /// Operator actions from the server's command line (add a host, ...).
    Admin(crate::admin::AdminArgs),
    /// Run the web role on its own (HTTPS, accounts, the JSON API), against
    /// a bus and the shared database.
    Web(WebArgs),
    /// Operator accounts (writes the database directly).
    #[command(subcommand)]
    User(crate::accounts::UserCmd),
    /// API tokens (writes the database directly).
    #[command(subcommand)]
    Token(crate::accounts::TokenCmd),
    /// Run the control plane on its own, against a bus.
    Controlplane(ControlplaneArgs),
    /// Run the alerts role on its own: rules, channels and the delivery
    /// outbox, against a bus and the shared database.
    Alerts(AlertsArgs),
    /// Deliver notifications (ntfy, webhooks) for the alerts role: a
    /// stateless worker in a queue group; run as many copies as you like.
    Notifier(NotifierArgs),
    /// Fill a database with a made-up fleet, to look at and measure the UI
    /// at scale (never a production database).
    Seed(crate::seed::SeedArgs),
    /// Write a consistent copy of this installation — the database (while
    /// the server runs) and every key — into a staging directory, with a
    /// manifest of SHA-256 hashes (docs/install.md, "Disaster recovery").
    ControlplaneBackup(crate::cpbackup::cmd::BackupArgs),
    /// Restore a control-plane copy into an empty data directory (another
    /// machine): checks every hash and the schema version first.
    ControlplaneRestore(crate::cpbackup::cmd::RestoreArgs),
    /// Print the recovery kit — the master key and the control-plane backup
    /// repository's location and password — and record that it was
    /// exported (keep it offline).
    RecoveryKit(crate::cpbackup::cmd::KitArgs),
    /// Rewrite the database file in key order (SQLite's VACUUM), so each
    /// index's pages lie together again: a store grown day by day writes a
    /// burst of job results faster after it. Stop the services first; it
    /// needs free disk for a second copy of the file (docs/install.md,
    /// "Compacting the database").
    DbVacuum(crate::accounts::StoreArgs),
    /// Create the notifier role's xkey seed file (0600) if it does not
    /// exist, and print its public key: the key the alerts role seals
    /// channel definitions to. Copy the file to every notifier machine.
    NotifierXkey {
        /// The seed file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct NotifierArgs {
    /// Bus URL; repeat or separate with commas for several servers.
    #[arg(long = "nats-url", required = true, value_delimiter = ',')]
    nats_urls: Vec<String>,
    /// The notifier role's NATS credentials (.creds file).
    #[arg(long)]
    creds: PathBuf,
    /// The notifier role's xkey seed (`SX...`), shared by every copy.
    #[arg(long)]
    xkey_seed_file: PathBuf,
    /// This copy's name in replies and logs [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Timeout of one delivery attempt, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    attempt_timeout_ms: u64,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// Accept channels sealed only by this xkey (repeatable; default: any
    /// sender the bus lets publish to the notifier).
    #[arg(long = "trusted-sender-xkey")]
    trusted_sender_xkeys: Vec<String>,
    /// Trust only this CA (PEM) for a tls:// bus, e.g. the installation's
    /// DATA_DIR/ca/ca-cert.pem [default: the system's roots].
    #[arg(long)]
    nats_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ControlplaneArgs {
    /// Keys, master key and (by default) the database live here.
    #[arg(long, default_value = "/var/lib/restic-manager")]
    data_dir: PathBuf,
    /// The SQLite database (default DATA_DIR/restic-manager.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Bus URL; repeat or separate with commas for several servers.
    #[arg(
        long = "nats-url",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    nats_urls: Vec<String>,
    /// Bus URL(s) agents are told at enrollment, repeated or separated
    /// with commas (default: --nats-url).
    #[arg(long = "agent-nats-url", value_delimiter = ',')]
    agent_nats_urls: Vec<String>,
    /// The web service's URL, printed in enrollment commands.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    server_url: String,
    /// SHA-256 fingerprint enrollment commands pin [default: that of the
    /// installation's CA in DATA_DIR/ca, if there is one].
    #[arg(long)]
    server_fingerprint: Option<String>,
    /// Agents' heartbeat interval in seconds.
    #[arg(long, default_value_t = 15)]
    heartbeat_secs: u64,
    #[command(flatten)]
    limits: ControlplaneLimits,
}

/// The control plane's timeouts and limits; unset means the built-in
/// default (`rm_controlplane::Timings::default()`, in brackets). Flags of
/// both `controlplane` and `serve` (one definition, so they cannot drift).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControlplaneLimits {
    /// Seconds a query to an agent (ls, snapshots) waits for its answer [120].
    #[arg(long)]
    pub query_timeout_secs: Option<u64>,
    /// restic timeout of a system health refresh, in seconds [3600].
    #[arg(long)]
    pub refresh_timeout_secs: Option<u64>,
    /// Hours between two periodic refreshes of a repository's snapshot
    /// list, sizes and locks, each repository at its own place in the
    /// period (backups add their own snapshot; forget, prune, check and an
    /// operator's "Refresh now" refresh at once) [6].
    #[arg(long)]
    pub repo_refresh_hours: Option<u64>,
    /// Hellos handled at once; a reconnect storm waits, one hello per host, and one that waited over 8 s is dropped [32].
    #[arg(long)]
    pub hello_concurrency: Option<usize>,
    /// Milliseconds the oldest waiting hello may wait before the handlers
    /// count as behind and take the newest hellos first, so that what they
    /// answer in a storm is still awaited; 8000 or more: always the oldest
    /// first [1000].
    #[arg(long)]
    pub hello_newest_first_ms: Option<u64>,
    /// Milliseconds the oldest job result waiting for the writer may wait
    /// before the writer counts as behind and takes the newest results
    /// first, so that what it acknowledges in a burst is still awaited;
    /// as long as --result-max-wait-ms or more: always the oldest first
    /// [2000].
    #[arg(long)]
    pub result_newest_first_ms: Option<u64>,
    /// Milliseconds a job result may wait for the writer before it is
    /// dropped unanswered and its agent sends it again. Longer than the
    /// agent's 10 s a try: one written after its agent stopped waiting is
    /// what the agent's next try needs, answered then from memory. Keep
    /// it under the bus's two minutes for a reply [60000].
    #[arg(long)]
    pub result_max_wait_ms: Option<u64>,
    /// Most job results waiting for the writer; past it the oldest waiting
    /// is dropped unanswered and its agent sends it again. A burst larger
    /// than this arriving at once waits for those agents' next try (10 s)
    /// [32768].
    #[arg(long)]
    pub result_queue: Option<usize>,
    /// Service requests handled at once [64].
    #[arg(long)]
    pub svc_concurrency: Option<usize>,
    /// Seconds between writes of heartbeats kept in memory; at most two
    /// heartbeat intervals [30].
    #[arg(long)]
    pub seen_flush_secs: Option<u64>,
    /// Most hosts' heartbeats in one write of that flush; hellos and
    /// results queued meanwhile are written between the parts [5000].
    #[arg(long)]
    pub seen_flush_rows: Option<usize>,
    /// Most writes in one transaction of the writer task, and job results
    /// applied this many at a time, an operator's write waiting for at
    /// most one such part [1024]; in `serve` also the alerts role's (its
    /// default: 256).
    #[arg(long)]
    pub write_batch: Option<usize>,
    /// Most job results in one commit (parts of --write-batch) while no
    /// operator's write waits; larger commits write fewer pages a result,
    /// fewer commits in a burst [4096].
    #[arg(long)]
    pub results_per_commit: Option<usize>,
    /// Connection events kept while the role is behind reading them [64].
    #[arg(long)]
    pub events_capacity: Option<usize>,
    /// Messages each of the control plane's bus subscriptions holds while
    /// it is behind (heartbeats of a stalled bus node arrive at once); past
    /// it the client drops them [262144].
    #[arg(long)]
    pub subscription_capacity: Option<usize>,
}

impl ControlplaneLimits {
    /// `t` with every limit that was set.
    pub fn apply(&self, mut t: rm_controlplane::Timings) -> rm_controlplane::Timings {
        let secs = std::time::Duration::from_secs;
        if let Some(v) = self.query_timeout_secs {
            t.query_timeout = secs(v.max(1));
        }
        if let Some(v) = self.refresh_timeout_secs {
            t.refresh_timeout = secs(v.max(1));
        }
        if let Some(v) = self.repo_refresh_hours {
            t.health_every = secs(v.max(1).saturating_mul(3600));
        }
        if let Some(v) = self.hello_concurrency {
            t.hello_concurrency = v.max(1);
        }
        if let Some(v) = self.hello_newest_first_ms {
            t.hello_newest_first = std::time::Duration::from_millis(v);
        }
        if let Some(v) = self.result_newest_first_ms {
            t.result_newest_first = std::time::Duration::from_millis(v);
        }
        if let Some(v) = self.result_max_wait_ms {
            t.result_max_wait = std::time::Duration::from_millis(v.max(1));
        }
        if let Some(v) = self.result_queue {
            t.ingest_queue = v.max(1);
        }
        if let Some(v) = self.svc_concurrency {
            t.svc_concurrency = v.max(1);
        }
        if let Some(v) = self.seen_flush_secs {
            t.seen_flush = secs(v.max(1));
        }
        if let Some(v) = self.seen_flush_rows {
            t.flush_rows_per_write = v.max(1);
        }
        if let Some(v) = self.write_batch {
            t.ingest_batch = v.max(1);
        }
        if let Some(v) = self.results_per_commit {
            t.ingest_commit_results = v.max(1);
        }
        if let Some(v) = self.events_capacity {
            t.events_capacity = v.max(1);
        }
        if let Some(v) = self.subscription_capacity {
            t.subscription_capacity = v.max(1);
        }
        t
    }

    /// The alerts role's writer limits in `serve`, where one set of flags
    /// covers both roles of the process: `t` with the service concurrency
    /// and write batch that were set.
    pub fn apply_alerts(&self, mut t: rm_alerts::Timings) -> rm_alerts::Timings {
        if let Some(v) = self.svc_concurrency {
            t.svc_concurrency = v.max(1);
        }
        if let Some(v) = self.write_batch {
            t.write_batch = v.max(1);
        }
        t
    }
}

#[derive(Debug, clap::Args)]
struct AlertsArgs {
    /// Master key, the alerts role's xkey and (by default) the database
    /// live here; without --creds, the credential authority too.
    #[arg(long, default_value = "/var/lib/restic-manager")]
    data_dir: PathBuf,
    /// The SQLite database (default DATA_DIR/restic-manager.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Bus URL; repeat or separate with commas for several servers.
    #[arg(
        long = "nats-url",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    nats_urls: Vec<String>,
    /// The alerts role's NATS credentials (.creds file) [default: minted
    /// from the credential authority in DATA_DIR/bus].
    #[arg(long)]
    creds: Option<PathBuf>,
    /// The notifier role's public xkey (`XA...`, printed by
    /// `restic-manager notifier-xkey`): channels are sealed to it.
    #[arg(long)]
    notifier_xkey: String,
    /// The UI's base URL: notifications link to BASE/alerts/ID.
    #[arg(long)]
    ui_url: Option<String>,
    /// Seconds between stale-schedule and auto-resolution passes.
    #[arg(long, default_value_t = 60)]
    tick_secs: u64,
    /// How long one delivery request waits for a notifier's reply, in
    /// milliseconds (longer than the notifier's attempt timeout).
    #[arg(long, default_value_t = 10_000)]
    deliver_timeout_ms: u64,
    /// Service requests handled at once [64].
    #[arg(long)]
    svc_concurrency: Option<usize>,
    /// Most writes in one transaction of the writer task [256].
    #[arg(long)]
    write_batch: Option<usize>,
    /// Connection events kept while the role is behind reading them [64].
    #[arg(long)]
    events_capacity: Option<usize>,
    #[command(flatten)]
    anomaly: AnomalyArgs,
    #[command(flatten)]
    offline: OfflineAlertArgs,
    #[command(flatten)]
    group: NotifyGroupArgs,
}

/// When an offline host becomes an `agent_offline` alert (docs/alerts.md).
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineAlertArgs {
    /// Seconds a host stays offline before agent_offline is raised; a host
    /// back sooner (a bus restart, a reboot) raises nothing.
    #[arg(long, default_value_t = 180)]
    pub offline_alert_after_secs: u64,
}

impl OfflineAlertArgs {
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.offline_alert_after_secs)
    }
}

/// When alert changes go out as one grouped notification (docs/alerts.md).
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyGroupArgs {
    /// This many changes or more of one kind due to one channel at once
    /// (hosts offline behind a failed bus node) go as one notification
    /// listing them all; 0 sends every change on its own.
    #[arg(long, default_value_t = 5)]
    pub notify_group_from: usize,
}

/// Thresholds of the `backup_anomaly` rule (docs/alerts.md).
#[derive(Debug, Clone, clap::Args)]
pub struct AnomalyArgs {
    /// How many earlier successful backups make a host's usual.
    #[arg(long, default_value_t = 20)]
    anomaly_history: usize,
    /// No backup_anomaly until this many earlier backups are known.
    #[arg(long, default_value_t = 5)]
    anomaly_min_history: usize,
    /// How many scaled MADs from the median is unusual.
    #[arg(long, default_value_t = 6.0)]
    anomaly_mads: f64,
    /// Data added or files changed must also be this many times the median.
    #[arg(long, default_value_t = 4.0)]
    anomaly_growth_factor: f64,
    /// The total size must also have dropped by this fraction of the median.
    #[arg(long, default_value_t = 0.5)]
    anomaly_drop_fraction: f64,
    /// Data added below this many bytes is never unusual.
    #[arg(long, default_value_t = 256 << 20)]
    anomaly_min_added_bytes: i64,
    /// Fewer changed files than this is never unusual.
    #[arg(long, default_value_t = 1000)]
    anomaly_min_changed_files: i64,
    /// A total-size drop of fewer bytes than this is never unusual.
    #[arg(long, default_value_t = 256 << 20)]
    anomaly_min_drop_bytes: i64,
}

impl AnomalyArgs {
    pub fn config(&self) -> rm_alerts::anomaly::AnomalyConfig {
        rm_alerts::anomaly::AnomalyConfig {
            history: self.anomaly_history.max(1),
            min_history: self.anomaly_min_history.max(1),
            mads: self.anomaly_mads,
            growth_factor: self.anomaly_growth_factor,
            drop_fraction: self.anomaly_drop_fraction,
            min_added_bytes: self.anomaly_min_added_bytes,
            min_changed_files: self.anomaly_min_changed_files,
            min_drop_bytes: self.anomaly_min_drop_bytes,
        }
    }
}

#[derive(Debug, clap::Args)]
struct WebArgs {
    /// The certificate (DATA_DIR/web) and, by default, the database live
    /// here; without --creds, the credential authority too.
    #[arg(long, default_value = "/var/lib/restic-manager")]
    data_dir: PathBuf,
    /// The SQLite database (default DATA_DIR/restic-manager.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Bus URL(s), tried in this order: both of the web role's connections
    /// go to the first node that takes them (list the control plane's
    /// first, and operators' requests cross no route); repeat or separate
    /// with commas.
    #[arg(
        long = "nats-url",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    nats_urls: Vec<String>,
    /// The web role's NATS credentials (.creds file) [default: minted
    /// from the credential authority in DATA_DIR/bus].
    #[arg(long)]
    creds: Option<PathBuf>,
    /// Where to listen (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Extra DNS names or addresses for the certificate (issued by the
    /// installation's CA in DATA_DIR/ca; the listen address and loopback
    /// are always in it).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Life of each certificate the CA issues, in seconds; renewed at two
    /// thirds of it without dropping connections [default: 90 days].
    #[arg(long, default_value_t = rm_bus_server::pki::ca::LEAF_LIFE.as_secs())]
    tls_life_secs: u64,
    /// Your own certificate chain (PEM) instead of one issued by the CA;
    /// needs --tls-key. Enrollment then pins this certificate.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Reverse proxies (addresses or CIDR ranges; repeat or separate with
    /// commas) whose X-Forwarded-For names the client for the login
    /// throttle, sessions and the audit log [default: none: the TCP peer
    /// is the client and X-Forwarded-For is ignored].
    #[arg(long = "trusted-proxy", value_delimiter = ',')]
    trusted_proxies: Vec<rm_web::auth::client::Cidr>,
    /// Agent binaries offered at /download/agent/ [default:
    /// /usr/lib/restic-manager/agents if it exists, else this binary's
    /// directory].
    #[arg(long)]
    agent_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct BusArgs {
    /// Address to listen on. Without authentication only loopback is used.
    #[arg(long, default_value = "127.0.0.1:4222")]
    listen: std::net::SocketAddr,
    /// Static nkey users and their permissions (`[[user]]` tables).
    #[arg(long, conflicts_with = "operator_jwt")]
    users: Option<PathBuf>,
    /// Trusted operator JWT (operator mode); needs --account-jwt.
    #[arg(long, requires = "account_jwt")]
    operator_jwt: Option<PathBuf>,
    /// Account JWT to preload (repeat for the system account's).
    #[arg(long, requires = "operator_jwt")]
    account_jwt: Vec<PathBuf>,
    /// Where account JWT updates are kept across restarts (operator mode).
    #[arg(long, requires = "operator_jwt")]
    resolver_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_payload: usize,
    /// Most connections served at once.
    #[arg(long, default_value_t = 65_536)]
    max_connections: usize,
    /// Accept plain (unencrypted) connections although --listen is beyond
    /// loopback; without it such a bus needs --tls-cert.
    #[arg(long)]
    allow_plaintext: bool,
}

#[derive(Debug, Subcommand)]
enum AuthorityCmd {
    /// Create the keys in DATA_DIR/bus and the certificate authority in
    /// DATA_DIR/ca (if missing) and print their public halves and the
    /// fingerprint enrollment commands pin.
    Init {
        #[arg(long, default_value = "/var/lib/restic-manager")]
        data_dir: PathBuf,
    },
    /// Write a server role's NATS credentials (.creds, 0600) minted from
    /// the authority: for roles run on other machines or in containers
    /// (the notifier's `--creds`).
    Creds {
        #[arg(long, default_value = "/var/lib/restic-manager")]
        data_dir: PathBuf,
        /// controlplane, alerts, notifier or web; leafnode (the user a leaf
        /// node connects to the hub with) or system (a system account user,
        /// for a leaf node's system account remote).
        #[arg(long)]
        role: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a certificate for a nats-server (or any bus) from the
    /// installation's CA in DATA_DIR/ca: PEM chain and key (0600) files.
    /// Agents verify a tls:// bus against that CA; nats-server nodes
    /// present it to each other on routes and leaf connections. Renew it
    /// with --renew-if-expiring (the restic-manager-nats-cert timer) and
    /// reload the server.
    BusCert {
        #[arg(long, default_value = "/var/lib/restic-manager")]
        data_dir: PathBuf,
        /// DNS names or addresses agents and roles use to reach the bus
        /// (repeat or separate with commas; loopback is always included).
        #[arg(long = "name", value_delimiter = ',')]
        names: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 90)]
        days: u64,
        /// The certificate chain file to write.
        #[arg(long)]
        cert_out: PathBuf,
        /// The private key file to write (0600).
        #[arg(long)]
        key_out: PathBuf,
        /// Also write the CA certificate here (a nats-server's `ca_file`,
        /// which verifies its route and leaf peers), even when the
        /// certificate is left alone.
        #[arg(long)]
        ca_out: Option<PathBuf>,
        /// Leave a certificate at --cert-out alone unless it is in the last
        /// third of its life (or expired, or unreadable): safe to run daily.
        #[arg(long)]
        renew_if_expiring: bool,
        /// Write the key 0640 (and create its directory 0750) so a
        /// nats-server running as a member of this user's group can read
        /// it.
        #[arg(long)]
        group_readable: bool,
    },
    /// Print the nats-server configuration (operator mode, full resolver)
    /// that trusts this installation's keys: for one server, a node of a
    /// cluster (--cluster, --route) or a leaf node (--leaf-remote).
    /// deploy/README.md shows the commands for a 3-node cluster and a leaf.
    NatsConfig(Box<NatsConfigArgs>),
}

#[derive(Debug, clap::Args)]
struct NatsConfigArgs {
    #[arg(long, default_value = "/var/lib/restic-manager")]
    data_dir: PathBuf,
    /// Where nats-server keeps account JWT updates.
    #[arg(long, default_value = "/var/lib/nats/jwt")]
    resolver_dir: PathBuf,
    /// This server's name (`server_name`; unique in a cluster).
    #[arg(long)]
    server_name: Option<String>,
    /// Where clients (roles and agents) connect, HOST:PORT.
    #[arg(long)]
    listen: Option<String>,
    /// The monitoring endpoint, HOST:PORT.
    #[arg(long)]
    http: Option<String>,
    /// Cluster name: print a `cluster` block (needs --cluster-listen).
    #[arg(long, requires = "cluster_listen")]
    cluster: Option<String>,
    /// Where this node accepts routes from the others, HOST:PORT.
    #[arg(long, requires = "cluster")]
    cluster_listen: Option<String>,
    /// Route URL of a cluster node (nats://HOST:PORT); repeat or separate
    /// with commas. Every node may get the same list, its own included.
    #[arg(long = "route", requires = "cluster", value_delimiter = ',')]
    routes: Vec<String>,
    /// Accept leaf nodes (remote sites) here, HOST:PORT.
    #[arg(long, conflicts_with = "leaf_remote")]
    leafnodes_listen: Option<String>,
    /// Be a leaf node of the hub at these URLs (nats-leaf://HOST:PORT);
    /// repeat or separate with commas. Needs --leaf-creds and
    /// --leaf-system-creds.
    #[arg(
        long = "leaf-remote",
        value_delimiter = ',',
        requires_all = ["leaf_creds", "leaf_system_creds"]
    )]
    leaf_remote: Vec<String>,
    /// The leaf node user's .creds (`authority creds --role leafnode`).
    #[arg(long, requires = "leaf_remote")]
    leaf_creds: Option<PathBuf>,
    /// A system account user's .creds (`authority creds --role system`):
    /// account updates, revocations among them, reach the leaf through it.
    #[arg(long, requires = "leaf_remote")]
    leaf_system_creds: Option<PathBuf>,
    /// This server's certificate chain (`authority bus-cert --cert-out`):
    /// clients are served over TLS, and routes and leaf connections are
    /// mutual TLS against --tls-ca. Needs --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (`authority bus-cert --key-out`).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The installation's CA certificate, DATA_DIR/ca/ca-cert.pem copied to
    /// the server: routes and leaf peers must hold a certificate from it.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Print a configuration without TLS although a listener is beyond
    /// loopback (a private network you trust); without it such a
    /// configuration needs --tls-cert.
    #[arg(long, conflicts_with = "tls_cert")]
    allow_plaintext: bool,
}

impl NatsConfigArgs {
    fn layout(&self) -> server_config::Layout {
        server_config::Layout {
            server_name: self.server_name.clone(),
            listen: self.listen.clone(),
            http: self.http.clone(),
            cluster: self.cluster.as_ref().map(|name| server_config::Cluster {
                name: name.clone(),
                listen: self.cluster_listen.clone().unwrap_or_default(),
                routes: self.routes.clone(),
            }),
            leafnodes_listen: self.leafnodes_listen.clone(),
            leaf: match (&self.leaf_creds, &self.leaf_system_creds) {
                (Some(creds), Some(system)) if !self.leaf_remote.is_empty() => {
                    Some(server_config::LeafRemote {
                        urls: self.leaf_remote.clone(),
                        creds: creds.clone(),
                        system_creds: system.clone(),
                    })
                }
                _ => None,
            },
            tls: match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
                (Some(cert), Some(key), Some(ca)) => Some(server_config::Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                }),
                _ => None,
            },
        }
    }

    /// Refuses a configuration without TLS whose listeners (clients,
    /// routes, leaf nodes) reach beyond loopback, unless
    /// --allow-plaintext; a leaf node's remotes count too.
    fn check_plaintext(&self) -> Result<()> {
        if self.tls_cert.is_some() || self.allow_plaintext {
            return Ok(());
        }
        let beyond_loopback = |hostport: &str| {
            let host = rm_bus_server::pki::ca::url_host(hostport).unwrap_or_default();
            !(host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()))
        };
        let mut open: Vec<String> = Vec::new();
        for (flag, value) in [
            ("--listen", &self.listen),
            ("--cluster-listen", &self.cluster_listen),
            ("--leafnodes-listen", &self.leafnodes_listen),
        ] {
            if let Some(v) = value.as_deref().filter(|v| beyond_loopback(v)) {
                open.push(format!("{flag} {v}"));
            }
        }
        open.extend(
            self.leaf_remote
                .iter()
                .filter(|u| beyond_loopback(u))
                .map(|u| format!("--leaf-remote {u}")),
        );
        if open.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} reach beyond loopback without TLS: give --tls-cert, --tls-key and --tls-ca (authority bus-cert issues the certificate), or --allow-plaintext for a network you trust",
            open.join(", ")
        )
    }
}

pub fn main() -> ExitCode {
    let cli = match parse_layered(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .init();
}

/// Colours in the log only on a terminal (and without `NO_COLOR`): under
/// systemd or with stderr sent to a file, escape codes would land in the
/// journal and the file as text.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn load_authority(data_dir: &std::path::Path) -> Result<Authority> {
    Authority::load_or_create(&data_dir.join("bus"), rm_bus::clock::system())
        .with_context(|| format!("loading the credential authority in {}", data_dir.display()))
}

fn read_trimmed(path: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// Builds the embedded bus configuration from the command line.
fn bus_config(args: &BusArgs) -> Result<rm_bus_server::server::ServerConfig> {
    use rm_bus_server::server::{Auth, OperatorAuth, ServerConfig, tls, users};
    let auth = if let Some(path) = &args.users {
        let list = users::load(path)?;
        tracing::info!(users = list.len(), file = %path.display(), "static nkey users");
        Auth::Users(list)
    } else if let Some(op) = &args.operator_jwt {
        let preload = args
            .account_jwt
            .iter()
            .map(|p| read_trimmed(p))
            .collect::<Result<Vec<_>>>()?;
        Auth::Operator(OperatorAuth {
            operator_jwt: read_trimmed(op)?,
            system_account: None,
            preload,
            resolver_dir: args.resolver_dir.clone(),
        })
    } else {
        Auth::None
    };
    let mut listen = args.listen;
    if matches!(auth, Auth::None) && !listen.ip().is_loopback() {
        tracing::warn!(
            requested = %listen,
            "no authentication configured: listening on loopback only"
        );
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    } else if matches!(auth, Auth::None) {
        tracing::info!(%listen, "no authentication configured: listening on loopback only");
    }
    let mut config = ServerConfig::new(listen, auth);
    config.limits.max_payload = args.max_payload;
    config.limits.max_connections = args.max_connections;
    config.allow_plaintext = args.allow_plaintext;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        rm_bus_server::pki::expiry::warn_at_start(listen, cert);
        config.tls = Some(tls::server_config_from_files(cert, key)?);
    }
    Ok(config)
}

async fn run_bus(args: BusArgs) -> Result<()> {
    let stop = shutdown_signal();
    let server = rm_bus_server::server::Server::start(bus_config(&args)?).await?;
    println!("bus listening on {}", server.url());
    stop.await;
    tracing::info!(counters = ?server.counters(), "shutting down the bus");
    server.shutdown().await;
    Ok(())
}

async fn run_controlplane(args: ControlplaneArgs) -> Result<()> {
    let authority = std::sync::Arc::new(load_authority(&args.data_dir)?);
    let agent_bus_urls = if args.agent_nats_urls.is_empty() {
        args.nats_urls.clone()
    } else {
        args.agent_nats_urls
    };
    let timings = args.limits.apply(rm_controlplane::Timings {
        heartbeat: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
        ..rm_controlplane::Timings::default()
    });
    let server_fingerprint = match args.server_fingerprint {
        Some(fp) => Some(fp),
        None => {
            let dir = rm_bus_server::pki::ca::dir_of(&args.data_dir);
            dir.join(rm_bus_server::pki::ca::CA_CERT)
                .exists()
                .then(|| rm_bus_server::pki::Ca::load(&dir).map(|ca| ca.fingerprint()))
                .transpose()?
        }
    };
    let config = rm_controlplane::Config {
        data_dir: args.data_dir,
        db_path: args.db,
        bus_urls: args.nats_urls,
        agent_bus_urls,
        authority,
        server_url: args.server_url,
        server_fingerprint,
        timings,
        clock: rm_bus::clock::system(),
    };
    rm_controlplane::run(config, shutdown_signal()).await
}

/// A role's bus credentials: from a .creds file, or minted from the
/// credential authority in `data_dir`.
fn role_creds(
    role: &Role,
    creds: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> Result<UserCreds> {
    Ok(match creds {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            UserCreds::from_creds_file(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => {
            let keys = data_dir.join("bus");
            std::fs::create_dir_all(&keys)
                .with_context(|| format!("creating {}", keys.display()))?;
            load_authority(data_dir)?.mint_new_user(&role.name(), role.permissions())?
        }
    })
}

/// The web role's configuration from the command line.
fn web_config(args: WebArgs) -> Result<rm_web::WebConfig> {
    let role = Role::Web;
    let creds = role_creds(&role, args.creds.as_deref(), &args.data_dir)?;
    let mut connect = ConnectSpec::new(String::new(), creds, &role);
    connect.urls = args.nats_urls;
    // in the operator's order, as the control plane's: both connections
    // (live events, requests) on the first node that takes them, not one
    // each at random (stop 54: `web-requests` a route away from the
    // control plane while `web` was elsewhere again)
    connect.retain_order = true;
    connect.retry_on_initial_connect = true;
    // a tls:// bus is trusted as agents trust it (DATA_DIR/ca)
    connect.tls_ca_pem = rm_controlplane::bus_ca_pem(&args.data_dir)?;
    let mut config =
        rm_web::WebConfig::new(args.data_dir, connect, rm_web::Listen::Addr(args.listen));
    config.db_path = args.db;
    config.tls_names = args.tls_names;
    config.tls_life = std::time::Duration::from_secs(args.tls_life_secs.max(1));
    config.tls_files = args.tls_cert.zip(args.tls_key);
    config.agent_dir = args.agent_dir;
    config.auth.trusted_proxies = args.trusted_proxies;
    Ok(config)
}

/// The alerts role's configuration from the command line.
fn alerts_config(args: AlertsArgs) -> Result<rm_alerts::Config> {
    let role = Role::Alerts;
    let creds = role_creds(&role, args.creds.as_deref(), &args.data_dir)?;
    let mut connect = ConnectSpec::new(String::new(), creds, &role);
    connect.urls = args.nats_urls;
    connect.retry_on_initial_connect = true;
    // a tls:// bus is trusted as agents trust it (DATA_DIR/ca)
    connect.tls_ca_pem = rm_controlplane::bus_ca_pem(&args.data_dir)?;
    if let Some(v) = args.events_capacity {
        connect.events_capacity = v.max(1);
    }
    let defaults = rm_alerts::Timings::default();
    let timings = rm_alerts::Timings {
        tick: std::time::Duration::from_secs(args.tick_secs.max(1)),
        deliver: rm_bus::reqack::RetryPolicy {
            attempt_timeout: std::time::Duration::from_millis(args.deliver_timeout_ms.max(1)),
            ..defaults.deliver.clone()
        },
        svc_concurrency: args
            .svc_concurrency
            .unwrap_or(defaults.svc_concurrency)
            .max(1),
        write_batch: args.write_batch.unwrap_or(defaults.write_batch).max(1),
        offline_grace: args.offline.grace(),
        notify_group_from: args.group.notify_group_from,
        ..defaults
    };
    Ok(rm_alerts::Config {
        data_dir: args.data_dir,
        db_path: args.db,
        connect,
        notifier_xkey: args.notifier_xkey,
        ui_base_url: args.ui_url,
        timings,
        anomaly: args.anomaly.config(),
        clock: rm_bus::clock::system(),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Controlplane(args) => runtime()?.block_on(run_controlplane(args)),
        Command::Alerts(args) => {
            let config = alerts_config(args)?;
            runtime()?.block_on(async { rm_alerts::run(config, shutdown_signal()).await })
        }
        Command::Admin(args) => runtime()?.block_on(crate::admin::run(args)),
        Command::Web(args) => {
            let config = web_config(args)?;
            runtime()?.block_on(async { rm_web::run(config, shutdown_signal()).await })
        }
        Command::User(cmd) => runtime()?.block_on(crate::accounts::user(cmd)),
        Command::Token(cmd) => runtime()?.block_on(crate::accounts::token(cmd)),
        Command::Serve(args) => {
            runtime()?.block_on(async { crate::serve::run(*args, shutdown_signal()).await })
        }
        Command::Bus(args) => runtime()?.block_on(run_bus(args)),
        Command::Seed(args) => runtime()?.block_on(crate::seed::run(args)),
        Command::DbVacuum(args) => runtime()?.block_on(crate::accounts::vacuum(&args)),
        Command::Authority(AuthorityCmd::Init { data_dir }) => {
            let a = load_authority(&data_dir)?;
            println!("operator:        {}", a.operator_public_key());
            println!("account:         {}", a.account_public_key());
            println!("signing key:     {}", a.signing_public_key());
            println!("system account:  {}", a.system_account_public_key());
            let ca = rm_web::tls::load_ca(&data_dir)?;
            println!("CA fingerprint:  {}", ca.fingerprint());
            Ok(())
        }
        Command::Authority(AuthorityCmd::Creds {
            data_dir,
            role,
            out,
        }) => {
            let authority = load_authority(&data_dir)?;
            let creds = match role.as_str() {
                "controlplane" => mint_role(&authority, Role::Controlplane)?,
                "alerts" => mint_role(&authority, Role::Alerts)?,
                "notifier" => mint_role(&authority, Role::Notifier)?,
                "web" => mint_role(&authority, Role::Web)?,
                "leafnode" => authority
                    .mint_new_user("leafnode", rm_bus::creds::roles::leafnode_permissions())?,
                "system" => authority.system_user()?,
                other => anyhow::bail!(
                    "--role {other:?}: expected controlplane, alerts, notifier, web, leafnode or system"
                ),
            };
            rm_agent::state::write_durable(&out, creds.to_creds_file().as_bytes(), true)?;
            eprintln!("wrote {} ({role} credentials)", out.display());
            Ok(())
        }
        Command::Authority(AuthorityCmd::BusCert {
            data_dir,
            names,
            days,
            cert_out,
            key_out,
            ca_out,
            renew_if_expiring,
            group_readable,
        }) => {
            let now = std::time::SystemTime::now();
            let ca = rm_web::tls::load_ca(&data_dir)?;
            if let Some(path) = &ca_out {
                write_tls_file(path, ca.cert_pem().as_bytes(), 0o644, group_readable)?;
            }
            if renew_if_expiring {
                match std::fs::read(&cert_out) {
                    Ok(pem) if !rm_bus_server::pki::expiry::due_for_renewal(&pem, now) => {
                        eprintln!(
                            "{} is not in the last third of its life: left alone",
                            cert_out.display()
                        );
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading {}", cert_out.display()));
                    }
                }
            }
            let life = std::time::Duration::from_secs(days.max(1) * 86_400);
            let leaf = ca.issue(&names, life, now)?;
            // the key first, each file replaced whole (renamed into place)
            let key_mode = if group_readable { 0o640 } else { 0o600 };
            write_tls_file(
                &key_out,
                leaf.key_pem().as_bytes(),
                key_mode,
                group_readable,
            )?;
            write_tls_file(
                &cert_out,
                leaf.chain_pem().as_bytes(),
                0o644,
                group_readable,
            )?;
            eprintln!(
                "wrote {} and {} (valid {days} days, CA {})",
                cert_out.display(),
                key_out.display(),
                ca.fingerprint()
            );
            Ok(())
        }
        Command::Authority(AuthorityCmd::NatsConfig(args)) => {
            args.check_plaintext()?;
            let a = load_authority(&args.data_dir)?;
            print!(
                "{}",
                server_config::render_layout(&a, &args.resolver_dir, &args.layout())?
            );
            Ok(())
        }
        Command::ControlplaneBackup(args) => {
            runtime()?.block_on(crate::cpbackup::cmd::backup(args))
        }
        Command::ControlplaneRestore(args) => {
            runtime()?.block_on(crate::cpbackup::cmd::restore(args))
        }
        Command::RecoveryKit(args) => runtime()?.block_on(crate::cpbackup::cmd::kit(args)),
        Command::Notifier(args) => run_notifier(args),
        Command::NotifierXkey { file } => {
            if !file.exists() {
                eprintln!("creating {}", file.display());
            }
            let key = rm_bus::seal::load_or_create_xkey(&file)?;
            println!("{}", key.public_key());
            Ok(())
        }
    }
}

/// Writes a certificate or key file of `authority bus-cert` with `mode`,
/// replaced atomically (written 0600, then given its mode, then renamed
/// into place); with `group_dir` its directory is created 0750 (for a
/// nats-server in the group).
fn write_tls_file(path: &std::path::Path, bytes: &[u8], mode: u32, group_dir: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if group_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        set_mode(dir, 0o750)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.new", name.unwrap_or_default()));
    rm_bus_server::creds::authority::write_private(&tmp, bytes)?;
    set_mode(&tmp, mode)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_: &std::path::Path, _: u32) -> Result<()> {
    Ok(())
}

fn run_notifier(args: NotifierArgs) -> Result<()> {
    let creds_text = std::fs::read_to_string(&args.creds)
        .with_context(|| format!("reading {}", args.creds.display()))?;
    let creds = UserCreds::from_creds_file(&creds_text)
        .with_context(|| format!("parsing {}", args.creds.display()))?;
    let xkey = rm_notifier::config::load_xkey_seed(&args.xkey_seed_file)?;
    let instance = args.name.unwrap_or_else(host_name);

    let mut spec = ConnectSpec::new(String::new(), creds, &Role::Notifier);
    spec.urls = args.nats_urls;
    spec.name = format!("notifier {instance}");
    spec.retry_on_initial_connect = true;
    if let Some(path) = &args.nats_ca {
        spec.tls_ca_pem = Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--nats-ca: reading {}", path.display()))?,
        );
    }
    let mut config = rm_notifier::NotifierConfig::new(spec, xkey);
    config.instance = instance;
    config.attempt_timeout = std::time::Duration::from_millis(args.attempt_timeout_ms);
    config.shutdown_grace = config.attempt_timeout + std::time::Duration::from_secs(1);
    config.max_concurrent = args.max_concurrent;
    config.trusted_senders = args.trusted_sender_xkeys;

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async { rm_notifier::run(config, shutdown_signal()).await })
}

fn mint_role(authority: &Authority, role: Role) -> Result<UserCreds> {
    authority.mint_new_user(&role.name(), role.permissions())
}

/// The machine's name, for naming this copy.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "notifier".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus_args(argv: &[&str]) -> Result<BusArgs, clap::Error> {
        let mut full = vec!["restic-manager", "bus"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full)?.command {
            Command::Bus(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bus_without_auth_listens_on_loopback_only() {
        let args = bus_args(&["--listen", "0.0.0.0:4222"]).unwrap();
        let config = bus_config(&args).unwrap();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.listen.port(), 4222);
        assert!(matches!(config.auth, rm_bus_server::server::Auth::None));
    }

    #[test]
    fn bus_flags_that_need_each_other() {
        assert!(
            bus_args(&["--tls-cert", "c.pem"]).is_err(),
            "cert needs key"
        );
        assert!(
            bus_args(&["--operator-jwt", "op.jwt"]).is_err(),
            "operator needs accounts"
        );
        assert!(
            bus_args(&[
                "--users",
                "u.toml",
                "--operator-jwt",
                "o",
                "--account-jwt",
                "a"
            ])
            .is_err(),
            "users and operator mode exclude each other"
        );
        let dir = tempfile_dir("controlplane");
        let users = dir.join("users.toml");
        let key = rm_bus_server::creds::Authority::generate(rm_bus::clock::system())
            .mint_new_user("u", rm_bus::creds::Permissions::default());
        let public = key.unwrap().key_pair().unwrap().public_key();
        std::fs::write(&users, format!("[[user]]\nnkey = \"{public}\"\n")).unwrap();
        let args = bus_args(&[
            "--listen",
            "0.0.0.0:4222",
            "--users",
            users.to_str().unwrap(),
        ])
        .unwrap();
        let config = bus_config(&args).unwrap();
        assert!(
            !config.listen.ip().is_loopback(),
            "authenticated bus may listen anywhere"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nats_config_cluster_and_leaf_flags_need_their_partners() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["restic-manager", "authority", "nats-config"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        assert!(
            parse(&["--cluster", "rm"]).is_err(),
            "a cluster needs a listen address"
        );
        assert!(
            parse(&["--route", "nats://b:6222"]).is_err(),
            "routes need a cluster"
        );
        assert!(
            parse(&["--leaf-remote", "nats-leaf://hub:7422"]).is_err(),
            "a leaf needs both creds files"
        );
        assert!(
            parse(&[
                "--leafnodes-listen",
                "0.0.0.0:7422",
                "--leaf-remote",
                "nats-leaf://hub:7422",
                "--leaf-creds",
                "l.creds",
                "--leaf-system-creds",
                "s.creds"
            ])
            .is_err(),
            "a leaf does not take leaf nodes itself"
        );
        let cli = parse(&[
            "--cluster",
            "rm",
            "--cluster-listen",
            "0.0.0.0:6222",
            "--route",
            "nats://a:6222,nats://b:6222",
            "--route",
            "nats://c:6222",
        ])
        .unwrap();
        let Command::Authority(AuthorityCmd::NatsConfig(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let cluster = args.layout().cluster.expect("a cluster block");
        assert_eq!(
            cluster.routes,
            vec!["nats://a:6222", "nats://b:6222", "nats://c:6222"]
        );
        assert!(args.layout().leaf.is_none());
        assert!(args.layout().tls.is_none());
    }

    #[test]
    fn nats_config_beyond_loopback_needs_tls_or_allow_plaintext() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["restic-manager", "authority", "nats-config"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Authority(AuthorityCmd::NatsConfig(args)) => args,
                other => panic!("parsed as {other:?}"),
            }
        };
        let cluster = [
            "--listen",
            "127.0.0.1:4222",
            "--cluster",
            "rm",
            "--cluster-listen",
            "0.0.0.0:6222",
        ];
        let err = args(&cluster).check_plaintext().unwrap_err().to_string();
        assert!(err.contains("--cluster-listen 0.0.0.0:6222"), "{err}");
        assert!(!err.contains("--listen 127.0.0.1"), "{err}");
        let leaf = args(&[
            "--leaf-remote",
            "nats-leaf://hub.example.net:7422",
            "--leaf-creds",
            "l.creds",
            "--leaf-system-creds",
            "s.creds",
        ]);
        let err = leaf.check_plaintext().unwrap_err().to_string();
        assert!(
            err.contains("--leaf-remote nats-leaf://hub.example.net:7422"),
            "{err}"
        );
        let mut plain = cluster.to_vec();
        plain.push("--allow-plaintext");
        args(&plain).check_plaintext().unwrap();
        args(&["--listen", "localhost:4222"])
            .check_plaintext()
            .unwrap();
        let mut tls = cluster.to_vec();
        tls.extend([
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
        ]);
        let with_tls = args(&tls);
        with_tls.check_plaintext().unwrap();
        let files = with_tls.layout().tls.expect("a tls block");
        assert_eq!(files.ca, PathBuf::from("ca.pem"));
        let mut missing_ca = cluster.to_vec();
        missing_ca.extend(["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        let mut argv = vec!["restic-manager", "authority", "nats-config"];
        argv.extend_from_slice(&missing_ca);
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "--tls-cert needs --tls-ca"
        );
    }

    #[test]
    fn alerts_args_build_the_role_config() {
        let dir = tempfile_dir("alerts");
        let notifier = nkeys::XKey::new().public_key();
        let cli = Cli::try_parse_from([
            "restic-manager",
            "alerts",
            "--data-dir",
            dir.to_str().unwrap(),
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--notifier-xkey",
            &notifier,
            "--tick-secs",
            "5",
            "--svc-concurrency",
            "8",
            "--events-capacity",
            "16",
            "--offline-alert-after-secs",
            "0",
            "--notify-group-from",
            "0",
        ])
        .unwrap();
        let Command::Alerts(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let config = alerts_config(args).unwrap();
        assert_eq!(config.connect.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(config.connect.name, "alerts");
        assert_eq!(config.notifier_xkey, notifier);
        assert_eq!(config.timings.tick, std::time::Duration::from_secs(5));
        assert_eq!(
            config.timings.deliver.attempt_timeout,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(config.timings.svc_concurrency, 8);
        assert_eq!(config.connect.events_capacity, 16);
        assert_eq!(config.timings.write_batch, 256, "unset: the default");
        assert_eq!(config.timings.offline_grace, std::time::Duration::ZERO);
        assert_eq!(config.timings.notify_group_from, 0);
        assert!(
            Cli::try_parse_from(["restic-manager", "alerts"]).is_err(),
            "the notifier xkey is required"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn controlplane_limits_are_flags_with_the_built_in_defaults() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["restic-manager", "controlplane"];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Controlplane(args) = cli.command else {
                panic!("parsed as {:?}", cli.command);
            };
            args.limits.apply(rm_controlplane::Timings::default())
        };
        let d = rm_controlplane::Timings::default();
        let t = parse(&[]);
        assert_eq!(
            (t.query_timeout, t.refresh_timeout, t.hello_concurrency),
            (d.query_timeout, d.refresh_timeout, d.hello_concurrency)
        );
        let t = parse(&[
            "--query-timeout-secs",
            "30",
            "--refresh-timeout-secs",
            "600",
            "--hello-concurrency",
            "4",
            "--hello-newest-first-ms",
            "250",
            "--result-newest-first-ms",
            "4000",
            "--result-max-wait-ms",
            "9000",
            "--result-queue",
            "40000",
            "--svc-concurrency",
            "8",
            "--seen-flush-secs",
            "10",
            "--seen-flush-rows",
            "2500",
            "--write-batch",
            "64",
            "--results-per-commit",
            "512",
            "--events-capacity",
            "16",
            "--subscription-capacity",
            "1000000",
        ]);
        let secs = std::time::Duration::from_secs;
        assert_eq!(t.query_timeout, secs(30));
        assert_eq!(t.refresh_timeout, secs(600));
        assert_eq!((t.hello_concurrency, t.svc_concurrency), (4, 8));
        assert_eq!(t.hello_newest_first, std::time::Duration::from_millis(250));
        assert_eq!(
            t.result_newest_first,
            std::time::Duration::from_millis(4000)
        );
        assert_eq!((t.seen_flush, t.flush_rows_per_write), (secs(10), 2500));
        assert_eq!((t.ingest_batch, t.events_capacity), (64, 16));
        assert_eq!(t.ingest_commit_results, 512);
        assert_eq!(t.subscription_capacity, 1_000_000);
        assert_eq!(t.ingest_queue, 40_000);
        assert_eq!(t.result_max_wait, std::time::Duration::from_millis(9000));
    }

    #[test]
    fn web_args_build_the_role_config() {
        let dir = tempfile_dir("web");
        let cli = Cli::try_parse_from([
            "restic-manager",
            "web",
            "--data-dir",
            dir.to_str().unwrap(),
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--listen",
            "0.0.0.0:9443",
            "--db",
            "/tmp/x.db",
        ])
        .unwrap();
        let Command::Web(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let config = web_config(args).unwrap();
        assert_eq!(config.connect.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert!(
            config.connect.retain_order,
            "the web role tries --nats-url in the operator's order"
        );
        assert_eq!(config.connect.name, "web");
        assert_eq!(config.db_path, Some(PathBuf::from("/tmp/x.db")));
        assert!(matches!(config.listen, rm_web::Listen::Addr(a) if a.port() == 9443));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_role_option_is_documented_in_configuration_md() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let cmd = rm_agent::layers::apply(Cli::command(), &CONFIG, None).unwrap();
        rm_agent::layers::check_docs(&doc, "server", &rm_agent::layers::markdown(&cmd, &CONFIG))
            .unwrap();
    }

    #[test]
    fn serve_takes_its_options_from_the_file_under_env_and_flags() {
        let dir = tempfile_dir("layered");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            "[serve]\ndata_dir = \"/srv/rm\"\nweb_listen = \"0.0.0.0:9443\"\nlocal_agent = true\nheartbeat_secs = 7\n",
        )
        .unwrap();
        let argv = |extra: &[&str]| -> Vec<std::ffi::OsString> {
            let mut v: Vec<std::ffi::OsString> = vec![
                "restic-manager".into(),
                "serve".into(),
                "--config".into(),
                file.clone().into(),
            ];
            v.extend(extra.iter().map(Into::into));
            v
        };
        let Command::Serve(args) = parse_layered(argv(&[])).unwrap().command else {
            panic!("not serve");
        };
        assert_eq!(args.data_dir, PathBuf::from("/srv/rm"));
        assert_eq!(args.web_listen.port(), 9443);
        assert!(args.local_agent);
        assert_eq!(args.heartbeat_secs, 7);
        assert_eq!(
            args.bus_listen.port(),
            4222,
            "unset keys keep the code default"
        );
        let Command::Serve(args) = parse_layered(argv(&["--heartbeat-secs", "3"]))
            .unwrap()
            .command
        else {
            panic!("not serve");
        };
        assert_eq!(args.heartbeat_secs, 3, "a flag beats the file");
        std::fs::write(&file, "[serve]\nweb_lisen = \"x\"\n").unwrap();
        let e = parse_layered(argv(&[])).unwrap_err().to_string();
        assert!(e.contains("unknown key `web_lisen` in [serve]"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn serve_takes_the_control_planes_writer_limits_from_flags_and_the_file() {
        let dir = tempfile_dir("serve-limits");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            "[serve]\nwrite_batch = 32\nhello_concurrency = 5\nquery_timeout_secs = 40\n",
        )
        .unwrap();
        let serve = |extra: &[&str]| {
            let mut v: Vec<std::ffi::OsString> = vec![
                "restic-manager".into(),
                "serve".into(),
                "--config".into(),
                file.clone().into(),
            ];
            v.extend(extra.iter().map(Into::into));
            let Command::Serve(args) = parse_layered(v).unwrap().command else {
                panic!("not serve");
            };
            args
        };
        let args = serve(&[]);
        let t = args.controlplane_timings();
        let d = rm_controlplane::Timings::default();
        assert_eq!(t.ingest_batch, 32, "from the file");
        assert_eq!(t.hello_concurrency, 5);
        assert_eq!(t.query_timeout, std::time::Duration::from_secs(40));
        assert_eq!(t.svc_concurrency, d.svc_concurrency, "unset: the default");
        assert_eq!(t.heartbeat, std::time::Duration::from_secs(15));
        let args = serve(&[
            "--write-batch",
            "64",
            "--svc-concurrency",
            "8",
            "--seen-flush-secs",
            "10",
            "--events-capacity",
            "16",
            "--refresh-timeout-secs",
            "600",
            "--repo-refresh-hours",
            "2",
            "--offline-alert-after-secs",
            "600",
            "--notify-group-from",
            "20",
        ]);
        let t = args.controlplane_timings();
        assert_eq!(t.ingest_batch, 64, "a flag beats the file");
        assert_eq!((t.svc_concurrency, t.events_capacity), (8, 16));
        assert_eq!(t.seen_flush, std::time::Duration::from_secs(10));
        assert_eq!(t.refresh_timeout, std::time::Duration::from_secs(600));
        assert_eq!(t.health_every, std::time::Duration::from_secs(7200));
        let a = args.alerts_timings();
        assert_eq!(
            (a.write_batch, a.svc_concurrency),
            (64, 8),
            "the alerts role's writer too"
        );
        assert_eq!(a.offline_grace, std::time::Duration::from_secs(600));
        assert_eq!(a.notify_group_from, 20);
        assert_eq!(
            serve(&[]).alerts_timings().offline_grace,
            std::time::Duration::from_secs(180),
            "unset: the default"
        );
        assert_eq!(serve(&[]).alerts_timings().notify_group_from, 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A directory of the test's own: tests of one process run in
    /// parallel, and each removes its directory when it ends.
    fn tempfile_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rm-cli-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
