//! Pushing the account JWT to the bus (nats-server's `full` resolver and
//! the embedded bus take updates the same way), and confirming it applied.
//!
//! A 200 reply is not proof: servers apply updates last-writer-wins and
//! answer 200 even to a JWT they ignore, so the push is confirmed with a
//! lookup that must return exactly the JWT sent.

use anyhow::{Context, Result, bail};
use async_nats::Client;

use super::authority::Authority;
use rm_bus::subject::sys;

/// Pushes `authority`'s current account JWT through `system` (a connection
/// of a system-account user) and confirms the bus serves it.
pub async fn push_account(system: &Client, authority: &Authority) -> Result<()> {
    let jwt = authority.account_jwt()?;
    let account = authority.account_public_key();
    let reply = system
        .request(sys::claims_update(&account), jwt.clone().into())
        .await
        .context("account JWT update request")?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).with_context(|| {
        format!(
            "account JWT update reply is not JSON: {:?}",
            String::from_utf8_lossy(&reply.payload)
        )
    })?;
    if v["data"]["code"] != 200 {
        bail!("account JWT update refused: {v}");
    }
    let lookup = system
        .request(sys::claims_lookup(&account), "".into())
        .await
        .context("account JWT lookup request")?;
    if lookup.payload.as_ref() != jwt.as_bytes() {
        bail!(
            "the bus did not apply the account update; it serves {:?}",
            String::from_utf8_lossy(&lookup.payload)
        );
    }
    Ok(())
}
