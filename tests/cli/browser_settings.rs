//! Set-up for the settings browser steps (`tests/browser/steps/70-settings.mjs`):
//! two local webhook receivers. One checks the Standard Webhooks signature
//! independently (its own HMAC-SHA256 over `id.timestamp.body` with the
//! channel's secret, timestamp within ±5 min, constant-time comparison) and
//! answers 204 when it holds, 401 when not; the other always answers 500.
//! `GET /count` on either says what it saw, so the steps can tell that a
//! test send arrived. Both stop when [`Receivers`] drops.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signing key the steps give the channel (`whsec_` + base64 of it).
const KEY: &[u8] = b"restic-manager-e2e-signing-key-32";

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    verified: AtomicU64,
    refused: AtomicU64,
    stop: AtomicBool,
}

struct Receiver {
    port: u16,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(verify: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, verify, &s);
                }
            }
        });
        Self {
            port,
            seen,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.seen.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so it sees the flag
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(mut stream: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether the Standard Webhooks headers sign `body` with [`KEY`].
fn signature_holds(headers: &[(String, String)], body: &[u8]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("no {name} header"))
    };
    let id = get("webhook-id")?;
    let ts = get("webhook-timestamp")?;
    let secs: i64 = ts
        .parse()
        .map_err(|_| "timestamp is not a number".to_owned())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - secs).abs() > 300 {
        return Err("timestamp outside ±5 min".into());
    }
    for candidate in get("webhook-signature")?.split(' ') {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = data_encoding::BASE64.decode(b64.as_bytes()) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches".into())
}

fn serve(stream: TcpStream, verify: bool, seen: &Seen) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    if request_line.starts_with("GET /count") {
        let body = format!(
            "{{\"verified\":{},\"refused\":{}}}",
            seen.verified.load(Ordering::SeqCst),
            seen.refused.load(Ordering::SeqCst)
        );
        return respond(stream, "200 OK", &body);
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    if !verify {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        return respond(stream, "500 Internal Server Error", "receiver says no");
    }
    match signature_holds(&headers, &body) {
        Ok(()) => {
            seen.verified.fetch_add(1, Ordering::SeqCst);
            respond(stream, "204 No Content", "")
        }
        Err(why) => {
            seen.refused.fetch_add(1, Ordering::SeqCst);
            respond(stream, "401 Unauthorized", &why)
        }
    }
}

/// The two receivers; they stop when this drops.
pub struct Receivers {
    ok: Receiver,
    fail: Receiver,
}

impl Receivers {
    pub fn start() -> Self {
        Self {
            ok: Receiver::start(true),
            fail: Receiver::start(false),
        }
    }

    /// What the steps need: `{ok, ok_count, fail, secret}`.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok.url("/hooks/restic"),
            "ok_count": self.ok.url("/count"),
            "fail": self.fail.url("/hooks/restic"),
            "secret": format!("whsec_{}", data_encoding::BASE64.encode(KEY)),
        })
    }

    /// Signed deliveries the checking receiver accepted, and requests it refused.
    pub fn verified_and_refused(&self) -> (u64, u64) {
        (
            self.ok.seen.verified.load(Ordering::SeqCst),
            self.ok.seen.refused.load(Ordering::SeqCst),
        )
    }
}

/// After the steps: when they ran, every request to the checking receiver
/// carried a valid signature.
pub fn check(r: &Receivers) {
    let (verified, refused) = r.verified_and_refused();
    assert_eq!(
        refused, 0,
        "every request the checking receiver got was signed correctly ({verified} were)"
    );
}
