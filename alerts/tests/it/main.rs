//! Integration tests of the alerts role over a real bus, with real
//! notifiers and real HTTP receivers.

mod delivery;
mod rules;
mod support;
mod writer;
mod writes;
