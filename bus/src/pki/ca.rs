//! The certificate authority of one installation: an ECDSA P-256 key
//! (`ca-key.pem`, 0600) and a self-signed CA certificate (`ca-cert.pem`)
//! valid for [`CA_LIFE`], in `<data-dir>/ca/`. It issues the bus and web
//! certificates ([`Leaf`], [`LEAF_LIFE`] by default); its SHA-256
//! fingerprint is what enrollment commands pin.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// The authority's directory under a data directory.
pub const CA_DIR: &str = "ca";
/// The CA certificate (public: agents receive it at enrollment).
pub const CA_CERT: &str = "ca-cert.pem";
/// The CA private key (0600).
pub const CA_KEY: &str = "ca-key.pem";
/// How long a new CA certificate is valid: ten years.
pub const CA_LIFE: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long an issued bus or web certificate is valid by default.
pub const LEAF_LIFE: Duration = Duration::from_secs(90 * 86_400);
/// Issued certificates start this much in the past (clock skew).
const BACKDATE: Duration = Duration::from_secs(300);

/// `<data_dir>/ca`.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join(CA_DIR)
}

pub use rm_bus::pki::fingerprint_of;

/// The authority, loaded.
pub struct Ca {
    key: KeyPair,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate issued by the authority, with its key.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The leaf, then the CA certificate (what a server sends).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When it should be renewed: two thirds into its life.
    pub renew_at: SystemTime,
}

impl Leaf {
    /// The leaf's DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// PEM of the chain (leaf first), for servers that read files.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }

    /// PEM of the private key (PKCS#8).
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_pkcs8)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The CA's subject: unique per key, so two installations' CAs never share
/// a name and a foreign certificate is plainly "unknown issuer".
fn ca_params(key: &KeyPair) -> CertificateParams {
    let id = data_encoding::HEXLOWER.encode(&Sha256::digest(key.subject_public_key_info()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "restic-manager");
    dn.push(
        DnType::CommonName,
        format!("restic-manager CA {}", &id[..16]),
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn to_time(t: SystemTime) -> Result<time::OffsetDateTime> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .context("time before 1970")?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs)?)
        .map_err(|e| anyhow!("time out of range: {e}"))
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

impl Ca {
    /// A new authority (not written anywhere).
    pub fn generate(now: SystemTime) -> Result<Self> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = ca_params(&key);
        params.not_before = to_time(now - BACKDATE)?;
        params.not_after = to_time(now + CA_LIFE)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads the authority from `dir` (`ca-cert.pem`, `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} holds no private key", key_path.display()))?;
        let cert_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
        Ok(Self {
            key,
            cert_pem,
            cert_der,
        })
    }

    /// Loads the authority from `dir`, creating it at first start (key
    /// 0600). A directory with only one of the two files is an error: the
    /// other was lost and agents pinned to the old CA would be refused.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(dir),
            (false, false) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let ca = Self::generate(SystemTime::now())?;
                crate::creds::authority::write_private(
                    &key_path,
                    ca.key.serialize_pem().as_bytes(),
                )?;
                // written whole or not at all: its presence means a usable CA
                let tmp = dir.join(format!(".{CA_CERT}.tmp"));
                std::fs::write(&tmp, &ca.cert_pem)
                    .and_then(|()| std::fs::rename(&tmp, &cert_path))
                    .with_context(|| format!("writing {}", cert_path.display()))?;
                tracing::info!(dir = %dir.display(), fingerprint = %ca.fingerprint(), "created the installation's certificate authority");
                Ok(ca)
            }
            (true, false) => bail!(
                "{} exists but {} is missing: restore the CA key from a backup (or remove both to start a new CA, then re-enroll every agent)",
                cert_path.display(),
                key_path.display()
            ),
            (false, true) => bail!(
                "{} exists but {} is missing: restore the CA certificate from a backup (or remove both to start a new CA, then re-enroll every agent)",
                key_path.display(),
                cert_path.display()
            ),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256:<hex>` of the CA certificate: what enrollment pins.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.cert_der)
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses;
    /// localhost, 127.0.0.1 and ::1 are always added) valid for `life`
    /// from `now`; it also serves as the client certificate of a
    /// nats-server's routes and leaf connections.
    pub fn issue(&self, names: &[String], life: Duration, now: SystemTime) -> Result<Leaf> {
        let names = leaf_names(names);
        let key = KeyPair::generate().context("generating a certificate key")?;
        let mut params = CertificateParams::new(names.clone()).map_err(|e| {
            anyhow!(
                "a certificate name is neither a DNS name nor an IP address ({}): {e}",
                names.join(", ")
            )
        })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "restic-manager");
        dn.push(
            DnType::CommonName,
            names.last().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // ClientAuth too: nats-server presents the same certificate when it
        // opens a route or leaf connection (mutual TLS)
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let not_before = now - BACKDATE.min(life);
        let not_after = now + life;
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        let issuer = Issuer::new(ca_params(&self.key), &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing a certificate")?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key_pkcs8: key.serialize_der(),
            // whole seconds, as in the certificate
            not_before: UNIX_EPOCH
                + Duration::from_secs(not_before.duration_since(UNIX_EPOCH)?.as_secs()),
            not_after: UNIX_EPOCH
                + Duration::from_secs(not_after.duration_since(UNIX_EPOCH)?.as_secs()),
            renew_at: now + life.mul_f64(2.0 / 3.0),
        })
    }
}

/// `names` plus localhost, 127.0.0.1 and ::1, without duplicates; the
/// unspecified addresses (0.0.0.0, ::) are left out.
pub fn leaf_names(names: &[String]) -> Vec<String> {
    let mut all: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for n in names {
        let n = n.trim();
        let unspecified = n
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if !n.is_empty() && !unspecified && !all.iter().any(|a| a.eq_ignore_ascii_case(n)) {
            all.push(n.to_owned());
        }
    }
    all
}

/// The host part of a URL such as `https://h:8443/x` or `tls://[::1]:4222`.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_with_a_private_key_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let a = Ca::load_or_create(&dir).unwrap();
        let b = Ca::load_or_create(&dir).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(CA_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_file(dir.join(CA_KEY)).unwrap();
        let e = Ca::load_or_create(&dir).unwrap_err().to_string();
        assert!(e.contains("ca-key.pem is missing"), "{e}");
    }

    #[test]
    fn names_and_url_hosts() {
        assert_eq!(
            leaf_names(&["0.0.0.0".into(), "cp.example".into(), "LOCALHOST".into()]),
            vec!["localhost", "127.0.0.1", "::1", "cp.example"]
        );
        assert_eq!(
            url_host("https://cp.example:8443/x").as_deref(),
            Some("cp.example")
        );
        assert_eq!(url_host("tls://[::1]:4222").as_deref(), Some("::1"));
        assert_eq!(
            url_host("nats://u:p@10.0.0.1:4222").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(url_host("tls://h").as_deref(), Some("h"));
    }

    #[test]
    fn a_leaf_is_renewed_two_thirds_into_its_life() {
        let ca = Ca::generate(SystemTime::now()).unwrap();
        let now = SystemTime::now();
        let leaf = ca.issue(&[], Duration::from_secs(90), now).unwrap();
        assert_eq!(leaf.chain.len(), 2);
        assert_eq!(&leaf.chain[1], ca.cert_der());
        assert_eq!(
            leaf.renew_at.duration_since(now).unwrap(),
            Duration::from_secs(60)
        );
        assert!(leaf.not_after >= now + Duration::from_secs(89));
        assert!(leaf.chain_pem().matches("BEGIN CERTIFICATE").count() == 2);
        assert!(leaf.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
