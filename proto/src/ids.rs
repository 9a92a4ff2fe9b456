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
    /// A fresh job id: `j`, the time in milliseconds as 10 characters that
    /// sort as the numbers do, then 16 random base32 characters (80 bits).
    /// Ids made later sort later, so the indexes keyed by job id (the jobs
    /// table's own, `job_ingest`'s) take a new job on their newest pages,
    /// not on a random page of a large index each: on a store with a long
    /// history that random page is one more page read and written per job
    /// and phase. Still 27 characters of the same alphabet as before.
    pub fn generate() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(job_id_at(ms, &random_token(10)))
    }
}

/// The characters of [`random_token`] in ASCII order: digits of a number
/// written with them sort as the numbers do.
const SORTED_BASE32: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// `j`, `ms` as 10 [`SORTED_BASE32`] digits (50 bits: beyond the year
/// 37,000), then `random`.
fn job_id_at(ms: u64, random: &str) -> String {
    let mut id = String::with_capacity(11 + random.len());
    id.push('j');
    for i in (0..10).rev() {
        let digit = (ms >> (5 * i)) & 31;
        id.push(char::from(SORTED_BASE32[digit as usize]));
    }
    id.push_str(random);
    id
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

    #[test]
    fn job_ids_sort_by_the_time_they_were_made_and_stay_27_subject_safe_characters() {
        let id = JobId::generate();
        assert_eq!(id.as_str().len(), 27, "{id}");
        assert!(
            id.as_str()[1..].bytes().all(|b| SORTED_BASE32.contains(&b)),
            "{id}"
        );
        // later sorts later, whatever the random part, across digit carries
        let times = [
            0u64,
            1,
            31,
            32,
            1_023,
            1_024,
            1_796_272_422_000,
            1_796_272_422_001,
            (1 << 50) - 1,
        ];
        let ids: Vec<String> = times
            .iter()
            .enumerate()
            .map(|(i, &ms)| {
                job_id_at(
                    ms,
                    if i % 2 == 0 {
                        "zzzzzzzzzzzzzzzz"
                    } else {
                        "2222222222222222"
                    },
                )
            })
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        assert_eq!(job_id_at(0, ""), "j2222222222");
        assert_eq!(job_id_at(33, ""), "j2222222233");
        let a = JobId::generate();
        let b = JobId::generate();
        assert_ne!(a, b);
    }
}
