//! Test harness shared by every crate.
//!
//! [`TestBus::start`] brings up a bus on 127.0.0.1 with a free port and
//! this installation's credential model (operator mode): our embedded
//! server or a real nats-server, chosen by `RM_TEST_BUS=embedded|nats-server`.
//! Helpers connect clients for any role or a simulated agent. Everything
//! started is stopped on drop. [`svc_call`] makes service requests the
//! way the web role does.

mod bus;
mod client;
mod paths;
pub mod statements;
mod svc;

pub use bus::{BusKind, BusOptions, Tap, TestBus};
pub use client::TestClient;
pub use paths::{nats_server_bin, python_bin, workspace_root};
pub use svc::svc_call;
