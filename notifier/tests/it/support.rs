//! Test support: real HTTP receivers on 127.0.0.1 (a minimal HTTP/1.1
//! server written here, one request per connection) and a harness that runs
//! real notifiers over a real bus and sends requests as the alerts role.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nkeys::XKey;
use rm_bus::creds::Role;
use rm_bus::msg::{PROTOCOL_VERSION, decode, encode};
use rm_bus::notify::{
    AlertInfo, AlertKind, AlertState, ChannelDef, DeliverReply, DeliverRequest, EventData,
    EventType, HostInfo, NotificationEvent, Severity, deliver_subject, rfc3339_utc,
};
use rm_notifier::{Notifier, NotifierConfig};
use rm_testkit::{TestBus, TestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// How a receiver answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Status, extra headers, body.
    Status(u16, Vec<(String, String)>, String),
    /// Read the request, then never answer (until the test ends).
    Hang,
    /// Wait, then answer.
    After(Duration, Box<Answer>),
}

impl Answer {
    pub fn ok() -> Self {
        Self::Status(200, Vec::new(), "{}".into())
    }

    pub fn status(code: u16) -> Self {
        Self::Status(code, Vec::new(), String::new())
    }
}

/// A local HTTP endpoint that records requests and answers from a script
/// (then with its default answer).
pub struct Receiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(default: Answer) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, requests) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
        let task = tokio::spawn({
            let script = script.clone();
            async move {
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let answer = script
                        .lock()
                        .ok()
                        .and_then(|mut s| s.pop_front())
                        .unwrap_or_else(|| default.clone());
                    conns.spawn(serve_one(stream, tx.clone(), answer));
                }
            }
        });
        Ok(Self {
            addr,
            requests,
            script,
            task,
        })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next connections with these, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        if let Ok(mut s) = self.script.lock() {
            s.extend(answers);
        }
    }

    /// The next request, waiting up to `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Received> {
        match tokio::time::timeout(within, self.requests.recv()).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => bail!("receiver stopped"),
            Err(_) => bail!("no request within {within:?}"),
        }
    }

    /// Requests that arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            out.push(r);
        }
        out
    }
}

async fn serve_one(mut stream: TcpStream, tx: mpsc::UnboundedSender<Received>, answer: Answer) {
    let Ok(req) = read_request(&mut stream).await else {
        return;
    };
    let _ = tx.send(req);
    let mut answer = answer;
    while let Answer::After(wait, then) = answer {
        tokio::time::sleep(wait).await;
        answer = *then;
    }
    match answer {
        Answer::Hang => {
            // Hold the connection open without answering; the test ends
            // long before this does.
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Answer::Status(code, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {code} Whatever\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Answer::After(..) => {}
    }
}

async fn read_request(stream: &mut TcpStream) -> Result<Received> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            bail!("request head too large");
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec())?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().context("no request line")?;
    let mut parts = request_line.split(' ');
    let method = parts.next().context("no method")?.to_owned();
    let path = parts.next().context("no path")?.to_owned();
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').context("bad header line")?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Received {
        method,
        path,
        headers,
        body,
    })
}

/// A port on 127.0.0.1 nothing listens on.
pub async fn closed_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

// ---------------------------------------------------------------- events

/// A raised alert event.
pub fn event(id: &str, kind: EventType, severity: Severity) -> NotificationEvent {
    let ts = rfc3339_utc(1_777_636_496_000);
    NotificationEvent {
        kind,
        id: id.into(),
        timestamp: ts.clone(),
        data: EventData {
            alert: AlertInfo {
                id: "a42".into(),
                kind: AlertKind::BackupFailed,
                severity,
                state: AlertState::Open,
                subject: "nightly-home".into(),
                message: "backup of /home failed: repository is locked — ünïcödé".into(),
                raised_at: ts.clone(),
                last_seen_at: ts,
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                url: Some("https://rm.example/alerts/a42".into()),
            },
            host: HostInfo {
                id: "h7".into(),
                name: "fileserver-1".into(),
            },
            group: None,
        },
    }
}

// ---------------------------------------------------------------- harness

/// A real bus, notifiers running `rm_notifier`, and a client speaking as
/// the alerts role.
pub struct Harness {
    pub bus: TestBus,
    pub alerts: TestClient,
    /// The alerts role's xkey (the sender of sealed channels).
    pub alerts_xkey: XKey,
    /// The notifier role's xkey, shared by every copy.
    pub notifier_xkey: XKey,
    running: Vec<(oneshot::Sender<()>, JoinHandle<Result<()>>)>,
}

impl Harness {
    /// A bus and an alerts client, no notifier yet.
    pub async fn new() -> Result<Self> {
        let bus = TestBus::start().await?;
        let alerts = bus.connect_role(Role::Alerts).await?;
        Ok(Self {
            bus,
            alerts,
            alerts_xkey: XKey::new(),
            notifier_xkey: XKey::new(),
            running: Vec::new(),
        })
    }

    /// A bus with one notifier whose config `tweak` adjusts.
    pub async fn with_notifier(tweak: impl FnOnce(&mut NotifierConfig)) -> Result<Self> {
        let mut h = Self::new().await?;
        h.spawn_notifier("n1", tweak).await?;
        Ok(h)
    }

    /// The config a notifier copy named `instance` would run with: its own
    /// connection (fresh credentials), the shared xkey, a 1 s attempt
    /// timeout.
    pub fn config(&self, instance: &str) -> Result<NotifierConfig> {
        let creds = self.bus.creds_for(&Role::Notifier)?;
        let mut spec = self.bus.spec(&Role::Notifier, creds);
        spec.name = format!("notifier {instance}");
        let mut config = NotifierConfig::new(spec, self.notifier_xkey.clone());
        config.instance = instance.into();
        config.attempt_timeout = Duration::from_secs(1);
        config.shutdown_grace = Duration::from_secs(3);
        Ok(config)
    }

    /// Starts a notifier copy (subscribed when this returns).
    pub async fn spawn_notifier(
        &mut self,
        instance: &str,
        tweak: impl FnOnce(&mut NotifierConfig),
    ) -> Result<()> {
        let mut config = self.config(instance)?;
        tweak(&mut config);
        let notifier = Notifier::start(config).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(notifier.serve(async move {
            let _ = stopped.await;
        }));
        self.running.push((stop, task));
        self.wait_ready(instance).await
    }

    /// Waits until the bus routes requests to `instance`: the client's
    /// flush does not wait for the server, so a request sent right after
    /// `start` could still find no responder. Probes are malformed requests
    /// (answered `failed`, nothing sent anywhere); with several copies in the
    /// queue group they repeat until this one answers.
    async fn wait_ready(&self, instance: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let probe = self.alerts.request(deliver_subject(), "{}".into()).await;
            if let Ok(msg) = probe {
                let reply: DeliverReply = decode("deliver reply", &msg.payload)?;
                if reply.notifier.as_deref() == Some(instance) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("notifier {instance} never answered")
    }

    /// A request for `event` to `channel`, sealed by the alerts role.
    pub fn request(
        &self,
        channel: &ChannelDef,
        event: &NotificationEvent,
        webhook_id: &str,
        attempt: u32,
    ) -> Result<DeliverRequest> {
        let sealed = DeliverRequest::seal_channel(
            channel,
            &self.alerts_xkey,
            &self.notifier_xkey.public_key(),
        )?;
        Ok(DeliverRequest {
            v: PROTOCOL_VERSION,
            delivery_id: format!("d-{webhook_id}-{attempt}"),
            webhook_id: webhook_id.into(),
            attempt,
            sender_xkey: self.alerts_xkey.public_key(),
            channel: sealed,
            event: event.clone(),
        })
    }

    /// Sends a request as the alerts role and parses the reply.
    pub async fn deliver(&self, req: &DeliverRequest) -> Result<DeliverReply> {
        self.deliver_raw(encode(req)).await
    }

    /// Sends raw bytes as a deliver request.
    pub async fn deliver_raw(&self, payload: bytes::Bytes) -> Result<DeliverReply> {
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            self.alerts.request(deliver_subject(), payload),
        )
        .await
        .context("no deliver reply within 15 s")??;
        Ok(decode("deliver reply", &reply.payload)?)
    }

    /// Signals every notifier to stop, without waiting.
    pub fn signal_stop(&mut self) {
        for (stop, _) in &mut self.running {
            let (replacement, _) = oneshot::channel();
            let _ = std::mem::replace(stop, replacement).send(());
        }
    }

    /// Stops every notifier and checks each `run` ended cleanly.
    pub async fn stop(mut self) -> Result<()> {
        for (stop, task) in self.running.drain(..) {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .context("notifier did not stop")???;
        }
        Ok(())
    }
}

/// Verifies a Standard Webhooks signature with Python's standard library
/// (an implementation independent of ours); returns its verdict line.
pub async fn python_verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
) -> Result<(bool, String)> {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys, time
d = json.load(sys.stdin)
secret = d["secret"]
if not secret.startswith("whsec_"):
    print("secret lacks whsec_"); sys.exit(1)
key = base64.b64decode(secret[len("whsec_"):])
ts = d["timestamp"]
if abs(time.time() - int(ts)) > 300:
    print("timestamp outside tolerance"); sys.exit(1)
signed = d["id"].encode() + b"." + ts.encode() + b"." + base64.b64decode(d["body"])
expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
for sig in d["signature"].split(" "):
    version, _, value = sig.partition(",")
    if version == "v1" and hmac.compare_digest(value, expected):
        print("verified"); sys.exit(0)
print("signature mismatch"); sys.exit(1)
"#;
    let input = serde_json::json!({
        "secret": secret,
        "id": id,
        "timestamp": timestamp,
        "body": data_encoding::BASE64.encode(body),
        "signature": signature,
    });
    let mut child = tokio::process::Command::new(rm_testkit::python_bin())
        .arg("-c")
        .arg(SCRIPT)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting python")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((out.status.success(), text))
}
