//! `restic-manager`: the server binary. Argument parsing and wiring only;
//! every role lives in its own crate.

mod accounts;
mod admin;
mod cli;
mod cpbackup;
mod demo;
mod local_agent;
mod seed;
mod serve;

fn main() -> std::process::ExitCode {
    cli::main()
}
