//! `restic-manager-agent`: argument parsing and wiring only; everything
//! lives in the `rm_agent` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
#[cfg(test)]
use clap::CommandFactory;
use clap::{Parser, Subcommand};
use rm_agent::enroll::Fingerprint;
use rm_agent::service::{self, ServiceSpec};
use rm_agent::state::StateDir;
use rm_agent::{Settings, vitals};

#[derive(Parser)]
#[command(
    name = "restic-manager-agent",
    version,
    about = "Runs restic backups for restic-manager on this host"
)]
struct Cli {
    /// Configuration file (TOML: `state_dir`, `restic` at the top, a
    /// `[run]` table) [default: /etc/restic-manager/agent.toml when it
    /// exists]. Flags override environment variables, which override it.
    #[arg(long, global = true, env = "RM_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// State directory: keys, JWT, cached config, job journal, outbox.
    #[arg(long, env = "RM_AGENT_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// The restic binary.
    #[arg(long, env = "RM_RESTIC_BIN", default_value = "restic", global = true)]
    restic: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll this host with a one-time token from the operator.
    Enroll {
        /// The web service's URL (https://...).
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
        /// The web certificate's SHA-256 fingerprint (sha256:...).
        #[arg(long)]
        fingerprint: String,
        /// Name to report instead of the machine's host name.
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Run in the foreground until SIGTERM / Ctrl-C.
    Run {
        /// Connect to these bus URLs instead of the enrolled ones, tried in
        /// this order (the nearest server first); repeat or separate with
        /// commas.
        #[arg(long = "bus-url", value_delimiter = ',')]
        bus_urls: Vec<String>,
        /// Heartbeat interval in seconds (the config may override it).
        #[arg(long)]
        heartbeat_secs: Option<u64>,
        /// Seconds between this agent's PINGs to its bus node while it
        /// hears nothing from it (60 unless set); a connection that died
        /// silently is dropped and remade after about three. Longer spares
        /// the bus nodes a PING and a PONG per agent (17 % of their CPU at
        /// 60 s with 30,000 agents, docs/benchmarks.md) but finds a dead
        /// connection later: beyond 60 s, after the host has been reported
        /// offline.
        #[arg(long)]
        bus_ping_secs: Option<u64>,
        /// Run under the Windows Service Control Manager (what `install`
        /// registers on Windows).
        #[arg(long, hide = true)]
        windows_service: bool,
    },
    /// Install and start the system service (systemd on Linux).
    Install {
        /// Where to write the unit.
        #[arg(long, default_value = service::UNIT_DIR)]
        unit_dir: PathBuf,
        /// Only write the unit; do not call systemctl.
        #[arg(long)]
        no_systemctl: bool,
    },
    /// Stop and remove the system service (the state directory stays).
    Uninstall {
        #[arg(long, default_value = service::UNIT_DIR)]
        unit_dir: PathBuf,
        #[arg(long)]
        no_systemctl: bool,
    },
    /// Show enrollment, config, jobs and the outbox.
    Status,
}

/// What the configuration file and the environment can set
/// (docs/configuration.md).
const CONFIG: rm_agent::layers::Spec = rm_agent::layers::Spec {
    prefix: "RM_AGENT_",
    sections: &["run"],
    config_flag: "config",
    default_file: "/etc/restic-manager/agent.toml",
};

/// Parses the command line over the configuration file and environment.
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

fn main() -> ExitCode {
    let cli = match parse_layered(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // colours only on a terminal: as a service (systemd, Windows) stderr
    // goes to a journal or a file, where escape codes land as text
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<()> {
    let state_dir = cli.state_dir.unwrap_or_else(rm_agent::state::default_dir);
    match cli.command {
        Cmd::Enroll {
            server,
            token,
            fingerprint,
            hostname,
        } => {
            let pin: Fingerprint = fingerprint.parse()?;
            let state = StateDir::open(&state_dir)?;
            let hostname = hostname.unwrap_or_else(vitals::hostname);
            let now = rm_bus::clock::system();
            let id = runtime()?.block_on(rm_agent::enroll::enroll(
                &state,
                &server,
                &token,
                &pin,
                &hostname,
                now.now_ms(),
            ))?;
            println!(
                "enrolled as host {} (state in {})",
                id.host_id,
                state_dir.display()
            );
            println!(
                "start it with: restic-manager-agent install   (or: restic-manager-agent run)"
            );
            Ok(())
        }
        Cmd::Run {
            bus_urls,
            heartbeat_secs,
            bus_ping_secs,
            windows_service,
        } => {
            let mut settings = Settings::new(state_dir);
            settings.restic_bin = cli.restic;
            if !bus_urls.is_empty() {
                settings.bus_urls = Some(bus_urls);
            }
            if let Some(s) = heartbeat_secs {
                settings.timings.heartbeat = std::time::Duration::from_secs(s.max(1));
            }
            if let Some(s) = bus_ping_secs {
                settings.timings.ping_interval = std::time::Duration::from_secs(s.max(1));
            }
            #[cfg(windows)]
            if windows_service {
                return rm_agent::winservice::run_as_service(settings);
            }
            #[cfg(not(windows))]
            if windows_service {
                anyhow::bail!("--windows-service exists only on Windows");
            }
            runtime()?.block_on(async { rm_agent::run(settings, rm_bus::shutdown::signal()).await })
        }
        Cmd::Install {
            unit_dir,
            no_systemctl,
        } => {
            let spec = ServiceSpec {
                exe: std::env::current_exe().context("locating this binary")?,
                state_dir,
                restic_bin: cli.restic,
            };
            #[cfg(windows)]
            {
                let _ = (unit_dir, no_systemctl);
                service::install_windows(&spec)
            }
            #[cfg(not(windows))]
            {
                let path = service::install_systemd(&spec, &unit_dir, !no_systemctl)?;
                println!("installed {}", path.display());
                Ok(())
            }
        }
        Cmd::Uninstall {
            unit_dir,
            no_systemctl,
        } => {
            #[cfg(windows)]
            {
                let _ = (unit_dir, no_systemctl);
                service::uninstall_windows()
            }
            #[cfg(not(windows))]
            service::uninstall_systemd(&unit_dir, !no_systemctl)
        }
        Cmd::Status => {
            let state = StateDir::open(&state_dir)?;
            print!("{}", rm_agent::status::report(&state)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_option_is_documented_in_configuration_md() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let cmd = rm_agent::layers::apply(Cli::command(), &CONFIG, None).unwrap();
        rm_agent::layers::check_docs(&doc, "agent", &rm_agent::layers::markdown(&cmd, &CONFIG))
            .unwrap();
    }
}
