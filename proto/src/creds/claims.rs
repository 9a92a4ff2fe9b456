//! JWT claim types in the exact shape nats-server (v2 JWTs) accepts.
//!
//! `type` and `version: 2` live inside `nats`; limits are written out as
//! -1 (unlimited), because nats-server treats a missing limit as zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Claims common to every JWT; `N` is the `nats` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims<N> {
    #[serde(default)]
    pub jti: String,
    pub iat: i64,
    pub iss: String,
    #[serde(default)]
    pub name: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub nats: N,
}

/// Allow / deny subject lists; deny wins. Empty allow = everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Permission {
    pub fn allow<I, S>(subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            allow: subjects.into_iter().map(Into::into).collect(),
            deny: Vec::new(),
        }
    }

    /// Nothing at all: nats-server reads an allow list holding only a
    /// subject no one can use as "deny everything else".
    pub fn none() -> Self {
        Self {
            allow: Vec::new(),
            deny: vec![">".to_owned()],
        }
    }
}

/// Permission to publish to the reply subject of requests received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsePermission {
    /// Replies allowed per request received.
    pub max: i64,
    /// How long the permission lasts, nanoseconds (0 = server default).
    #[serde(default)]
    pub ttl: i64,
}

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Permission,
    pub subscribe: Permission,
    pub responses: Option<ResponsePermission>,
}

fn minus_one() -> i64 {
    -1
}

/// `nats` section of a user JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserNats {
    #[serde(rename = "pub", default)]
    pub publish: Permission,
    #[serde(rename = "sub", default)]
    pub subscribe: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    #[serde(default = "minus_one")]
    pub subs: i64,
    #[serde(default = "minus_one")]
    pub data: i64,
    #[serde(default = "minus_one")]
    pub payload: i64,
    /// The account a signing key issued this user for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_account: Option<String>,
    /// Bearer tokens skip the nonce signature; we never mint them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bearer_token: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
}

impl UserNats {
    pub fn new(perms: &Permissions, issuer_account: Option<String>) -> Self {
        Self {
            publish: perms.publish.clone(),
            subscribe: perms.subscribe.clone(),
            resp: perms.responses,
            subs: -1,
            data: -1,
            payload: -1,
            issuer_account,
            bearer_token: false,
            kind: "user".into(),
            version: 2,
        }
    }

    pub fn permissions(&self) -> Permissions {
        Permissions {
            publish: self.publish.clone(),
            subscribe: self.subscribe.clone(),
            responses: self.resp,
        }
    }
}

/// Account limits; -1 = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
    pub imports: i64,
    pub exports: i64,
    pub wildcards: bool,
    pub conn: i64,
    pub leaf: i64,
}

impl Default for AccountLimits {
    fn default() -> Self {
        Self {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
        }
    }
}

/// `nats` section of an account JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountNats {
    #[serde(default)]
    pub limits: AccountLimits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    /// User public key → unix seconds: JWTs issued at or before are revoked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
}

impl AccountNats {
    /// Is a user JWT for `user_pub` issued at `iat` revoked?
    pub fn is_revoked(&self, user_pub: &str, iat: i64) -> bool {
        let by_key = self.revocations.get(user_pub).is_some_and(|t| *t >= iat);
        let all = self.revocations.get("*").is_some_and(|t| *t >= iat);
        by_key || all
    }
}

/// `nats` section of an operator JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorNats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_account: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
}
