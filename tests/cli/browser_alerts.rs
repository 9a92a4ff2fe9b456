//! Set-up for the alerts browser steps (`tests/browser/steps/60-alerts.mjs`):
//! a local webhook receiver that answers 200 and keeps every delivery, and
//! a webhook channel pointing at it, created through the alerts role. The
//! steps read what it received from `GET <receiver>/received` (a JSON
//! array of the bodies, oldest first).
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_bus::subject::{SvcRole, Verb};

use crate::serve::call_role;

/// The receiver; stops its thread when dropped.
pub(crate) struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request: (request line, body).
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = head.lines().next().unwrap_or_default().to_owned();
    Some((line, buf[head_end..].to_vec()))
}

fn answer(stream: &mut TcpStream, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Starts the receiver on 127.0.0.1 and a webhook channel `alerts-e2e`
/// pointing at it; returns the receiver and the config the steps get.
pub(crate) async fn setup(data: &Path, bus_port: u16) -> (Receiver, serde_json::Value) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let Some((line, body)) = read_request(&mut s) else {
                            continue;
                        };
                        if line.starts_with("GET /received") {
                            let list = serde_json::to_string(&*got.lock().unwrap()).unwrap();
                            answer(&mut s, &list);
                        } else {
                            let v =
                                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                            got.lock().unwrap().push(v);
                            answer(&mut s, "{}");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let key = call_role(
        data,
        bus_port,
        SvcRole::Alerts,
        Verb::new("pubkey"),
        serde_json::json!({}),
    )
    .await;
    let xkey = key.ok.expect("the alerts role's xkey")["xkey"]
        .as_str()
        .unwrap()
        .to_owned();
    let def = rm_bus::notify::ChannelDef::Webhook(rm_bus::notify::WebhookChannel {
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: None,
        headers: Default::default(),
    });
    let sealed = rm_alerts::api::SealedChannel::seal(&def, &xkey).unwrap();
    let created = call_role(
        data,
        bus_port,
        SvcRole::Alerts,
        Verb::new("channel-create"),
        serde_json::json!({"name": "alerts-e2e", "enabled": true, "definition": sealed}),
    )
    .await;
    assert!(created.ok.is_some(), "channel-create: {:?}", created.error);
    (
        Receiver {
            stop,
            thread: Some(thread),
        },
        serde_json::json!({"received": format!("http://127.0.0.1:{port}/received")}),
    )
}
