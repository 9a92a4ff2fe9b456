//! Hosts and enrollment: adding a host issues a one-time token (stored
//! hashed, expiring, single use) and the command for the endpoint; the
//! agent trades the token and its public keys for a JWT; revoking a host
//! revokes its JWT on the bus at once.

use std::sync::Arc;

use anyhow::Context;
use data_encoding::{BASE32_NOPAD, HEXLOWER};
use nkeys::{KeyPair, XKey};
use rm_bus::HostId;
use rm_bus::creds::Role;
use rm_bus::msg::{Actor, EnrollReply, EnrollRequest, PROTOCOL_VERSION};
use rm_bus::subject::Event;
use rm_bus_server::creds::authority::UserSpec;
use rm_store::{enroll as tokens, hosts};
use sha2::{Digest, Sha256};

use crate::api::{
    Done, HostAdd, HostEnrollment, HostRef, HostTokenRequest, SealedEnroll, SealedEnrollment,
};
use crate::svc::{Fail, Outcome};
use crate::{Cp, audit};

/// SHA-256 of a token, hex: what the database keeps.
pub(crate) fn token_hash(token: &str) -> String {
    HEXLOWER.encode(&Sha256::digest(token.trim().as_bytes()))
}

fn new_token() -> String {
    use rand::RngCore;
    let mut buf = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut buf);
    BASE32_NOPAD.encode(&buf).to_ascii_lowercase()
}

fn check_name(name: &str) -> Outcome<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Fail::invalid(
            "host name must be 1 to 100 printable characters",
        ));
    }
    Ok(name)
}

fn command(cp: &Cp, token: &str) -> String {
    let mut cmd = format!(
        "restic-manager-agent enroll --server {} --token {token}",
        cp.server_url
    );
    if let Some(fp) = &cp.server_fingerprint {
        cmd.push_str(&format!(" --fingerprint {fp}"));
    }
    cmd
}

async fn issue_token(cp: &Cp, conn: &mut rm_store::Conn, host_id: &str) -> Outcome<(String, i64)> {
    let now = cp.now();
    let expires = now + i64::try_from(cp.t.token_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let token = new_token();
    tokens::invalidate_for_host(&mut *conn, host_id, now).await?;
    tokens::insert(conn, &token_hash(&token), host_id, now, expires).await?;
    Ok((token, expires))
}

/// The token and command sealed to the asker: never in clear on the bus.
fn sealed_reply(cp: &Cp, reply_xkey: &str, e: &HostEnrollment) -> Outcome<SealedEnrollment> {
    SealedEnrollment::seal(e, &cp.xkey, reply_xkey).map_err(|e| {
        Fail::invalid(format!(
            "reply_xkey must be the asker's public xkey (the token is only sent sealed): {e}"
        ))
    })
}

fn check_reply_xkey(reply_xkey: &str) -> Outcome<()> {
    XKey::from_public_key(reply_xkey).map(|_| ()).map_err(|e| {
        Fail::invalid(format!(
            "reply_xkey must be the asker's public xkey (the token is only sent sealed): {e}"
        ))
    })
}

pub(crate) async fn host_add(
    cp: &Arc<Cp>,
    actor: &Actor,
    req: HostAdd,
) -> Outcome<SealedEnrollment> {
    let name = check_name(&req.name)?;
    check_reply_xkey(&req.reply_xkey)?;
    let id = HostId::generate();
    let now = cp.now();
    let (c, actor, host, name) = (cp.clone(), actor.clone(), id.clone(), name.to_owned());
    let (token, expires_at) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                hosts::insert(&mut *tx, host.as_str(), &name, &actor.name, now).await?;
                let issued = issue_token(&c, &mut *tx, host.as_str()).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "host.add",
                    ("host", host.as_str()),
                    Some(serde_json::json!({"name": name})),
                )
                .await?;
                Ok(issued)
            })
        })
        .await?;
    cp.event(Event::HostChanged, Some(id.as_str()), None, None)
        .await;
    let e = HostEnrollment {
        command: command(cp, &token),
        host_id: id.to_string(),
        token,
        expires_at,
    };
    sealed_reply(cp, &req.reply_xkey, &e)
}

pub(crate) async fn host_token(
    cp: &Arc<Cp>,
    actor: &Actor,
    req: HostTokenRequest,
) -> Outcome<SealedEnrollment> {
    check_reply_xkey(&req.reply_xkey)?;
    let now = cp.now();
    let (c, actor, host_id) = (cp.clone(), actor.clone(), req.host_id.clone());
    let (host, token, expires_at) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let host = hosts::get(&mut *tx, &host_id).await?;
                if host.status()? == hosts::HostStatus::Revoked {
                    return Err(Fail::conflict(
                        "this host was revoked; add it again as a new host",
                    ));
                }
                let (token, expires_at) = issue_token(&c, &mut *tx, &host.id).await?;
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "host.token",
                    ("host", &host.id),
                    None,
                )
                .await?;
                Ok((host, token, expires_at))
            })
        })
        .await?;
    let e = HostEnrollment {
        command: command(cp, &token),
        host_id: host.id,
        token,
        expires_at,
    };
    sealed_reply(cp, &req.reply_xkey, &e)
}

/// Revokes `nkey` on the bus: records it and pushes the account JWT.
pub(crate) async fn revoke_on_bus(cp: &Cp, nkey: &str) -> anyhow::Result<()> {
    cp.authority.revoke(nkey)?;
    rm_bus_server::creds::push::push_account(&cp.system, &cp.authority)
        .await
        .context("pushing the revocation to the bus")
}

pub(crate) async fn host_revoke(cp: &Arc<Cp>, actor: &Actor, req: HostRef) -> Outcome<Done> {
    let now = cp.now();
    let (actor, host_id) = (actor.clone(), req.host_id.clone());
    let nkey = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let nkey = hosts::set_revoked(&mut *tx, &host_id, now).await?;
                // Jobs that never reached the agent will not run now.
                for job in rm_store::jobs::queued_for(&mut *tx, &host_id).await? {
                    rm_store::jobs::request_cancel(&mut *tx, &job.id, now).await?;
                }
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "host.revoke",
                    ("host", &host_id),
                    None,
                )
                .await?;
                Ok(nkey)
            })
        })
        .await?;
    if let Some(nkey) = nkey {
        revoke_on_bus(cp, &nkey).await.map_err(|e| {
            Fail::unavailable(format!(
                "the host is revoked in the database, but the bus did not take the revocation ({e:#}); it is retried at the next control-plane start"
            ))
        })?;
    }
    cp.event(Event::HostOffline, Some(&req.host_id), None, None)
        .await;
    cp.event(Event::HostChanged, Some(&req.host_id), None, None)
        .await;
    Ok(Done {})
}

const REFUSED: &str = "enrollment refused: the token is invalid, expired or already used; ask an operator for a new enrollment command";

/// An enrollment as the web role forwards it: sealed to our xkey.
pub(crate) async fn enroll_sealed(cp: &Arc<Cp>, req: SealedEnroll) -> Outcome<EnrollReply> {
    let req = req.open(&cp.xkey).map_err(|e| {
        Fail::invalid(format!(
            "the enrollment request does not open with the control plane's key: {e}"
        ))
    })?;
    enroll(cp, req).await
}

async fn enroll(cp: &Arc<Cp>, req: EnrollRequest) -> Outcome<EnrollReply> {
    if !req.nkey.starts_with('U') || KeyPair::from_public_key(&req.nkey).is_err() {
        return Err(Fail::invalid("nkey is not a user public key"));
    }
    if XKey::from_public_key(&req.xkey).is_err() {
        return Err(Fail::invalid("xkey is not a curve public key"));
    }
    let now = cp.now();
    let c = cp.clone();
    let (host_id, host, jwt, previous, req) = cp
        .write_first(move |tx| {
            Box::pin(async move {
                let cp = c;
                let host_id = match tokens::take(&mut *tx, &token_hash(&req.token), now).await? {
                    Ok(h) => h,
                    Err(reason) => {
                        tracing::warn!(%reason, hostname = %req.hostname, "enrollment refused");
                        return Err(Fail::forbidden(REFUSED));
                    }
                };
                let previous = hosts::set_enrolled(
                    &mut *tx,
                    &host_id,
                    &hosts::Enrollment {
                        nkey: &req.nkey,
                        xkey: &req.xkey,
                        hostname: &req.hostname,
                        os: &req.os,
                        arch: &req.arch,
                        agent_version: &req.agent_version,
                    },
                    now,
                )
                .await?;
                let host =
                    HostId::parse(&host_id).map_err(|e| Fail::from(anyhow::Error::from(e)))?;
                let role = Role::Agent(host.clone());
                let jwt = cp.authority.mint_user(&UserSpec {
                    public_key: req.nkey.clone(),
                    name: role.name(),
                    permissions: role.permissions(),
                    expires: None,
                })?;
                let actor = Actor {
                    name: format!("agent {host_id}"),
                    via: rm_bus::msg::ActorVia::System,
                    address: None,
                };
                audit::record(
                    &mut *tx,
                    now,
                    &actor,
                    "host.enroll",
                    ("host", &host_id),
                    Some(serde_json::json!({"hostname": req.hostname, "nkey": req.nkey})),
                )
                .await?;
                Ok((host_id, host, jwt, previous, req))
            })
        })
        .await?;
    if let Some(old) = previous {
        // Re-enrollment replaced the keys: the old identity must not connect.
        if let Err(e) = revoke_on_bus(cp, &old).await {
            tracing::error!(host = %host_id, error = %format!("{e:#}"), "old agent key not revoked on the bus");
        }
    }
    cp.event(Event::HostChanged, Some(&host_id), None, None)
        .await;
    tracing::info!(host = %host_id, hostname = %req.hostname, "host enrolled");
    Ok(EnrollReply {
        v: PROTOCOL_VERSION,
        host_id: host,
        jwt,
        bus_urls: cp.agent_bus_urls.clone(),
        controlplane_xkey: cp.xkey.public_key(),
        bus_ca_pem: cp.bus_ca_pem.clone(),
    })
}
