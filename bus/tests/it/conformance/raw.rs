//! A raw NATS protocol client: for asserting exact wire behaviour (error
//! texts, +OK, PING handling, slow consumers) identically on both servers.

use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use rm_bus::creds::UserCreds;
use rm_testkit::TestBus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    pub info: serde_json::Value,
    /// Server PINGs read (and not answered) while logging in: a server
    /// with a short ping interval may send one before its PONG.
    pub pings_during_login: u32,
}

impl Raw {
    /// Opens a socket and reads the server's INFO.
    pub async fn open(bus: &TestBus) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", bus.port()))
            .await
            .expect("tcp connect");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            info: serde_json::Value::Null,
            pings_during_login: 0,
        };
        let line = raw.line(Duration::from_secs(5)).await.expect("INFO line");
        let json = line
            .strip_prefix("INFO ")
            .expect("server speaks INFO first");
        raw.info = serde_json::from_str(json).expect("INFO is JSON");
        raw
    }

    /// Opens, and sends CONNECT as `creds` (JWT + nonce signature), with
    /// `extra` CONNECT fields merged in, then PING; waits for PONG.
    pub async fn login(bus: &TestBus, creds: &UserCreds, extra: serde_json::Value) -> Raw {
        let mut raw = Raw::open(bus).await;
        let connect = raw.connect_json(creds, extra);
        raw.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
            .await;
        loop {
            let l = raw
                .op(Duration::from_secs(5))
                .await
                .expect("PONG after CONNECT");
            if l == "PONG" {
                break;
            }
            if l == "PING" {
                raw.pings_during_login += 1;
                continue;
            }
            assert!(l == "+OK", "unexpected {l:?} after CONNECT");
        }
        raw
    }

    pub fn connect_json(&self, creds: &UserCreds, extra: serde_json::Value) -> serde_json::Value {
        let nonce = self.info["nonce"].as_str().expect("nonce in INFO");
        let kp = creds.key_pair().expect("seed");
        let sig = kp.sign(nonce.as_bytes()).expect("sign");
        let mut c = serde_json::json!({
            "verbose": false, "pedantic": false, "protocol": 1, "echo": true,
            "headers": true, "no_responders": true, "lang": "raw", "version": "0",
            "jwt": creds.jwt, "sig": BASE64URL_NOPAD.encode(&sig),
            "user": null, "pass": null, "auth_token": null, "name": null,
        });
        if let (Some(obj), Some(more)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                obj.insert(k.clone(), v.clone());
            }
        }
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends, tolerating a server that already closed the socket.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next line (without CRLF); `None` on EOF, reset or timeout.
    pub async fn line(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next protocol line that is not an INFO (nats-server sends an
    /// extra INFO after CONNECT).
    pub async fn op(&mut self, within: Duration) -> Option<String> {
        loop {
            let l = self.line(within).await?;
            if !l.starts_with("INFO ") {
                return Some(l);
            }
        }
    }

    /// Reads and discards until the server closes the connection; false if
    /// it is still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Everything until close (or `within`), as text.
    pub async fn rest(&mut self, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }
}
