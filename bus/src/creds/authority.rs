//! The credential authority: operator, account, account signing key and
//! system account keys; mints user JWTs and the account JWT.
//!
//! Created at first start in `<data dir>/bus/` (seed files 0600) and loaded
//! afterwards. Agents' seeds never come here: an agent sends its public key
//! and gets back a JWT minted for it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

use rm_bus::clock::SharedClock;
use rm_bus::creds::UserCreds;
use rm_bus::creds::claims::{
    AccountLimits, AccountNats, Claims, OperatorNats, Permissions, UserNats,
};

use super::jwt;

// The private-file helpers moved to the contract crate (seal and the store
// use them too); re-exported so `rm_bus_server::creds::authority::…` works.
pub use rm_bus::private_file::{create_private_once, read_or_create_private, write_private};

/// What to mint a user JWT for.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// The user's public nkey (`U...`).
    pub public_key: String,
    pub name: String,
    pub permissions: Permissions,
    /// Unix seconds after which the JWT is refused.
    pub expires: Option<i64>,
}

/// Mutable account state: revocations and the last account JWT `iat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AccountState {
    #[serde(default)]
    revocations: BTreeMap<String, i64>,
    #[serde(default)]
    last_account_iat: i64,
}

/// The control plane's credential authority.
pub struct Authority {
    operator: KeyPair,
    account: KeyPair,
    signing: KeyPair,
    system_account: KeyPair,
    state: Mutex<AccountState>,
    state_file: Option<PathBuf>,
    clock: SharedClock,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("operator", &self.operator.public_key())
            .field("account", &self.account.public_key())
            .field("signing", &self.signing.public_key())
            .field("system_account", &self.system_account.public_key())
            .finish_non_exhaustive()
    }
}

const OPERATOR_FILE: &str = "operator.nk";
const ACCOUNT_FILE: &str = "account.nk";
const SIGNING_FILE: &str = "account-signing.nk";
const SYSTEM_FILE: &str = "system-account.nk";
const STATE_FILE: &str = "account-state.json";

impl Authority {
    /// Fresh keys, kept in memory only (tests, or a throwaway bus).
    pub fn generate(clock: SharedClock) -> Self {
        Self {
            operator: KeyPair::new_operator(),
            account: KeyPair::new_account(),
            signing: KeyPair::new_account(),
            system_account: KeyPair::new_account(),
            state: Mutex::new(AccountState::default()),
            state_file: None,
            clock,
        }
    }

    /// Loads the keys from `dir`, creating them (0600) at first start.
    pub fn load_or_create(dir: &Path, clock: SharedClock) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating credential dir {}", dir.display()))?;
        restrict_dir(dir)?;
        let operator = load_or_create_key(&dir.join(OPERATOR_FILE), KeyPair::new_operator)?;
        let account = load_or_create_key(&dir.join(ACCOUNT_FILE), KeyPair::new_account)?;
        let signing = load_or_create_key(&dir.join(SIGNING_FILE), KeyPair::new_account)?;
        let system_account = load_or_create_key(&dir.join(SYSTEM_FILE), KeyPair::new_account)?;
        let state_file = dir.join(STATE_FILE);
        let state = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", state_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AccountState::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", state_file.display())),
        };
        Ok(Self {
            operator,
            account,
            signing,
            system_account,
            state: Mutex::new(state),
            state_file: Some(state_file),
            clock,
        })
    }

    pub fn operator_public_key(&self) -> String {
        self.operator.public_key()
    }

    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    pub fn signing_public_key(&self) -> String {
        self.signing.public_key()
    }

    pub fn system_account_public_key(&self) -> String {
        self.system_account.public_key()
    }

    fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AccountState> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain data; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The self-signed operator JWT naming the system account.
    pub fn operator_jwt(&self) -> Result<String> {
        let mut claims = Claims {
            jti: String::new(),
            iat: self.now(),
            iss: String::new(),
            name: "restic-manager".into(),
            sub: self.operator.public_key(),
            exp: None,
            nbf: None,
            nats: OperatorNats {
                system_account: Some(self.system_account.public_key()),
                signing_keys: Vec::new(),
                kind: "operator".into(),
                version: 2,
            },
        };
        Ok(jwt::encode(&mut claims, &self.operator)?)
    }

    fn account_claims(
        &self,
        key: &KeyPair,
        name: &str,
        iat: i64,
        nats: AccountNats,
    ) -> Claims<AccountNats> {
        Claims {
            jti: String::new(),
            iat,
            iss: String::new(),
            name: name.into(),
            sub: key.public_key(),
            exp: None,
            nbf: None,
            nats,
        }
    }

    /// The application account JWT: signing key and current revocations.
    /// Each call has a later `iat` than the one before, so servers take it
    /// as the newest version.
    pub fn account_jwt(&self) -> Result<String> {
        let (iat, revocations) = {
            let mut st = self.lock();
            let iat = self.now().max(st.last_account_iat + 1);
            st.last_account_iat = iat;
            (iat, st.revocations.clone())
        };
        self.save_state()?;
        let nats = AccountNats {
            limits: AccountLimits::default(),
            signing_keys: vec![self.signing.public_key()],
            revocations,
            kind: "account".into(),
            version: 2,
        };
        let mut claims = self.account_claims(&self.account, "restic-manager", iat, nats);
        Ok(jwt::encode(&mut claims, &self.operator)?)
    }

    /// The system account JWT (nats-server needs it resolvable at start).
    pub fn system_account_jwt(&self) -> Result<String> {
        let nats = AccountNats {
            limits: AccountLimits::default(),
            signing_keys: Vec::new(),
            revocations: BTreeMap::new(),
            kind: "account".into(),
            version: 2,
        };
        let mut claims = self.account_claims(&self.system_account, "SYS", self.now(), nats);
        Ok(jwt::encode(&mut claims, &self.operator)?)
    }

    /// Mints a user JWT in the application account, signed by the account
    /// signing key. A key revoked earlier gets an `iat` after its revocation,
    /// so re-admitting it works.
    pub fn mint_user(&self, spec: &UserSpec) -> Result<String> {
        if !spec.public_key.starts_with('U') || KeyPair::from_public_key(&spec.public_key).is_err()
        {
            bail!("{:?} is not a user public nkey", spec.public_key);
        }
        let revoked_at = self.lock().revocations.get(&spec.public_key).copied();
        let iat = match revoked_at {
            Some(t) => self.now().max(t + 1),
            None => self.now(),
        };
        let mut claims = Claims {
            jti: String::new(),
            iat,
            iss: String::new(),
            name: spec.name.clone(),
            sub: spec.public_key.clone(),
            exp: spec.expires,
            nbf: None,
            nats: UserNats::new(&spec.permissions, Some(self.account.public_key())),
        };
        Ok(jwt::encode(&mut claims, &self.signing)?)
    }

    /// Generates a fresh nkey and mints creds for it (roles that run next
    /// to the control plane; agents generate their own keys instead).
    pub fn mint_new_user(&self, name: &str, permissions: Permissions) -> Result<UserCreds> {
        let kp = KeyPair::new_user();
        let jwt = self.mint_user(&UserSpec {
            public_key: kp.public_key(),
            name: name.into(),
            permissions,
            expires: None,
        })?;
        Ok(UserCreds::new(
            jwt,
            kp.seed().context("seed of a fresh key")?,
        ))
    }

    /// A fresh user in the system account, allowed everything there: used
    /// to push account JWT updates (`$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE`).
    pub fn system_user(&self) -> Result<UserCreds> {
        let kp = KeyPair::new_user();
        let mut claims = Claims {
            jti: String::new(),
            iat: self.now(),
            iss: String::new(),
            name: "system".into(),
            sub: kp.public_key(),
            exp: None,
            nbf: None,
            nats: UserNats::new(&Permissions::default(), None),
        };
        let jwt = jwt::encode(&mut claims, &self.system_account)?;
        Ok(UserCreds::new(
            jwt,
            kp.seed().context("seed of a fresh key")?,
        ))
    }

    /// Revokes every JWT of `user_pub` issued up to now. Takes effect when
    /// the next [`Authority::account_jwt`] is pushed to the bus.
    pub fn revoke(&self, user_pub: &str) -> Result<()> {
        let now = self.now();
        self.lock().revocations.insert(user_pub.to_owned(), now);
        self.save_state()
    }

    /// Users revoked so far, with the time of revocation.
    pub fn revocations(&self) -> BTreeMap<String, i64> {
        self.lock().revocations.clone()
    }

    fn save_state(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&*self.lock())?;
        write_private(path, &bytes)
    }
}

fn load_or_create_key(path: &Path, new: fn() -> KeyPair) -> Result<KeyPair> {
    let seed = read_or_create_private(path, || {
        let seed = new().seed().context("seed of a fresh key")?;
        Ok(format!("{seed}\n").into_bytes())
    })?;
    KeyPair::from_seed(seed.trim())
        .with_context(|| format!("{} does not hold a valid nkey seed", path.display()))
}

fn restrict_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_bus::clock::{ManualClock, SharedClock};
    use rm_bus::creds::claims::Permission;

    fn clock(at: i64) -> (std::sync::Arc<ManualClock>, SharedClock) {
        let c = ManualClock::new(at * 1000);
        (c.clone(), c)
    }

    #[test]
    fn creds_file_round_trips() {
        let (_, c) = clock(1_700_000_000);
        let a = Authority::generate(c);
        let creds = a.mint_new_user("n", Permissions::default()).unwrap();
        let back = UserCreds::from_creds_file(&creds.to_creds_file()).unwrap();
        assert_eq!(back.jwt, creds.jwt);
        assert_eq!(back.seed(), creds.seed());
        assert!(UserCreds::from_creds_file("no blocks here").is_err());
        let bad_seed = creds.to_creds_file().replace(creds.seed(), "SUnotaseed");
        assert!(UserCreds::from_creds_file(&bad_seed).is_err());
    }

    #[test]
    fn keys_persist_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let (_, c) = clock(1_700_000_000);
        let a = Authority::load_or_create(dir.path(), c.clone()).unwrap();
        let b = Authority::load_or_create(dir.path(), c).unwrap();
        assert_eq!(a.account_public_key(), b.account_public_key());
        assert_eq!(a.operator_public_key(), b.operator_public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [OPERATOR_FILE, ACCOUNT_FILE, SIGNING_FILE, SYSTEM_FILE] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
    }

    #[test]
    fn user_jwt_chain() {
        let (_, c) = clock(1_700_000_000);
        let a = Authority::generate(c);
        let user = KeyPair::new_user();
        let perms = Permissions {
            publish: Permission::allow(["a.>"]),
            subscribe: Permission::none(),
            responses: None,
        };
        let token = a
            .mint_user(&UserSpec {
                public_key: user.public_key(),
                name: "u".into(),
                permissions: perms.clone(),
                expires: Some(1_800_000_000),
            })
            .unwrap();
        let claims: Claims<UserNats> = jwt::decode(&token).unwrap();
        assert_eq!(claims.iss, a.signing_public_key());
        assert_eq!(
            claims.nats.issuer_account.as_deref(),
            Some(a.account_public_key().as_str())
        );
        assert_eq!(claims.nats.permissions(), perms);
        assert_eq!(claims.exp, Some(1_800_000_000));

        let acct: Claims<AccountNats> = jwt::decode(&a.account_jwt().unwrap()).unwrap();
        assert_eq!(acct.iss, a.operator_public_key());
        assert_eq!(acct.nats.signing_keys, vec![a.signing_public_key()]);
        let op: Claims<OperatorNats> = jwt::decode(&a.operator_jwt().unwrap()).unwrap();
        assert_eq!(op.nats.system_account, Some(a.system_account_public_key()));
        assert!(
            a.mint_user(&UserSpec {
                public_key: a.account_public_key(),
                name: "x".into(),
                permissions: perms,
                expires: None
            })
            .is_err()
        );
    }

    #[test]
    fn revocation_is_persisted_and_readmission_gets_a_later_iat() {
        let dir = tempfile::tempdir().unwrap();
        let (manual, c) = clock(1_700_000_000);
        let a = Authority::load_or_create(dir.path(), c.clone()).unwrap();
        let user = KeyPair::new_user();
        let spec = UserSpec {
            public_key: user.public_key(),
            name: "u".into(),
            permissions: Permissions::default(),
            expires: None,
        };
        let first: Claims<UserNats> = jwt::decode(&a.mint_user(&spec).unwrap()).unwrap();
        let before: Claims<AccountNats> = jwt::decode(&a.account_jwt().unwrap()).unwrap();
        a.revoke(&user.public_key()).unwrap();
        let after: Claims<AccountNats> = jwt::decode(&a.account_jwt().unwrap()).unwrap();
        assert!(after.iat > before.iat, "account JWT iat must increase");
        assert!(after.nats.is_revoked(&user.public_key(), first.iat));

        let again: Claims<UserNats> = jwt::decode(&a.mint_user(&spec).unwrap()).unwrap();
        assert!(!after.nats.is_revoked(&user.public_key(), again.iat));

        manual.advance(std::time::Duration::from_secs(5));
        let reloaded = Authority::load_or_create(dir.path(), c).unwrap();
        assert!(reloaded.revocations().contains_key(&user.public_key()));
    }

    #[test]
    fn creds_do_not_leak_in_debug() {
        let (_, c) = clock(1_700_000_000);
        let creds = Authority::generate(c)
            .mint_new_user("x", Permissions::default())
            .unwrap();
        let dbg = format!("{creds:?}");
        assert!(!dbg.contains(creds.seed()), "{dbg}");
        let file = creds.to_creds_file();
        assert!(file.contains(&creds.jwt) && file.contains(creds.seed()));
    }
}
