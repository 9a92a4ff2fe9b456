//! Requests the server answers itself in the system account, the way
//! nats-server's `full` account resolver does:
//!
//! - `$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE` and `$SYS.REQ.CLAIMS.UPDATE`
//!   with an account JWT signed by the trusted operator: applied if not
//!   older than the JWT in force, written to the resolver directory, and
//!   every connected user it no longer admits (revoked, or issued by a
//!   signing key it dropped) is disconnected at once.
//! - `$SYS.REQ.ACCOUNT.<account>.CLAIMS.LOOKUP`: the JWT in force.
//!
//! Only users of the system account reach these subjects: accounts are
//! separate subject spaces.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::Shared;
use super::auth::{AccountJwt, still_valid};

/// Answers `subject` if it is one of the server's own; `None` otherwise.
pub(crate) async fn handle(shared: &Shared, subject: &str, payload: &[u8]) -> Option<String> {
    let op = shared.auth.operator()?;
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["$SYS", "REQ", "CLAIMS", "UPDATE"] => Some(update(shared, None, payload).await),
        ["$SYS", "REQ", "ACCOUNT", acc, "CLAIMS", "UPDATE"] => {
            Some(update(shared, Some(acc), payload).await)
        }
        ["$SYS", "REQ", "ACCOUNT", acc, "CLAIMS", "LOOKUP"] => {
            let account = op.accounts().get(*acc).cloned();
            Some(
                account
                    .and_then(|a| a.jwt())
                    .map(|j| j.token)
                    .unwrap_or_default(),
            )
        }
        _ => None,
    }
}

fn server_json(shared: &Shared) -> serde_json::Value {
    json!({
        "name": shared.server_name,
        "host": shared.host,
        "id": shared.server_id,
        "ver": super::COMPAT_VERSION,
        "seq": shared.next_sys_seq(),
        "jetstream": false,
    })
}

fn error(shared: &Shared, account: &str, code: u16, description: String) -> String {
    tracing::warn!(account, code, %description, "account JWT update refused");
    json!({
        "server": server_json(shared),
        "error": { "account": account, "code": code, "description": description },
    })
    .to_string()
}

async fn update(shared: &Shared, subject_account: Option<&str>, payload: &[u8]) -> String {
    let Some(op) = shared.auth.operator() else {
        return String::new();
    };
    let named = subject_account.unwrap_or("");
    let Ok(token) = std::str::from_utf8(payload).map(str::trim) else {
        return error(
            shared,
            named,
            400,
            "jwt update resulted in error: not UTF-8".into(),
        );
    };
    let claims = match op.verify_account_jwt(token) {
        Ok(c) => c,
        Err(e) => {
            return error(
                shared,
                named,
                400,
                format!("jwt update resulted in error: {e:#}"),
            );
        }
    };
    if subject_account.is_some_and(|a| a != claims.sub) {
        return error(
            shared,
            named,
            400,
            format!(
                "jwt update resulted in error: subject {} does not match the JWT",
                named
            ),
        );
    }
    let name = claims.sub.clone();
    let account = op.account_or_new(&name);
    let current = account.jwt();
    if current.as_ref().is_some_and(|c| c.claims.iat > claims.iat) {
        // Last writer wins only among newer versions, as nats-server.
        tracing::info!(account = %name, "account JWT update older than the one in force; kept the newer");
    } else {
        if let Some(dir) = &op.resolver_dir
            && let Err(e) = persist(dir, &name, token).await
        {
            return error(
                shared,
                &name,
                500,
                format!("jwt update resulted in error: {e:#}"),
            );
        }
        *account.jwt.write().unwrap_or_else(|p| p.into_inner()) = Some(AccountJwt {
            token: token.to_owned(),
            claims,
        });
        let clients: Vec<_> = account
            .clients()
            .values()
            .filter_map(|w| w.upgrade())
            .collect();
        let mut cut = 0;
        for c in clients {
            let verdict = c
                .state()
                .and_then(|s| still_valid(&account, s.user.as_ref()));
            if let Some(reason) = verdict {
                cut += 1;
                tracing::info!(cid = c.id, account = %name, ?reason, "disconnecting user no longer admitted");
                c.close(reason);
            }
        }
        tracing::info!(account = %name, disconnected = cut, "account JWT updated");
    }
    json!({
        "server": server_json(shared),
        "data": { "account": name, "code": 200, "message": "jwt updated" },
    })
    .to_string()
}

/// Writes `<dir>/<account>.jwt` atomically.
pub(crate) async fn persist(dir: &Path, account: &str, token: &str) -> Result<()> {
    let path = dir.join(format!("{account}.jwt"));
    let token = token.to_owned();
    tokio::task::spawn_blocking(move || {
        crate::creds::authority::write_private(&path, token.as_bytes())
    })
    .await
    .context("resolver write task")?
}
