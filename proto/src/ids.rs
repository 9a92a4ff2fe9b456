//! Subject-safe identifiers.
//!
//! Anything interpolated into a NATS subject must be a single token: no
//! `.`, no wildcards, no whitespace. These newtypes parse once and are then
//! safe to use anywhere; [`crate::subject`] accepts only them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest id we accept. Long enough for a UUID with a prefix, short enough
/// to keep subjects and log lines readable.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is longer than {MAX_ID_LEN} characters")]
    TooLong { kind: &'static str },
    #[error("{kind} id {value:?} must start with an ASCII letter or digit")]
    BadStart { kind: &'static str, value: String },
    #[error(
        "{kind} id {value:?} contains {bad:?}; only ASCII letters, digits, '-' and '_' are allowed"
    )]
    BadChar {
        kind: &'static str,
        value: String,
        bad: char,
    },
}

/// Checks that `s` is one subject-safe token: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
/// Ids never start with `_` or `-`: names starting with `_` are reserved for
/// the roles' own inboxes (`_INBOX._controlplane`), so no host can pose as one.
pub fn check_token(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind });
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(IdError::BadChar {
            kind,
            value: s.to_owned(),
            bad,
        });
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(IdError::BadStart {
            kind,
            value: s.to_owned(),
        });
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses `s`, refusing anything that is not one subject-safe token.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_token($kind, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A host (endpoint) id, assigned by the control plane at enrollment.
    HostId,
    "host"
);
token_id!(
    /// A job id, assigned by whoever creates the job (control plane, or the
    /// agent for locally scheduled runs).
    JobId,
    "job"
);

impl HostId {
    /// A fresh random host id (`h` + 20 base32 characters, 100 bits).
    pub fn generate() -> Self {
        Self(format!("h{}", random_token(13)))
    }
}

impl JobId {
    /// A fresh random job id (`j` + 26 base32 characters, 130 bits).
    pub fn generate() -> Self {
        Self(format!("j{}", random_token(16)))
    }
}

/// `n` random bytes as lowercase base32 without padding: always subject-safe.
pub fn random_token(n: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    data_encoding::BASE32_NOPAD
        .encode(&buf)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_tokens() {
        for ok in ["h1", "web-01", "A_b-9", &"x".repeat(MAX_ID_LEN)] {
            assert!(HostId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_unsafe_tokens() {
        for bad in [
            "", "a.b", "*", ">", "a b", "a\tb", "a\r\nb", "é", "a/b", "$SYS", "_cp", "-x",
        ] {
            assert!(HostId::parse(bad).is_err(), "{bad:?} accepted");
            assert!(JobId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            HostId::parse("x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { kind: "host" })
        );
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<HostId>("\"ok-1\"").is_ok());
        let err = serde_json::from_str::<HostId>("\"a.>\"").unwrap_err();
        assert!(err.to_string().contains("only ASCII letters"), "{err}");
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = HostId::generate();
        let b = HostId::generate();
        assert_ne!(a, b);
        HostId::parse(a.as_str()).unwrap();
        JobId::parse(JobId::generate().as_str()).unwrap();
    }
}
