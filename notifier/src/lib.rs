//! The notifier role: a stateless delivery worker.
//!
//! Any number of copies, on any machines, join one queue group on
//! `rm.svc.notifier.deliver`. Each request is one attempt at one delivery:
//! open the channel definition sealed to the notifier role's xkey, send an
//! ntfy JSON publish or a signed webhook, and reply with the outcome
//! (delivered / retryable / failed, HTTP status, latency, error). The alerts
//! role owns retries, the outbox and the delivery log; the notifier keeps no
//! state and needs no configuration beyond its bus credentials and xkey.
//!
//! - [`config`]: what a notifier needs to run.
//! - [`worker`]: the bus side: subscription, concurrency, replies, shutdown.
//! - [`http`]: one HTTP attempt and how its result is classified.
//! - [`ntfy`]: the ntfy JSON publish.
//! - [`webhook`]: the Standard Webhooks request and signature.

pub mod config;
pub mod http;
pub mod ntfy;
pub mod webhook;
pub mod worker;

pub use config::NotifierConfig;
pub use worker::{Notifier, run};
