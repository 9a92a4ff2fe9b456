//! One client connection: a reader task that parses and executes the
//! client's operations, and a writer task that drains its outbound buffer.
//!
//! Publishers append `MSG`/`HMSG` frames straight into each receiver's
//! outbound buffer (under a short lock). The buffer is bounded by
//! `max_pending`: a receiver that cannot keep up is cut as a slow consumer
//! instead of growing memory. Both buffers start empty, grow on demand and
//! are released again when idle, so an idle connection costs little.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::auth::{Authenticated, UserIdent};
use super::perms::{ConnPerms, ReplyTracker};
use super::proto::{self, ClientOp, Parsed, ProtoError};
use super::sublist::{valid_literal_subject, valid_queue, valid_subject};
use super::{Account, COMPAT_VERSION, Shared, sys};

/// Read buffer reserved while waiting for input.
const READ_CHUNK: usize = 512;
/// Buffers larger than this are released when they drain.
const SHRINK_ABOVE: usize = 16 * 1024;

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    ClientClosed,
    Protocol(ProtoError),
    AuthViolation,
    AuthTimeout,
    Revoked,
    Expired,
    Stale,
    SlowConsumer,
    WriteError,
    ServerShutdown,
    NoRespondersWithoutHeaders,
    InvalidConnect,
}

impl CloseReason {
    /// The `-ERR` text sent before closing, nats-server's wording.
    fn err_text(&self) -> Option<&'static str> {
        match self {
            Self::Protocol(e) => e.err_text(),
            Self::AuthViolation => Some("Authorization Violation"),
            Self::AuthTimeout => Some("Authentication Timeout"),
            Self::Revoked => Some("User Authentication Revoked"),
            Self::Expired => Some("User Authentication Expired"),
            Self::Stale => Some("Stale Connection"),
            Self::SlowConsumer => Some("Slow Consumer"),
            Self::NoRespondersWithoutHeaders => Some("no responders requires headers support"),
            Self::InvalidConnect => Some("Invalid Connect"),
            Self::ClientClosed | Self::WriteError | Self::ServerShutdown => None,
        }
    }

    /// Queued output is thrown away instead of flushed.
    fn discards_output(&self) -> bool {
        matches!(self, Self::SlowConsumer | Self::WriteError)
    }
}

/// The client's CONNECT options; every field may be missing or `null`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectOpts {
    pub verbose: Option<bool>,
    pub pedantic: Option<bool>,
    pub echo: Option<bool>,
    pub headers: Option<bool>,
    pub no_responders: Option<bool>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub auth_token: Option<String>,
    pub jwt: Option<String>,
    pub nkey: Option<String>,
    pub sig: Option<String>,
    pub protocol: Option<i64>,
}

/// What the connection negotiated; fixed after CONNECT.
pub(crate) struct ConnState {
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
    pub verbose: bool,
    pub pedantic: bool,
    pub perms: ConnPerms,
    pub account: Arc<Account>,
    pub user: Option<UserIdent>,
}

struct Outbound {
    buf: BytesMut,
    /// Bytes handed to the writer and not yet written.
    in_flight: usize,
    closing: Option<CloseReason>,
}

/// The part of a connection other tasks see: its outbound buffer, its
/// negotiated state and how to close it.
pub(crate) struct ClientHandle {
    pub id: u64,
    out: Mutex<Outbound>,
    wake_writer: Notify,
    /// Stops the writer mid-write (output is being discarded).
    abort_writer: Notify,
    kill: Notify,
    closed: AtomicBool,
    state: OnceLock<ConnState>,
    replies: Mutex<ReplyTracker>,
    shared: Arc<Shared>,
    msgs_out: AtomicU64,
}

/// One subscription, shared by the account's sublist and its connection.
pub(crate) struct Subscription {
    pub client: Arc<ClientHandle>,
    pub subject: String,
    pub queue: Option<Box<str>>,
    pub sid: Box<str>,
    /// Auto-unsubscribe after this many deliveries (0 = never).
    pub max: AtomicU64,
    pub delivered: AtomicU64,
    /// A deny entry overlaps this wildcard: filter each delivery.
    pub filter_denied: bool,
}

impl ClientHandle {
    fn lock_out(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> Option<&ConnState> {
        self.state.get()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Appends bytes produced by `write` (at most `max_len` of them).
    /// Returns false if the connection is closing or was just cut as a
    /// slow consumer.
    fn enqueue_with(&self, max_len: usize, write: impl FnOnce(&mut BytesMut)) -> bool {
        let mut out = self.lock_out();
        if out.closing.is_some() {
            return false;
        }
        if out.buf.len() + out.in_flight + max_len > self.shared.limits.max_pending {
            drop(out);
            self.shared
                .stats()
                .slow_consumers
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                cid = self.id,
                max_pending = self.shared.limits.max_pending,
                "slow consumer: outbound buffer full, closing"
            );
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        write(&mut out.buf);
        drop(out);
        self.wake_writer.notify_one();
        true
    }

    pub fn enqueue(&self, bytes: &[u8]) -> bool {
        self.enqueue_with(bytes.len(), |b| b.extend_from_slice(bytes))
    }

    fn send_err(&self, text: &str) {
        self.enqueue_with(text.len() + 10, |b| {
            b.extend_from_slice(b"-ERR '");
            b.extend_from_slice(text.as_bytes());
            b.extend_from_slice(b"'\r\n");
        });
    }

    /// Closes the connection: sends the reason's `-ERR` (unless output is
    /// being discarded), lets the writer flush, stops the reader.
    pub fn close(&self, reason: CloseReason) {
        {
            let mut out = self.lock_out();
            if out.closing.is_some() {
                return;
            }
            if reason.discards_output() {
                out.buf = BytesMut::new();
            }
            if let Some(text) = reason.err_text() {
                out.buf
                    .extend_from_slice(format!("-ERR '{text}'\r\n").as_bytes());
            }
            if reason.discards_output() {
                self.abort_writer.notify_one();
            }
            out.closing = Some(reason);
        }
        self.closed.store(true, Ordering::Release);
        self.wake_writer.notify_one();
        self.kill.notify_one();
    }

    pub fn send_lame_duck_info(&self, shared: &Shared) {
        let info = Info::new(shared, self.id, None, None, true);
        if let Ok(json) = serde_json::to_string(&info) {
            self.enqueue(format!("INFO {json}\r\n").as_bytes());
        }
    }

    /// Queues one message for subscription `sub`. Returns whether it was
    /// queued.
    pub fn deliver(
        &self,
        sub: &Subscription,
        subject: &str,
        reply: Option<&str>,
        hdr_len: usize,
        msg: &[u8],
    ) -> bool {
        let Some(state) = self.state() else {
            return false;
        };
        // A receiver that did not negotiate headers gets the payload only.
        let (hdr_len, msg) = if hdr_len > 0 && !state.headers {
            (0, &msg[hdr_len..])
        } else {
            (hdr_len, msg)
        };
        let max_len = subject.len() + sub.sid.len() + reply.map_or(0, str::len) + msg.len() + 64;
        let ok = self.enqueue_with(max_len, |b| {
            if hdr_len > 0 {
                b.extend_from_slice(b"HMSG ");
            } else {
                b.extend_from_slice(b"MSG ");
            }
            b.extend_from_slice(subject.as_bytes());
            b.extend_from_slice(b" ");
            b.extend_from_slice(sub.sid.as_bytes());
            b.extend_from_slice(b" ");
            if let Some(r) = reply {
                b.extend_from_slice(r.as_bytes());
                b.extend_from_slice(b" ");
            }
            if hdr_len > 0 {
                let _ = write!(b, "{hdr_len} ");
            }
            let _ = write!(b, "{}\r\n", msg.len());
            b.extend_from_slice(msg);
            b.extend_from_slice(b"\r\n");
        });
        if ok {
            self.msgs_out.fetch_add(1, Ordering::Relaxed);
            let stats = self.shared.stats();
            stats.msgs_out.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes_out
                .fetch_add(msg.len() as u64, Ordering::Relaxed);
            if let (Some(r), Some(resp)) = (reply, state.perms.responses()) {
                self.replies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .delivered(r, Instant::now(), resp);
            }
        }
        ok
    }
}

/// Routes one message within `account`. Returns how many subscriptions
/// received it.
pub(crate) fn route(
    account: &Account,
    subject: &str,
    reply: Option<&str>,
    hdr_len: usize,
    msg: &[u8],
    from: Option<&ClientHandle>,
) -> usize {
    let matches = account.sublist_read().matches(subject);
    if matches.is_empty() {
        return 0;
    }
    let mut delivered = 0;
    let mut finished: Vec<Arc<Subscription>> = Vec::new();
    let try_one = |sub: &Arc<Subscription>, finished: &mut Vec<Arc<Subscription>>| -> bool {
        let c = &sub.client;
        if c.is_closed() {
            return false;
        }
        let Some(state) = c.state() else {
            return false;
        };
        if !state.echo && from.is_some_and(|f| f.id == c.id) {
            return false;
        }
        if sub.filter_denied && state.perms.delivery_denied(subject) {
            return false;
        }
        let max = sub.max.load(Ordering::Relaxed);
        if max > 0 {
            let n = sub.delivered.fetch_add(1, Ordering::Relaxed) + 1;
            if n > max {
                return false;
            }
            if n == max {
                finished.push(sub.clone());
            }
        }
        c.deliver(sub, subject, reply, hdr_len, msg)
    };
    for sub in &matches.plain {
        if try_one(sub, &mut finished) {
            delivered += 1;
        }
    }
    for group in &matches.queues {
        let start = rand::thread_rng().gen_range(0..group.len());
        for i in 0..group.len() {
            if try_one(&group[(start + i) % group.len()], &mut finished) {
                delivered += 1;
                break;
            }
        }
    }
    if !finished.is_empty() {
        let mut sl = account.sublist_write();
        for sub in &finished {
            sl.remove(sub);
        }
    }
    delivered
}

/// The INFO a server sends.
#[derive(Debug, Serialize)]
pub(crate) struct Info<'a> {
    server_id: &'a str,
    server_name: &'a str,
    version: &'static str,
    proto: u8,
    host: &'a str,
    port: u16,
    headers: bool,
    max_payload: usize,
    client_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ldm: bool,
    rm_version: &'static str,
}

impl<'a> Info<'a> {
    pub fn new(
        shared: &'a Shared,
        client_id: u64,
        client_ip: Option<String>,
        nonce: Option<&'a str>,
        ldm: bool,
    ) -> Self {
        Self {
            server_id: &shared.server_id,
            server_name: &shared.server_name,
            version: COMPAT_VERSION,
            proto: 1,
            host: &shared.host,
            port: shared.port,
            headers: true,
            max_payload: shared.limits.max_payload,
            client_id,
            client_ip,
            auth_required: shared.auth.required(),
            tls_required: shared.tls.is_some(),
            nonce,
            ldm,
            rm_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Tells a connection over the limit why it is refused, then closes it.
pub(crate) async fn refuse(mut stream: TcpStream, shared: Arc<Shared>) {
    let info = Info::new(&shared, 0, None, None, false);
    let mut text = match serde_json::to_string(&info) {
        Ok(j) => format!("INFO {j}\r\n"),
        Err(_) => String::new(),
    };
    text.push_str("-ERR 'maximum connections exceeded'\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(text.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn nonce() -> String {
    let mut raw = [0u8; 11];
    rand::thread_rng().fill(&mut raw);
    data_encoding::BASE64URL_NOPAD.encode(&raw)
}

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve(mut stream: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    let handle = Arc::new(ClientHandle {
        id,
        out: Mutex::new(Outbound {
            buf: BytesMut::new(),
            in_flight: 0,
            closing: None,
        }),
        wake_writer: Notify::new(),
        abort_writer: Notify::new(),
        kill: Notify::new(),
        closed: AtomicBool::new(false),
        state: OnceLock::new(),
        replies: Mutex::new(ReplyTracker::default()),
        shared: shared.clone(),
        msgs_out: AtomicU64::new(0),
    });
    shared.register(&handle);
    let nonce = shared.auth.required().then(nonce);
    tracing::debug!(cid = id, %peer, "client connected");
    let info = Info::new(
        &shared,
        id,
        Some(peer.ip().to_string()),
        nonce.as_deref(),
        shared.is_lame_duck(),
    );
    let info_line = match serde_json::to_string(&info) {
        Ok(j) => format!("INFO {j}\r\n"),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode INFO");
            finish(&handle, &shared);
            return;
        }
    };
    let deadline = tokio::time::Instant::now() + shared.limits.auth_timeout;
    if let Err(e) = stream.write_all(info_line.as_bytes()).await {
        tracing::debug!(cid = id, error = %e, "client gone before INFO");
        finish(&handle, &shared);
        return;
    }
    match shared.tls.clone() {
        None => {
            run(
                stream,
                handle.clone(),
                shared.clone(),
                nonce,
                deadline,
                peer,
            )
            .await
        }
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => run(tls, handle.clone(), shared.clone(), nonce, deadline, peer).await,
            Ok(Err(e)) => {
                tracing::info!(cid = id, %peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                tracing::info!(cid = id, %peer, "TLS handshake timed out");
            }
        },
    }
    finish(&handle, &shared);
}

fn finish(handle: &Arc<ClientHandle>, shared: &Shared) {
    handle.closed.store(true, Ordering::Release);
    shared.unregister(handle.id);
}

async fn run<S>(
    stream: S,
    handle: Arc<ClientHandle>,
    shared: Arc<Shared>,
    nonce: Option<String>,
    auth_deadline: tokio::time::Instant,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut writer = tokio::spawn(write_loop(wr, handle.clone()));
    let mut conn = Conn {
        handle: handle.clone(),
        shared: shared.clone(),
        nonce,
        subs: HashMap::new(),
        pings_out: 0,
        activity: false,
        peer,
    };
    let reason = conn.read_loop(rd, auth_deadline).await;
    handle.close(reason.clone());
    conn.cleanup();
    // Give the writer the time a write may take to flush the last bytes.
    let wait = shared.limits.write_deadline + Duration::from_millis(100);
    if tokio::time::timeout(wait, &mut writer).await.is_err() {
        tracing::debug!(cid = handle.id, "writer did not finish in time");
        writer.abort();
    }
    tracing::debug!(cid = handle.id, %peer, reason = ?reason, "client closed");
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, handle: Arc<ClientHandle>) {
    let deadline = handle.shared.limits.write_deadline;
    loop {
        let chunk = {
            let mut out = handle.lock_out();
            if out.buf.is_empty() {
                if out.closing.is_some() {
                    break;
                }
                if out.buf.capacity() > SHRINK_ABOVE {
                    out.buf = BytesMut::new();
                }
                None
            } else {
                let c = out.buf.split().freeze();
                out.in_flight = c.len();
                Some(c)
            }
        };
        let Some(chunk) = chunk else {
            handle.wake_writer.notified().await;
            continue;
        };
        let written = tokio::select! {
            r = tokio::time::timeout(deadline, wr.write_all(&chunk)) => r,
            _ = handle.abort_writer.notified() => break,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(cid = handle.id, error = %e, "write failed");
                handle.close(CloseReason::WriteError);
                break;
            }
            Err(_) => {
                handle
                    .shared
                    .stats()
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    cid = handle.id,
                    ?deadline,
                    "slow consumer: write deadline exceeded, closing"
                );
                handle.close(CloseReason::SlowConsumer);
                break;
            }
        }
        let _ = wr.flush().await;
        let mut out = handle.lock_out();
        out.in_flight = 0;
        if out
            .closing
            .as_ref()
            .is_some_and(CloseReason::discards_output)
        {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
}

/// The reader side's private state.
struct Conn {
    handle: Arc<ClientHandle>,
    shared: Arc<Shared>,
    nonce: Option<String>,
    subs: HashMap<Box<str>, Arc<Subscription>>,
    pings_out: u32,
    activity: bool,
    peer: SocketAddr,
}

enum Flow {
    Continue,
    Close(CloseReason),
}

impl Conn {
    fn connected(&self) -> Option<&ConnState> {
        self.handle.state()
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        mut rd: R,
        auth_deadline: tokio::time::Instant,
    ) -> CloseReason {
        let limits = self.shared.limits.clone();
        let mut buf = BytesMut::new();
        let mut need = 0usize;
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.ping_interval,
            limits.ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let auth_timer = tokio::time::sleep_until(auth_deadline);
        tokio::pin!(auth_timer);
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let expiry = tokio::time::sleep_until(far);
        tokio::pin!(expiry);
        let mut expiry_set = false;
        loop {
            if !expiry_set
                && let Some(exp) = self
                    .connected()
                    .and_then(|s| s.user.as_ref())
                    .and_then(|u| u.expires)
            {
                let left = exp - rm_bus::clock::system().now_secs();
                let at = tokio::time::Instant::now() + Duration::from_secs(left.max(0) as u64);
                expiry.as_mut().reset(at);
                expiry_set = true;
            }
            let want = need.saturating_sub(buf.len()).max(READ_CHUNK);
            if buf.capacity() - buf.len() < want {
                buf.reserve(want);
            }
            tokio::select! {
                biased;
                _ = self.handle.kill.notified() => {
                    return self.handle.lock_out().closing.clone().unwrap_or(CloseReason::ServerShutdown);
                }
                r = rd.read_buf(&mut buf) => {
                    match r {
                        Ok(0) => return CloseReason::ClientClosed,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(cid = self.handle.id, error = %e, "read failed");
                            return CloseReason::ClientClosed;
                        }
                    }
                    self.activity = true;
                    loop {
                        let parsed = match proto::parse(&buf, limits.max_payload) {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::info!(cid = self.handle.id, peer = %self.peer, error = %e, "protocol error, closing");
                                return CloseReason::Protocol(e);
                            }
                        };
                        match parsed {
                            Parsed::NeedMore(n) => {
                                need = n;
                                break;
                            }
                            Parsed::Op(op, used) => {
                                let flow = self.handle_op(op).await;
                                buf.advance(used);
                                if let Flow::Close(reason) = flow {
                                    return reason;
                                }
                            }
                        }
                    }
                    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
                        buf = BytesMut::new();
                    }
                }
                _ = ping.tick() => {
                    if self.connected().is_none() {
                        continue;
                    }
                    if std::mem::take(&mut self.activity) && self.pings_out == 0 {
                        continue;
                    }
                    if self.pings_out >= limits.max_pings_out {
                        tracing::info!(cid = self.handle.id, peer = %self.peer, pings_out = self.pings_out, "stale connection, closing");
                        return CloseReason::Stale;
                    }
                    self.pings_out += 1;
                    self.handle.enqueue(b"PING\r\n");
                }
                _ = &mut auth_timer, if self.connected().is_none() => {
                    self.shared.stats().auth_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(cid = self.handle.id, peer = %self.peer, "authentication timeout, closing");
                    return CloseReason::AuthTimeout;
                }
                _ = &mut expiry, if expiry_set => {
                    tracing::info!(cid = self.handle.id, peer = %self.peer, "user JWT expired, closing");
                    return CloseReason::Expired;
                }
            }
        }
    }

    async fn handle_op(&mut self, op: ClientOp<'_>) -> Flow {
        match op {
            ClientOp::Ping => {
                self.handle.enqueue(b"PONG\r\n");
                Flow::Continue
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                Flow::Continue
            }
            ClientOp::Ignored => Flow::Continue,
            ClientOp::Connect(json) => self.on_connect(json),
            other => {
                if self.connected().is_none() {
                    if self.shared.auth.required() {
                        self.shared
                            .stats()
                            .auth_failures
                            .fetch_add(1, Ordering::Relaxed);
                        return Flow::Close(CloseReason::AuthViolation);
                    }
                    if let Flow::Close(r) = self.on_connect(b"{}") {
                        return Flow::Close(r);
                    }
                }
                match other {
                    ClientOp::Pub {
                        subject,
                        reply,
                        hdr_len,
                        headers,
                        msg,
                    } => {
                        self.on_pub(subject, reply, if headers { hdr_len } else { 0 }, msg)
                            .await
                    }
                    ClientOp::Sub {
                        subject,
                        queue,
                        sid,
                    } => self.on_sub(subject, queue, sid),
                    ClientOp::Unsub { sid, max } => self.on_unsub(sid, max),
                    _ => Flow::Continue,
                }
            }
        }
    }

    fn ok(&self) {
        if self.connected().is_some_and(|s| s.verbose) {
            self.handle.enqueue(b"+OK\r\n");
        }
    }

    fn on_connect(&mut self, json: &[u8]) -> Flow {
        if self.connected().is_some() {
            // A repeated CONNECT changes nothing here.
            self.ok();
            return Flow::Continue;
        }
        let opts: ConnectOpts = match serde_json::from_slice(json) {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(cid = self.handle.id, peer = %self.peer, error = %e, "invalid CONNECT");
                return Flow::Close(CloseReason::InvalidConnect);
            }
        };
        let headers = opts.headers.unwrap_or(false);
        let no_responders = opts.no_responders.unwrap_or(false);
        if no_responders && !headers {
            return Flow::Close(CloseReason::NoRespondersWithoutHeaders);
        }
        let Authenticated {
            account,
            perms,
            user,
        } = match self.shared.auth.authenticate(&opts, self.nonce.as_deref()) {
            Ok(a) => a,
            Err(why) => {
                self.shared
                    .stats()
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(cid = self.handle.id, peer = %self.peer, reason = %why, "authorization violation");
                return Flow::Close(CloseReason::AuthViolation);
            }
        };
        tracing::debug!(
            cid = self.handle.id,
            account = %account.name,
            user = user.as_ref().map(|u| u.nkey.as_str()).unwrap_or(""),
            name = opts.name.as_deref().unwrap_or(""),
            lang = opts.lang.as_deref().unwrap_or(""),
            "client authenticated"
        );
        account
            .clients()
            .insert(self.handle.id, Arc::downgrade(&self.handle));
        let state = ConnState {
            echo: opts.echo.unwrap_or(true),
            headers,
            no_responders,
            verbose: opts.verbose.unwrap_or(false),
            pedantic: opts.pedantic.unwrap_or(false),
            perms,
            account,
            user,
        };
        let _ = self.handle.state.set(state);
        // The account may have been updated (revoking this user) between
        // authentication and registration.
        if let Some(s) = self.connected()
            && let Some(reason) = super::auth::still_valid(&s.account, s.user.as_ref())
        {
            return Flow::Close(reason);
        }
        self.ok();
        Flow::Continue
    }

    async fn on_pub(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        hdr_len: usize,
        msg: &[u8],
    ) -> Flow {
        let Some(state) = self.handle.state() else {
            return Flow::Continue;
        };
        let stats = self.shared.stats();
        stats.msgs_in.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_in
            .fetch_add(msg.len() as u64, Ordering::Relaxed);
        if !valid_literal_subject(subject) {
            if state.pedantic {
                self.handle.send_err("Invalid Publish Subject");
            }
            return Flow::Continue;
        }
        if !state.perms.can_publish(subject) {
            let replied = state.perms.responses().is_some_and(|resp| {
                self.handle
                    .replies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .try_reply(subject, Instant::now(), resp)
            });
            if !replied {
                tracing::debug!(
                    cid = self.handle.id,
                    subject,
                    "publish permission violation"
                );
                self.handle.send_err(&format!(
                    "Permissions Violation for Publish to \"{subject}\""
                ));
                return Flow::Continue;
            }
        }
        // nats-server acknowledges a verbose PUB before delivering it.
        self.ok();
        let account = state.account.clone();
        let mut delivered = route(&account, subject, reply, hdr_len, msg, Some(&self.handle));
        if account.is_system
            && let Some(answer) = sys::handle(&self.shared, subject, &msg[hdr_len..]).await
        {
            delivered += 1;
            if let Some(r) = reply {
                route(&account, r, None, 0, answer.as_bytes(), None);
            }
        }
        if delivered == 0
            && state.no_responders
            && let Some(r) = reply
        {
            self.no_responders(subject, r);
        }
        Flow::Continue
    }

    /// Answers a request nobody received with a header-only 503, on the
    /// client's own subscription matching the reply subject.
    fn no_responders(&self, subject: &str, reply: &str) {
        let Some(sub) = self
            .subs
            .values()
            .find(|s| s.queue.is_none() && super::sublist::matches(&s.subject, reply))
        else {
            return;
        };
        let hdr = format!("NATS/1.0 503\r\nNats-Subject: {subject}\r\n\r\n");
        self.handle.enqueue(
            format!(
                "HMSG {reply} {} {} {}\r\n{hdr}\r\n",
                sub.sid,
                hdr.len(),
                hdr.len()
            )
            .as_bytes(),
        );
    }

    fn on_sub(&mut self, subject: &str, queue: Option<&str>, sid: &str) -> Flow {
        let Some(state) = self.handle.state() else {
            return Flow::Continue;
        };
        if !valid_subject(subject) || queue.is_some_and(|q| !valid_queue(q)) {
            self.handle.send_err("Invalid Subject");
            return Flow::Continue;
        }
        if !state.perms.can_subscribe(subject, queue) {
            tracing::debug!(
                cid = self.handle.id,
                subject,
                "subscribe permission violation"
            );
            let text = match queue {
                Some(q) => format!(
                    "Permissions Violation for Subscription to \"{subject}\" using queue \"{q}\""
                ),
                None => format!("Permissions Violation for Subscription to \"{subject}\""),
            };
            self.handle.send_err(&text);
            return Flow::Continue;
        }
        let limit = self.shared.limits.max_subscriptions;
        if limit > 0 && self.subs.len() >= limit && !self.subs.contains_key(sid) {
            self.handle.send_err("maximum subscriptions exceeded");
            return Flow::Continue;
        }
        if self.subs.contains_key(sid) {
            // nats-server ignores a SUB reusing a live sid.
            self.ok();
            return Flow::Continue;
        }
        let sub = Arc::new(Subscription {
            client: self.handle.clone(),
            subject: subject.to_owned(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            filter_denied: state.perms.needs_delivery_filter(subject),
        });
        state.account.sublist_write().insert(sub.clone());
        self.subs.insert(sid.into(), sub);
        self.ok();
        Flow::Continue
    }

    fn on_unsub(&mut self, sid: &str, max: Option<u64>) -> Flow {
        let Some(state) = self.handle.state() else {
            return Flow::Continue;
        };
        if let Some(sub) = self.subs.get(sid) {
            let max = max.unwrap_or(0);
            if max > 0 && sub.delivered.load(Ordering::Relaxed) < max {
                sub.max.store(max, Ordering::Relaxed);
            } else if let Some(sub) = self.subs.remove(sid) {
                state.account.sublist_write().remove(&sub);
            }
        }
        self.ok();
        Flow::Continue
    }

    fn cleanup(&mut self) {
        if let Some(state) = self.handle.state() {
            if !self.subs.is_empty() {
                let mut sl = state.account.sublist_write();
                for (_, sub) in self.subs.drain() {
                    sl.remove(&sub);
                }
            }
            state.account.clients().remove(&self.handle.id);
        }
    }
}
