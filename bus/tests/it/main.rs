//! Integration tests of the bus contract against a real bus (the one
//! `RM_TEST_BUS` names; credential tests always include nats-server 2.15).

mod capacity;
mod conformance;
mod creds;
mod embedded;
mod nats_py;
mod parser;
mod reqack;
mod support;
mod tls;
