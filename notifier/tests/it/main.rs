//! Integration tests of the notifier: real notifiers (`rm_notifier`) over a
//! real bus (nats-server in operator mode), real HTTP receivers on
//! 127.0.0.1, requests sent as the alerts role.

mod delivery;
mod robustness;
mod support;
