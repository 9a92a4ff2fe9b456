//! The static users file (`users.toml`) for simple setups:
//!
//! ```toml
//! [[user]]
//! nkey = "UA..."
//! publish = { allow = ["rm.agent.h1.>"], deny = [] }
//! subscribe = { allow = ["rm.cmd.h1", "_INBOX.h1.>"] }
//! allow_responses = true
//! ```
//!
//! Missing lists allow everything; `allow_responses` grants nats-server's
//! default response permission (one reply per request, within 2 minutes).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::StaticUser;
use crate::creds::claims::{Permission, Permissions, ResponsePermission};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    nkey: String,
    #[serde(default)]
    publish: Option<Permission>,
    #[serde(default)]
    subscribe: Option<Permission>,
    #[serde(default)]
    allow_responses: bool,
}

/// Parses the text of a users file.
pub fn parse(text: &str) -> Result<Vec<StaticUser>> {
    let file: File = toml::from_str(text).context("parsing users.toml")?;
    let mut out = Vec::with_capacity(file.user.len());
    for u in file.user {
        if !u.nkey.starts_with('U') || nkeys::KeyPair::from_public_key(&u.nkey).is_err() {
            bail!("users.toml: {:?} is not a public user nkey", u.nkey);
        }
        if out.iter().any(|o: &StaticUser| o.nkey == u.nkey) {
            bail!("users.toml: {} is listed twice", u.nkey);
        }
        out.push(StaticUser {
            nkey: u.nkey,
            permissions: Permissions {
                publish: u.publish.unwrap_or_default(),
                subscribe: u.subscribe.unwrap_or_default(),
                responses: u
                    .allow_responses
                    .then_some(ResponsePermission { max: 0, ttl: 0 }),
            },
        });
    }
    Ok(out)
}

/// Reads and parses a users file.
pub fn load(path: &Path) -> Result<Vec<StaticUser>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users() {
        let a = nkeys::KeyPair::new_user().public_key();
        let b = nkeys::KeyPair::new_user().public_key();
        let text = format!(
            "[[user]]\nnkey = \"{a}\"\npublish = {{ allow = [\"x.>\"], deny = [\"x.y\"] }}\nsubscribe = {{ allow = [\"z\"] }}\nallow_responses = true\n\n[[user]]\nnkey = \"{b}\"\n"
        );
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].permissions.publish.deny, vec!["x.y".to_string()]);
        assert!(users[0].permissions.responses.is_some());
        assert_eq!(users[1].permissions, Permissions::default());
        assert!(parse("[[user]]\nnkey = \"nope\"\n").is_err());
        assert!(parse(&format!("[[user]]\nnkey = \"{a}\"\nbogus = 1\n")).is_err());
    }
}
