//! Enrollment: the agent generates its nkey and xkey locally, sends only
//! the public halves with the one-time token to `POST /api/v1/enroll`, and
//! stores the reply (host id, JWT, bus URLs, the control plane's xkey).
//!
//! The HTTPS call is pinned: the SHA-256 fingerprint from the operator's
//! command line must be the installation's CA (which issued the server's
//! certificate for its name) or, as before the private CA, the server's
//! certificate itself, so the first contact is not trust-on-first-use. The
//! reply carries the CA the agent verifies the bus with (`bus-ca.pem`). One small HTTP/1.1 exchange over tokio-rustls
//! with hyper's client connection; no general HTTP client in the agent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rm_bus::msg::{EnrollReply, EnrollRequest, PROTOCOL_VERSION, SvcError};
use rustls::pki_types::ServerName;

use crate::state::{Identity, StateDir};
use crate::vitals;

const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REPLY: usize = 1 << 20;

/// A certificate fingerprint, `sha256:<64 hex>` (colons between bytes and
/// upper case accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl std::str::FromStr for Fingerprint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let hex: String = lower
            .strip_prefix("sha256:")
            .unwrap_or(&lower)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| {
                anyhow!("fingerprint {s:?} is not hex (expected sha256:<64 hex digits>)")
            })?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow!("fingerprint {s:?} is not a SHA-256 (expected 64 hex digits)"))?;
        Ok(Self(arr))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// `https://host[:port][/base]` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerUrl {
    host: String,
    port: u16,
    base: String,
}

fn parse_url(url: &str) -> Result<ServerUrl> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("server URL {url:?} must start with https://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("server URL {url:?}: unclosed [ in the host"))?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        bail!("server URL {url:?} has no host");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| anyhow!("server URL {url:?}: bad port {p:?}"))?,
        None => 443,
    };
    Ok(ServerUrl {
        host,
        port,
        base: match path.trim_end_matches('/') {
            "" => String::new(),
            p => format!("/{p}"),
        },
    })
}

/// POSTs `body` as JSON to `path` on the pinned server; returns status and
/// body.
async fn post_json(
    server: &str,
    path: &str,
    pin: &Fingerprint,
    body: Vec<u8>,
) -> Result<(u16, Bytes)> {
    let url = parse_url(server)?;
    let tls = rm_bus::pki::verify::pinned(pin.0)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| anyhow!("{:?} is not a valid server name", url.host))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {server} (is the fingerprint right?)"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let req = hyper::Request::post(format!("{}{path}", url.base))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .context("sending the request")?;
    let status = resp.status().as_u16();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_REPLY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| anyhow!("reading the reply: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// Enrolls this agent: new keys, the pinned call, the identity stored.
pub async fn enroll(
    state: &StateDir,
    server: &str,
    token: &str,
    fingerprint: &Fingerprint,
    hostname: &str,
    now_ms: i64,
) -> Result<Identity> {
    let (nkey, xkey) = state.new_keys()?;
    let req = EnrollRequest {
        v: PROTOCOL_VERSION,
        token: token.to_owned(),
        nkey: nkey.public_key(),
        xkey: xkey.public_key(),
        hostname: hostname.to_owned(),
        os: vitals::os(),
        arch: vitals::arch(),
        agent_version: crate::VERSION.into(),
    };
    let (status, body) = tokio::time::timeout(
        ENROLL_TIMEOUT,
        post_json(
            server,
            "/api/v1/enroll",
            fingerprint,
            serde_json::to_vec(&req)?,
        ),
    )
    .await
    .map_err(|_| anyhow!("{server} did not answer within {ENROLL_TIMEOUT:?}"))??;
    if status != 200 {
        let why = serde_json::from_slice::<SvcError>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect());
        bail!("enrollment refused (HTTP {status}): {why}");
    }
    let reply: EnrollReply =
        serde_json::from_slice(&body).context("the server's enrollment reply is malformed")?;
    let identity = Identity {
        host_id: reply.host_id,
        bus_urls: reply.bus_urls,
        controlplane_xkey: reply.controlplane_xkey,
        server_url: server.to_owned(),
        enrolled_at_ms: now_ms,
    };
    state.commit_enrollment(&identity, &reply.jwt)?;
    match &reply.bus_ca_pem {
        Some(pem) => {
            rm_bus::pki::verify::first_cert(pem.as_bytes())
                .context("the server's bus CA is not a PEM certificate")?;
            crate::state::write_durable(&state.path(crate::state::BUS_CA), pem.as_bytes(), false)?;
        }
        None => tracing::warn!(
            "the server sent no bus CA (a server older than its private CA): tls:// bus servers are checked against this machine's trusted roots"
        ),
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let hex = "ab".repeat(32);
        let a: Fingerprint = format!("sha256:{hex}").parse().unwrap();
        let b: Fingerprint = format!("SHA256:{}", "AB:".repeat(31) + "AB")
            .parse()
            .unwrap();
        let c: Fingerprint = hex.parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), format!("sha256:{hex}"));
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
        assert!(
            format!("sha256:{}", "zz".repeat(32))
                .parse::<Fingerprint>()
                .is_err()
        );
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_url("https://cp.example:8443").unwrap(),
            ServerUrl {
                host: "cp.example".into(),
                port: 8443,
                base: "".into()
            }
        );
        assert_eq!(
            parse_url("https://[::1]:9/rm/").unwrap(),
            ServerUrl {
                host: "::1".into(),
                port: 9,
                base: "/rm".into()
            }
        );
        assert_eq!(parse_url("https://h").unwrap().port, 443);
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("https://h:x").is_err());
        assert!(parse_url("https://:1").is_err());
    }
}
