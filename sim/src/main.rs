//! `restic-manager-sim`: enroll simulated agents in bulk, then run them.
//! `run` takes commands on stdin (one per line) and answers each with one
//! JSON line on stdout: `stats`, `cpmetrics`, `kill N`, `offline`, `burst K`,
//! `progress N [id,...]` (N progress messages at 20/s, from random agents
//! or from random ones of the hosts named), `rows K` (the host ids of the
//! first K connected agents), `adds FROM_MS TO_MS`, `silences HOST...`
//! (those of the hosts named this process runs, each with its agent's
//! heartbeat silences of more than two periods), `quit`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rm_sim::agent::Behaviour;
use rm_sim::fleet::Fleet;
use rm_sim::observe::Observer;
use rm_sim::ops;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "restic-manager-sim",
    about = "Simulated agents for capacity benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Add and enroll hosts through the control plane's service verbs (as
    /// the web role forwards them); append their identities to `--out`.
    Enroll {
        #[arg(long = "nats-url")]
        nats_url: String,
        /// The web role's .creds file (`restic-manager authority creds --role web`).
        #[arg(long)]
        operator_creds: PathBuf,
        #[arg(long)]
        count: usize,
        /// Numbering starts here (host names `<prefix>-<n>`).
        #[arg(long, default_value_t = 0)]
        start: usize,
        #[arg(long, default_value = "sim")]
        prefix: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Bench only: add and enroll hosts straight into a control plane's
    /// database and mint their JWTs with its authority (the control plane
    /// must not be running); append their identities to `--out`.
    EnrollBulk {
        /// The installation's data directory (keys in `bus/`, the database).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        start: usize,
        #[arg(long, default_value = "sim")]
        prefix: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run simulated agents from an identities file until `quit` or EOF.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long = "nats-url")]
    nats_url: String,
    /// Identities written by `enroll`.
    #[arg(long)]
    ids: PathBuf,
    /// Use identities `from .. from+count` of the file.
    #[arg(long, default_value_t = 0)]
    from: usize,
    #[arg(long)]
    count: usize,
    /// New connections per second during ramp-up.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    #[arg(long, default_value_t = 15)]
    heartbeat_secs: u64,
    /// Each agent's PING period (default: the real agent's).
    #[arg(long)]
    ping_secs: Option<u64>,
    /// How long a dispatched or scheduled job "runs".
    #[arg(long, default_value_t = 2000)]
    job_ms: u64,
    /// Run each backup schedule of an agent's config this often.
    #[arg(long)]
    schedule_every_secs: Option<u64>,
    /// Outboxes (one directory per agent; use a tmpfs).
    #[arg(long)]
    outbox_dir: PathBuf,
    /// The web role's .creds file: observe heartbeats and offline events,
    /// and add hosts as operators.
    #[arg(long)]
    operator_creds: Option<PathBuf>,
    /// Observe only these hosts' heartbeats (one host id per line), one
    /// subscription each, instead of every heartbeat. A fleet-wide
    /// subscriber costs the bus as much as the control plane's own
    /// heartbeat subscription; a sample spread over the fleet's nodes
    /// measures the bus's lag without it.
    #[arg(long)]
    observe_hosts: Option<PathBuf>,
    /// With --operator-creds: observe neither heartbeats nor offline
    /// events (a process that only adds hosts as operators: a fleet-wide
    /// heartbeat subscriber of its own would double what the bus sends
    /// the control plane's node).
    #[arg(long)]
    no_observe: bool,
    /// Operators add this many hosts a second while the fleet runs.
    #[arg(long, default_value_t = 0.0)]
    host_adds_per_sec: f64,
    /// Entries of every directory an `ls` query (the restore wizard's
    /// browse step) lists; 0 answers with an empty directory.
    #[arg(long, default_value_t = 0)]
    ls_entries: usize,
    /// The control plane's database, for `burst` (bench only).
    #[arg(long)]
    db: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Enroll {
                nats_url,
                operator_creds,
                count,
                start,
                prefix,
                concurrency,
                out,
            } => {
                let client = ops::connect(&nats_url, read_creds(&operator_creds)?).await?;
                let t = std::time::Instant::now();
                let ids = ops::enroll_bulk(&client, &prefix, start, count, concurrency).await?;
                rm_sim::ident::append(&out, &ids)?;
                println!(
                    "{}",
                    serde_json::json!({"enrolled": ids.len(), "secs": t.elapsed().as_secs_f64()})
                );
                Ok(())
            }
            Cmd::EnrollBulk {
                data_dir,
                count,
                start,
                prefix,
                out,
            } => {
                let t = std::time::Instant::now();
                let ids = rm_sim::bulk::enroll(&data_dir, &prefix, start, count).await?;
                rm_sim::ident::append(&out, &ids)?;
                println!(
                    "{}",
                    serde_json::json!({"enrolled": ids.len(), "secs": t.elapsed().as_secs_f64()})
                );
                Ok(())
            }
            Cmd::Run(args) => run(args).await,
        }
    })
}

/// Host ids, one per line (blank lines skipped).
fn read_hosts(path: &std::path::Path) -> Result<Vec<rm_bus::HostId>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            rm_bus::HostId::parse(l)
                .map_err(|e| anyhow::anyhow!("{}: host id {l:?}: {e}", path.display()))
        })
        .collect()
}

fn read_creds(path: &std::path::Path) -> Result<rm_bus::creds::UserCreds> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    rm_bus::creds::UserCreds::from_creds_file(&text)
}

async fn run(a: RunArgs) -> Result<()> {
    let all = rm_sim::ident::read(&a.ids)?;
    let Some(ids) = all.get(a.from..a.from + a.count) else {
        bail!(
            "{} holds {} identities, not {}..{}",
            a.ids.display(),
            all.len(),
            a.from,
            a.from + a.count
        );
    };
    let mut b = Behaviour::new(a.nats_url.clone(), a.outbox_dir.clone());
    b.heartbeat = Duration::from_secs(a.heartbeat_secs);
    if let Some(s) = a.ping_secs {
        b.ping_interval = Duration::from_secs(s.max(1));
    }
    b.job_time = Duration::from_millis(a.job_ms);
    b.schedule_every = a.schedule_every_secs.map(Duration::from_secs);
    b.ls_entries = a.ls_entries;
    let fleet = Arc::new(Fleet::new(b));
    let stop = CancellationToken::new();
    let observer = Arc::new(Observer::default());
    // a heartbeat half a period late: worth naming
    let hb_gap_over = a.heartbeat_secs * 1500;
    let churn = Arc::new(ops::Churn::default());
    let mut operator = None;
    if let Some(creds) = &a.operator_creds {
        if !a.no_observe {
            let obs_client = ops::connect(&a.nats_url, read_creds(creds)?).await?;
            let sample = a.observe_hosts.as_deref().map(read_hosts).transpose()?;
            tokio::spawn(observer.clone().run(obs_client, sample));
        }
        let op_client = ops::connect(&a.nats_url, read_creds(creds)?).await?;
        operator = Some(op_client.clone());
        tokio::spawn(ops::churn(
            op_client,
            a.host_adds_per_sec,
            churn.clone(),
            stop.clone(),
        ));
    }
    let took = fleet.ramp(ids, a.rate).await;
    say(serde_json::json!({"ready": fleet.counters.snapshot(), "ramp_secs": took.as_secs_f64()}));

    // stdin on a thread of its own (tokio's io-std stays off the workspace)
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if let Some(hosts) = line.strip_prefix("silences ") {
            // `silences HOST...`: those of these hosts this process runs,
            // with their agents' own silences (the bench's false offline
            // hosts, told by who was silent)
            let hosts: std::collections::HashSet<&str> = hosts.split_whitespace().collect();
            say(serde_json::json!({"silences": fleet.silences(&hosts).await}));
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next().map(str::parse::<usize>)) {
            (Some("stats"), _) => {
                let lags = observer.take_lags();
                say(serde_json::json!({
                    "counters": fleet.counters.snapshot(),
                    "operators": churn.snapshot(),
                    "hb_lag_ms": {
                        "n": lags.len(),
                        "p50": rm_sim::percentile(&lags, 50.0),
                        "p99": rm_sim::percentile(&lags, 99.0),
                        "max": lags.last(),
                    },
                    "offline_events": observer.offline_events().len(),
                    "hb_send_gaps": fleet.heartbeat_gaps(hb_gap_over, 20).await,
                    "at_ms": rm_sim::now_ms(),
                }));
            }
            (Some("kill"), Some(Ok(n))) => {
                let at = rm_sim::now_ms();
                let hosts = fleet.kill(n).await;
                say(serde_json::json!({"killed": hosts, "at_ms": at}));
            }
            (Some("offline"), _) => {
                say(serde_json::json!({
                    "offline": observer.offline_events(),
                    "heard": observer.offline_heard(),
                }));
            }
            (Some("burst"), Some(Ok(k))) => {
                let Some(db) = &a.db else {
                    say(serde_json::json!({"error": "burst needs --db"}));
                    continue;
                };
                match fleet.burst(db, k).await {
                    Ok((acked, took)) => {
                        // the results' span in wall time (the setup before it
                        // is the bench's own writes), for `adds` elsewhere
                        let to = rm_sim::now_ms();
                        let from = to - i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
                        say(serde_json::json!({
                            "burst_acked": acked,
                            "secs": took.as_secs_f64(),
                            "per_sec": acked as f64 / took.as_secs_f64().max(1e-9),
                            "sent_from_ms": from,
                            "sent_to_ms": to,
                        }));
                    }
                    Err(e) => say(serde_json::json!({"error": format!("{e:#}")})),
                }
            }
            (Some("cpmetrics"), _) => match &operator {
                Some(op) => match ops::call::<_, serde_json::Value>(
                    op,
                    rm_controlplane::api::METRICS,
                    serde_json::json!({}),
                )
                .await
                {
                    Ok(m) => say(serde_json::json!({"cp_metrics": m, "at_ms": rm_sim::now_ms()})),
                    Err(e) => say(serde_json::json!({"error": format!("{e:#}")})),
                },
                None => say(serde_json::json!({"error": "cpmetrics needs --operator-creds"})),
            },
            (Some("adds"), Some(Ok(from))) => {
                // `adds FROM_MS TO_MS`: this process's host adds sent then
                let from = i64::try_from(from).unwrap_or(i64::MAX);
                match words.next().map(str::parse::<i64>) {
                    Some(Ok(to)) => say(serde_json::json!({"adds": churn.window(from, to)})),
                    _ => say(serde_json::json!({"error": "adds FROM_MS TO_MS"})),
                }
            }
            (Some("rows"), Some(Ok(k))) => {
                say(serde_json::json!({"hosts": fleet.hosts(k).await}));
            }
            (Some("progress"), Some(Ok(n))) => {
                // `progress N id1,id2,...`: from those hosts' agents only
                let among: Option<std::collections::HashSet<String>> = words
                    .next()
                    .map(|l| l.split(',').map(str::to_owned).collect());
                let sent = fleet.progress_probe(n, 20.0, among.as_ref()).await;
                say(serde_json::json!({"progress_sent": sent, "at_ms": rm_sim::now_ms()}));
            }
            (Some("quit"), _) => break,
            _ => say(serde_json::json!({"error": format!("unknown command {line:?}")})),
        }
    }
    stop.cancel();
    say(serde_json::json!({"final": fleet.counters.snapshot()}));
    Ok(())
}

fn say(v: serde_json::Value) {
    println!("{v}");
}
