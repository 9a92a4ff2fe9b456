//! First-run setup: while no account exists, the web role makes a one-time
//! code and logs it on the server's console; `/setup` creates the first
//! admin only with that code, and only while there is still no account
//! (checked in the same statement that inserts it). A stranger on the
//! network therefore cannot claim a fresh install.

use std::sync::Mutex;

use crate::auth::sha256_hex;

/// The current setup code, if one is offered.
#[derive(Debug, Default)]
pub struct SetupCode {
    code: Mutex<Option<String>>,
}

impl SetupCode {
    /// Makes a code when the database has no account; true if it did.
    pub async fn offer_if_no_account(&self, store: &rm_store::Store) -> rm_store::Result<bool> {
        let mut conn = store.read().await?;
        if rm_store::users::count(&mut conn).await? > 0 {
            return Ok(false);
        }
        let raw = super::random_bytes::<10>();
        let text = data_encoding::BASE32_NOPAD.encode(&raw);
        let code = text
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        self.set(Some(code));
        Ok(true)
    }

    /// Sets or clears the code (tests set a known one).
    pub fn set(&self, code: Option<String>) {
        if let Ok(mut c) = self.code.lock() {
            *c = code;
        }
    }

    /// The code, for the console.
    pub fn code(&self) -> Option<String> {
        self.code.lock().ok().and_then(|c| c.clone())
    }

    /// True if `attempt` is the code (case and dashes ignored), compared by hash.
    pub fn matches(&self, attempt: &str) -> bool {
        let Some(code) = self.code() else {
            return false;
        };
        let norm = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase())
                .collect()
        };
        sha256_hex(&norm(attempt)) == sha256_hex(&norm(&code))
    }

    /// Uses the code up.
    pub fn consume(&self) {
        self.set(None);
    }
}
