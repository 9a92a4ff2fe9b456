//! When an operator-provided certificate expires: its `notAfter`, read
//! from the DER with a small walker (no X.509 library), and the warning a
//! listener beyond loopback logs at start when it is near; whether a
//! certificate file is due for renewal (`authority bus-cert
//! --renew-if-expiring`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Warn when an operator's certificate expires within this.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// One DER element: tag, contents, what follows.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn digits(s: &[u8]) -> Option<i32> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `UTCTime` (tag 0x17) or `GeneralizedTime` (0x18), UTC (`Z`) only.
fn time_of(tag: u8, v: &[u8]) -> Option<SystemTime> {
    let (year, rest) = match tag {
        0x17 if v.len() >= 13 => {
            let yy = digits(&v[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &v[2..])
        }
        0x18 if v.len() >= 15 => (digits(&v[..4])?, &v[4..]),
        _ => return None,
    };
    let field = |i: usize| digits(&rest[i..i + 2]).and_then(|x| i8::try_from(x).ok());
    let dt = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        field(0)?,
        field(2)?,
        field(4)?,
        field(6)?,
        field(8)?,
        0,
    )
    .ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(SystemTime::from(ts))
}

/// A certificate's `notAfter`, if its DER is readable.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    validity(der).map(|(_, end)| end)
}

/// A certificate's `notBefore` and `notAfter`, if its DER is readable.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // version
    }
    let (_, _, rest) = tlv(rest)?; // serial
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (_, _, rest) = tlv(rest)?; // issuer
    let (_, validity, _) = tlv(rest)?;
    let (tag, nb, after_nb) = tlv(validity)?;
    let start = time_of(tag, nb)?;
    let (tag, na, _) = tlv(after_nb)?;
    Some((start, time_of(tag, na)?))
}

/// Whether the certificate (first PEM block of `pem`) is due for renewal
/// at `now`: in the last third of its life, expired, or unreadable.
pub fn due_for_renewal(pem: &[u8], now: SystemTime) -> bool {
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(pem).next() else {
        return true;
    };
    let Some((start, end)) = validity(&der) else {
        return true;
    };
    let life = end.duration_since(start).unwrap_or_default();
    match end.duration_since(now) {
        Ok(left) => left < life / 3,
        Err(_) => true,
    }
}

/// What to warn about the operator's certificate at `cert_path` served on
/// `listen`: nothing on loopback or when it lives past [`WARN_BEFORE`].
pub fn warning(listen: SocketAddr, cert_path: &Path, now: SystemTime) -> Option<String> {
    if listen.ip().is_loopback() {
        return None;
    }
    let pem = std::fs::read(cert_path).ok()?;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let end = not_after(&der)?;
    let when = jiff::Timestamp::try_from(end).map_or_else(|_| "?".to_owned(), |t| t.to_string());
    match end.duration_since(now) {
        Err(_) => Some(format!(
            "the certificate {} served on {listen} EXPIRED at {when}: clients refuse it; replace it",
            cert_path.display()
        )),
        Ok(left) if left < WARN_BEFORE => Some(format!(
            "the certificate {} served on {listen} expires at {when} (in {} days): renew it",
            cert_path.display(),
            left.as_secs() / 86_400
        )),
        Ok(_) => None,
    }
}

/// Logs [`warning`], if any.
pub fn warn_at_start(listen: SocketAddr, cert_path: &Path) {
    if let Some(w) = warning(listen, cert_path, SystemTime::now()) {
        tracing::warn!(%listen, cert = %cert_path.display(), "{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;

    #[test]
    fn not_after_is_read_from_the_der() {
        let ca = Ca::generate(SystemTime::now()).unwrap();
        let leaf = ca
            .issue(&[], Duration::from_secs(5 * 86_400), SystemTime::now())
            .unwrap();
        assert_eq!(not_after(leaf.cert_der()), Some(leaf.not_after));
        assert_eq!(
            validity(leaf.cert_der()),
            Some((leaf.not_before, leaf.not_after))
        );
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None, "truncated");
    }

    #[test]
    fn a_certificate_is_due_for_renewal_in_the_last_third_of_its_life() {
        let ca = Ca::generate(SystemTime::now()).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let pem = ca.issue(&[], 90 * day, now).unwrap().chain_pem();
        let pem = pem.as_bytes();
        assert!(!due_for_renewal(pem, now), "fresh");
        assert!(!due_for_renewal(pem, now + 50 * day), "halfway");
        assert!(due_for_renewal(pem, now + 70 * day), "last third");
        assert!(due_for_renewal(pem, now + 91 * day), "expired");
        assert!(due_for_renewal(b"not a certificate", now), "unreadable");
    }

    #[test]
    fn a_listener_beyond_loopback_warns_of_an_operator_certificate_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(SystemTime::now()).unwrap();
        let now = SystemTime::now();
        let write = |name: &str, days: u64| {
            let leaf = ca
                .issue(&[], Duration::from_secs(days * 86_400), now)
                .unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, leaf.chain_pem()).unwrap();
            path
        };
        let soon = write("soon.pem", 10);
        let later = write("later.pem", 200);
        let public: SocketAddr = "0.0.0.0:4222".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:4222".parse().unwrap();
        let w = warning(public, &soon, now).expect("near expiry");
        assert!(w.contains("in 9 days") || w.contains("in 10 days"), "{w}");
        assert!(w.contains("soon.pem"), "{w}");
        assert_eq!(warning(local, &soon, now), None, "loopback: no warning");
        assert_eq!(warning(public, &later, now), None, "far from expiry");
        let w = warning(public, &soon, now + Duration::from_secs(11 * 86_400)).unwrap();
        assert!(w.contains("EXPIRED"), "{w}");
    }
}
