//! Command-line interface of the `restic-manager` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rm_bus::creds::{Authority, server_config};

#[derive(Debug, Parser)]
#[command(
    name = "restic-manager",
    version,
    about = "A single pane of glass for restic backups across a fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Credential authority: operator, account and signing keys.
    #[command(subcommand)]
    Authority(AuthorityCmd),
}

#[derive(Debug, Subcommand)]
enum AuthorityCmd {
    /// Create the keys in DATA_DIR/bus (if missing) and print their public halves.
    Init {
        #[arg(long, default_value = "/var/lib/restic-manager")]
        data_dir: PathBuf,
    },
    /// Print the nats-server configuration (operator mode, full resolver)
    /// that trusts this installation's keys.
    NatsConfig {
        #[arg(long, default_value = "/var/lib/restic-manager")]
        data_dir: PathBuf,
        /// Where nats-server keeps account JWT updates.
        #[arg(long, default_value = "/var/lib/nats/jwt")]
        resolver_dir: PathBuf,
    },
}

pub fn main() -> ExitCode {
    init_tracing();
    match run(Cli::parse()) {
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
        .init();
}

fn load_authority(data_dir: &std::path::Path) -> Result<Authority> {
    Authority::load_or_create(&data_dir.join("bus"), rm_bus::clock::system())
        .with_context(|| format!("loading the credential authority in {}", data_dir.display()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Authority(AuthorityCmd::Init { data_dir }) => {
            let a = load_authority(&data_dir)?;
            println!("operator:        {}", a.operator_public_key());
            println!("account:         {}", a.account_public_key());
            println!("signing key:     {}", a.signing_public_key());
            println!("system account:  {}", a.system_account_public_key());
            Ok(())
        }
        Command::Authority(AuthorityCmd::NatsConfig {
            data_dir,
            resolver_dir,
        }) => {
            let a = load_authority(&data_dir)?;
            print!("{}", server_config::render(&a, &resolver_dir)?);
            Ok(())
        }
    }
}
