//! A connected test client and the connection events it saw.

use std::time::Duration;

use anyhow::{Result, bail};
use async_nats::{Client, Event};
use rm_bus::connect::Events;
use rm_bus::creds::UserCreds;

/// A client connected as some role, with its credentials and events.
pub struct TestClient {
    pub client: Client,
    pub events: Events,
    pub creds: UserCreds,
}

impl std::ops::Deref for TestClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestClient {
    /// The public nkey of this client's user.
    pub fn public_key(&self) -> String {
        self.creds
            .key_pair()
            .map(|k| k.public_key())
            .unwrap_or_default()
    }

    /// Waits for a server error (`-ERR '...'`) whose text contains
    /// `needle`; returns the full text. Other events are skipped.
    pub async fn expect_server_error(&mut self, needle: &str, within: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => bail!("event stream closed while waiting for {needle:?}"),
                Err(_) => bail!("no server error containing {needle:?} within {within:?}"),
            };
            if let Event::ServerError(err) = &event {
                let text = err.to_string();
                if text.contains(needle) {
                    return Ok(text);
                }
            }
        }
    }

    /// Waits for an event matching `pred`.
    pub async fn expect_event(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return Ok(e),
                Ok(Some(_)) => continue,
                Ok(None) => bail!("event stream closed while waiting for {what}"),
                Err(_) => bail!("no {what} within {within:?}"),
            }
        }
    }

    /// Every connection event seen so far (disconnects, slow consumers,
    /// server errors), without waiting, for failure messages.
    pub fn drain_events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e.to_string());
        }
        out
    }

    /// Collects the server errors seen so far without waiting.
    pub fn drain_server_errors(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            if let Event::ServerError(err) = e {
                out.push(err.to_string());
            }
        }
        out
    }
}
