//! A user's credentials as a process holds them: the JWT the authority
//! minted and the nkey seed that proves it, and the standard NATS `.creds`
//! file they are kept in.

use std::fmt;

use anyhow::{Context, Result};
use nkeys::KeyPair;

/// A user's JWT and nkey seed: what a process needs to connect.
#[derive(Clone)]
pub struct UserCreds {
    pub jwt: String,
    seed: String,
}

impl UserCreds {
    pub fn new(jwt: String, seed: String) -> Self {
        Self { jwt, seed }
    }

    pub fn seed(&self) -> &str {
        &self.seed
    }

    pub fn key_pair(&self) -> Result<KeyPair> {
        KeyPair::from_seed(&self.seed).context("invalid nkey seed")
    }

    /// The standard NATS `.creds` file text (`nats-server`, `nats` CLI and
    /// every client library read it).
    pub fn to_creds_file(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.jwt, self.seed
        )
    }

    /// Parses the standard `.creds` file text ([`Self::to_creds_file`]'s
    /// format, also written by `nsc` and the `nats` CLI).
    pub fn from_creds_file(text: &str) -> Result<Self> {
        fn block(text: &str, begin: &str) -> Option<String> {
            let mut lines = text.lines().map(str::trim);
            lines.find(|l| l.starts_with("-----BEGIN") && l.contains(begin))?;
            lines
                .take_while(|l| !l.starts_with("------END") && !l.starts_with("-----END"))
                .find(|l| !l.is_empty())
                .map(str::to_owned)
        }
        let jwt = block(text, "NATS USER JWT").context("no user JWT in the creds file")?;
        let seed = block(text, "USER NKEY SEED").context("no nkey seed in the creds file")?;
        let creds = Self::new(jwt, seed);
        creds.key_pair()?;
        Ok(creds)
    }
}

impl fmt::Debug for UserCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCreds")
            .field(
                "jwt",
                &format_args!("{}…", &self.jwt[..self.jwt.len().min(12)]),
            )
            .field("seed", &"<redacted>")
            .finish()
    }
}
