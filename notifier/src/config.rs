//! What a notifier needs to run: its bus connection and the notifier role's
//! xkey, plus limits that have working defaults (tests shorten them).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nkeys::XKey;
use rm_bus::clock::{self, SharedClock};
use rm_bus::connect::ConnectSpec;
use rm_bus::notify::{DEFAULT_ATTEMPT_TIMEOUT, QUEUE_GROUP};

/// Configuration of one notifier copy.
#[derive(Clone)]
pub struct NotifierConfig {
    /// How to reach the bus (the notifier role's credentials).
    pub connect: ConnectSpec,
    /// The notifier role's xkey: channel definitions are sealed to it.
    pub xkey: XKey,
    /// Name of this copy, reported in every reply.
    pub instance: String,
    /// The queue group all copies share.
    pub queue_group: String,
    /// Timeout of one HTTP attempt, connecting included.
    pub attempt_timeout: Duration,
    /// Deliveries in flight at once; more wait for a slot.
    pub max_concurrent: usize,
    /// How long a request waits for a slot before it is answered
    /// `retryable` (busy), so the requester can try another copy.
    pub queue_wait: Duration,
    /// On shutdown, how long in-flight deliveries may finish.
    pub shutdown_grace: Duration,
    /// Public xkeys whose sealed channels this notifier accepts; empty
    /// accepts any sender that can publish to it (the bus permissions
    /// already confine that to the alerts and web roles).
    pub trusted_senders: Vec<String>,
    /// Time for `webhook-timestamp`.
    pub clock: SharedClock,
}

impl NotifierConfig {
    /// A configuration with the default limits.
    pub fn new(connect: ConnectSpec, xkey: XKey) -> Self {
        Self {
            connect,
            xkey,
            instance: "notifier".into(),
            queue_group: QUEUE_GROUP.into(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_concurrent: 64,
            queue_wait: Duration::from_secs(2),
            shutdown_grace: DEFAULT_ATTEMPT_TIMEOUT + Duration::from_secs(1),
            trusted_senders: Vec::new(),
            clock: clock::system(),
        }
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<()> {
        if self.attempt_timeout.is_zero() {
            bail!("attempt timeout must be positive");
        }
        if self.max_concurrent == 0 {
            bail!("max concurrent deliveries must be at least 1");
        }
        for key in &self.trusted_senders {
            XKey::from_public_key(key)
                .map_err(|e| anyhow::anyhow!("trusted sender {key:?} is not a public xkey: {e}"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierConfig")
            .field("connect", &self.connect)
            .field("xkey", &self.xkey.public_key())
            .field("instance", &self.instance)
            .field("queue_group", &self.queue_group)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_concurrent", &self.max_concurrent)
            .field("queue_wait", &self.queue_wait)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("trusted_senders", &self.trusted_senders)
            .finish_non_exhaustive()
    }
}

/// Reads the notifier role's xkey seed (`SX...`) from a file, warning when
/// the file is readable by others.
pub fn load_xkey_seed(path: &Path) -> Result<XKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the xkey seed file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "xkey seed file is readable by group or others; it should be 0600"
            );
        }
    }
    let key = XKey::from_seed(text.trim())
        .map_err(|e| anyhow::anyhow!("{} holds no xkey seed: {e}", path.display()))?;
    // A public key parses as an XKey too, but cannot open anything.
    key.seed()
        .map_err(|_| anyhow::anyhow!("{} holds a public key, not a seed", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_seed_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let key = XKey::new();
        let path = dir.path().join("xkey.seed");
        std::fs::write(&path, format!("{}\n", key.seed().unwrap())).unwrap();
        assert_eq!(
            load_xkey_seed(&path).unwrap().public_key(),
            key.public_key()
        );

        std::fs::write(&path, key.public_key()).unwrap();
        assert!(load_xkey_seed(&path).is_err());
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_xkey_seed(&path).is_err());
        assert!(load_xkey_seed(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn each_attempt_has_a_5_second_timeout_by_default() {
        let authority = rm_bus_server::creds::Authority::generate(rm_bus::clock::system());
        let creds = authority
            .mint_new_user("n", rm_bus::creds::Role::Notifier.permissions())
            .unwrap();
        let spec = ConnectSpec::new("nats://127.0.0.1:1", creds, &rm_bus::creds::Role::Notifier);
        let c = NotifierConfig::new(spec, XKey::new());
        assert_eq!(c.attempt_timeout, Duration::from_secs(5));
        assert!(c.shutdown_grace > c.attempt_timeout);
    }
}
