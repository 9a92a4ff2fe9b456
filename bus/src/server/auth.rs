//! Who may connect, into which account, with which permissions.
//!
//! - No auth: everyone lands in the global account with all permissions.
//! - Static users: the client signs the INFO nonce with its nkey; the
//!   signature (base64url, or standard base64 as a fallback) must verify
//!   against a configured public key.
//! - Operator mode: the client presents a user JWT and signs the nonce with
//!   the JWT subject's key. The JWT must be signed by a trusted account (or
//!   one of its signing keys, naming the account in `issuer_account`), be
//!   inside its validity window and not revoked by the account JWT in
//!   force. Account JWTs must be signed by the trusted operator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use data_encoding::{BASE64, BASE64_NOPAD, BASE64URL, BASE64URL_NOPAD};
use nkeys::KeyPair;

use crate::creds::claims::{AccountNats, Claims, OperatorNats, UserNats};
use crate::creds::jwt;

use super::client::{CloseReason, ConnectOpts};
use super::perms::ConnPerms;
use super::{Account, Auth, GLOBAL_ACCOUNT, StaticUser};

/// An account JWT in force: the token and its verified claims.
#[derive(Debug, Clone)]
pub struct AccountJwt {
    pub token: String,
    pub claims: Claims<AccountNats>,
}

/// The authenticated user of a connection (static or JWT user).
#[derive(Debug, Clone)]
pub(crate) struct UserIdent {
    pub nkey: String,
    /// `iat` of the user JWT (revocation compares against it).
    pub issued_at: Option<i64>,
    /// The key that signed the user JWT.
    pub issuer: Option<String>,
    /// Unix seconds at which the user JWT expires.
    pub expires: Option<i64>,
}

pub(crate) struct Authenticated {
    pub account: Arc<Account>,
    pub perms: ConnPerms,
    pub user: Option<UserIdent>,
}

pub(crate) struct OperatorState {
    pub operator_keys: Vec<String>,
    pub system_account: String,
    pub accounts: RwLock<HashMap<String, Arc<Account>>>,
    pub resolver_dir: Option<PathBuf>,
}

impl OperatorState {
    pub fn accounts(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Account>>> {
        self.accounts.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies an account JWT: signature, issued by the trusted operator.
    pub fn verify_account_jwt(&self, token: &str) -> Result<Claims<AccountNats>> {
        let claims: Claims<AccountNats> =
            jwt::decode(token).context("account JWT does not verify")?;
        if !self.operator_keys.contains(&claims.iss) {
            bail!(
                "account JWT is signed by {}, not by the trusted operator",
                claims.iss
            );
        }
        if claims.nats.kind != "account" {
            bail!("JWT is of type {:?}, not an account", claims.nats.kind);
        }
        if !claims.sub.starts_with('A') || KeyPair::from_public_key(&claims.sub).is_err() {
            bail!(
                "account JWT subject {:?} is not an account public key",
                claims.sub
            );
        }
        Ok(claims)
    }

    /// The account for `name`, created empty if unknown.
    pub fn account_or_new(&self, name: &str) -> Arc<Account> {
        if let Some(a) = self.accounts().get(name) {
            return a.clone();
        }
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        accounts
            .entry(name.to_owned())
            .or_insert_with(|| Account::new(name, name == self.system_account))
            .clone()
    }
}

pub(crate) enum AuthState {
    None {
        global: Arc<Account>,
    },
    Users {
        global: Arc<Account>,
        users: HashMap<String, ConnPerms>,
    },
    Operator(OperatorState),
}

fn now() -> i64 {
    rm_bus::clock::system().now_secs()
}

impl AuthState {
    pub async fn load(auth: &Auth) -> Result<Self> {
        Ok(match auth {
            Auth::None => Self::None {
                global: Account::new(GLOBAL_ACCOUNT, false),
            },
            Auth::Users(list) => {
                let mut users = HashMap::new();
                for StaticUser { nkey, permissions } in list {
                    if !nkey.starts_with('U') || KeyPair::from_public_key(nkey).is_err() {
                        bail!("{nkey:?} is not a public user nkey");
                    }
                    users.insert(nkey.clone(), ConnPerms::new(permissions));
                }
                Self::Users {
                    global: Account::new(GLOBAL_ACCOUNT, false),
                    users,
                }
            }
            Auth::Operator(op) => Self::Operator(load_operator(op).await?),
        })
    }

    pub fn required(&self) -> bool {
        !matches!(self, Self::None { .. })
    }

    pub fn operator(&self) -> Option<&OperatorState> {
        match self {
            Self::Operator(o) => Some(o),
            _ => None,
        }
    }

    /// Checks a CONNECT against the configured auth.
    pub fn authenticate(
        &self,
        opts: &ConnectOpts,
        nonce: Option<&str>,
    ) -> Result<Authenticated, String> {
        match self {
            Self::None { global } => Ok(Authenticated {
                account: global.clone(),
                perms: ConnPerms::all(),
                user: None,
            }),
            Self::Users { global, users } => {
                let nkey = opts.nkey.as_deref().ok_or("no nkey in CONNECT")?;
                let perms = users
                    .get(nkey)
                    .ok_or_else(|| format!("unknown nkey {nkey}"))?;
                verify_nonce(nkey, nonce, opts.sig.as_deref())?;
                Ok(Authenticated {
                    account: global.clone(),
                    perms: perms.clone(),
                    user: Some(UserIdent {
                        nkey: nkey.to_owned(),
                        issued_at: None,
                        issuer: None,
                        expires: None,
                    }),
                })
            }
            Self::Operator(op) => authenticate_jwt(op, opts, nonce),
        }
    }
}

fn decode_sig(sig: &str) -> Option<Vec<u8>> {
    let s = sig.as_bytes();
    BASE64URL_NOPAD
        .decode(s)
        .or_else(|_| BASE64URL.decode(s))
        .or_else(|_| BASE64.decode(s))
        .or_else(|_| BASE64_NOPAD.decode(s))
        .ok()
}

fn verify_nonce(nkey: &str, nonce: Option<&str>, sig: Option<&str>) -> Result<(), String> {
    let nonce = nonce.ok_or("no nonce was sent")?;
    let sig = sig.ok_or("no signature in CONNECT")?;
    let sig = decode_sig(sig).ok_or("signature is not base64")?;
    let kp =
        KeyPair::from_public_key(nkey).map_err(|_| format!("{nkey:?} is not a public nkey"))?;
    kp.verify(nonce.as_bytes(), &sig)
        .map_err(|_| "nonce signature does not verify".to_owned())
}

fn authenticate_jwt(
    op: &OperatorState,
    opts: &ConnectOpts,
    nonce: Option<&str>,
) -> Result<Authenticated, String> {
    let token = opts.jwt.as_deref().ok_or("no user JWT in CONNECT")?;
    let claims: Claims<UserNats> = jwt::decode(token).map_err(|e| format!("user JWT: {e}"))?;
    if claims.nats.kind != "user" {
        return Err(format!("JWT is of type {:?}, not a user", claims.nats.kind));
    }
    let t = now();
    if claims.exp.is_some_and(|exp| exp <= t) {
        return Err("user JWT has expired".into());
    }
    if claims.nbf.is_some_and(|nbf| nbf > t) {
        return Err("user JWT is not valid yet".into());
    }
    if let Some(n) = opts.nkey.as_deref()
        && n != claims.sub
    {
        return Err("CONNECT nkey differs from the JWT subject".into());
    }
    if !claims.nats.bearer_token {
        verify_nonce(&claims.sub, nonce, opts.sig.as_deref())?;
    }
    let account_name = claims
        .nats
        .issuer_account
        .clone()
        .unwrap_or_else(|| claims.iss.clone());
    let account = op
        .accounts()
        .get(&account_name)
        .cloned()
        .ok_or_else(|| format!("unknown account {account_name}"))?;
    let Some(acc_jwt) = account.jwt() else {
        return Err(format!("no JWT for account {account_name}"));
    };
    if claims.iss != acc_jwt.claims.sub && !acc_jwt.claims.nats.signing_keys.contains(&claims.iss) {
        return Err(format!(
            "user JWT issuer {} is not a key of account {account_name}",
            claims.iss
        ));
    }
    if acc_jwt.claims.nats.is_revoked(&claims.sub, claims.iat) {
        return Err("user JWT has been revoked".into());
    }
    Ok(Authenticated {
        account,
        perms: ConnPerms::new(&claims.nats.permissions()),
        user: Some(UserIdent {
            nkey: claims.sub.clone(),
            issued_at: Some(claims.iat),
            issuer: Some(claims.iss.clone()),
            expires: claims.exp,
        }),
    })
}

/// Whether a connected user is still admitted by its account's JWT:
/// `None` if so, else why it must go.
pub(crate) fn still_valid(account: &Account, user: Option<&UserIdent>) -> Option<CloseReason> {
    let (Some(user), Some(acc)) = (user, account.jwt()) else {
        return None;
    };
    let (Some(iat), Some(issuer)) = (user.issued_at, user.issuer.as_deref()) else {
        return None;
    };
    if acc.claims.nats.is_revoked(&user.nkey, iat) {
        return Some(CloseReason::Revoked);
    }
    if issuer != acc.claims.sub && !acc.claims.nats.signing_keys.iter().any(|k| k == issuer) {
        return Some(CloseReason::AuthViolation);
    }
    None
}

async fn load_operator(op: &super::OperatorAuth) -> Result<OperatorState> {
    let claims: Claims<OperatorNats> =
        jwt::decode(&op.operator_jwt).context("the operator JWT does not verify")?;
    if claims.nats.kind != "operator" {
        bail!("the operator JWT is of type {:?}", claims.nats.kind);
    }
    if claims.iss != claims.sub && !claims.nats.signing_keys.contains(&claims.iss) {
        bail!("the operator JWT is not self-signed");
    }
    let system_account = op
        .system_account
        .clone()
        .or_else(|| claims.nats.system_account.clone())
        .context("no system account: the operator JWT names none and none was configured")?;
    let mut operator_keys = vec![claims.sub.clone()];
    operator_keys.extend(claims.nats.signing_keys.iter().cloned());
    let state = OperatorState {
        operator_keys,
        system_account: system_account.clone(),
        accounts: RwLock::new(HashMap::new()),
        resolver_dir: op.resolver_dir.clone(),
    };
    let mut best: HashMap<String, AccountJwt> = HashMap::new();
    let mut consider = |token: String, from: &str| -> Result<()> {
        let claims = state
            .verify_account_jwt(&token)
            .with_context(|| format!("account JWT from {from}"))?;
        let newer = best
            .get(&claims.sub)
            .is_none_or(|b| claims.iat >= b.claims.iat);
        if newer {
            best.insert(claims.sub.clone(), AccountJwt { token, claims });
        }
        Ok(())
    };
    for token in &op.preload {
        consider(token.trim().to_owned(), "preload")?;
    }
    if let Some(dir) = &op.resolver_dir {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating resolver dir {}", dir.display()))?;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .with_context(|| format!("reading resolver dir {}", dir.display()))?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "jwt") {
                continue;
            }
            let token = tokio::fs::read_to_string(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            if let Err(e) = consider(token.trim().to_owned(), &path.display().to_string()) {
                tracing::warn!(path = %path.display(), error = %e, "ignoring stored account JWT");
            }
        }
    }
    if !best.contains_key(&system_account) {
        bail!("the system account {system_account} has no JWT (preload it)");
    }
    for (name, jwt) in best {
        let account = state.account_or_new(&name);
        *account.jwt.write().unwrap_or_else(|p| p.into_inner()) = Some(jwt.clone());
        if let Some(dir) = &state.resolver_dir {
            super::sys::persist(dir, &name, &jwt.token).await?;
        }
    }
    Ok(state)
}
