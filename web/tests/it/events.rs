//! Live events over SSE, in-process: every client gets every event of its
//! topics in order; a client that never reads is dropped without slowing
//! the others; `Last-Event-ID` resumes, or says refetch once the position
//! has left the ring; unknown topics are refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;
use rm_web::auth::Role;
use rm_web::events::{CLIENT_BUFFER, RING, Topic};

use crate::harness::*;

/// Reads SSE frames from `body`, calling `on` with (event name, id) of each.
async fn read_events(body: Body, mut on: impl FnMut(&str, Option<u64>) -> bool) {
    let mut stream = body.into_data_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut name = None;
            let mut id = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
            }
            if let Some(name) = name {
                if !on(&name, id) {
                    return;
                }
            }
        }
    }
}

async fn open(h: &H, s: &Session, query: &str, last: Option<u64>) -> axum::http::Response<Body> {
    let mut r = req("GET", &format!("/api/v1/events{query}")).header("cookie", s.header());
    if let Some(last) = last {
        r = r.header("last-event-id", last.to_string());
    }
    let resp = h.send(r.body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header_of(&resp, "content-type").as_deref(),
        Some("text/event-stream")
    );
    resp
}

/// Waits (bounded) until `cond` holds, yielding to the readers meanwhile.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_get_every_event_while_one_that_never_reads_is_dropped() {
    let h = H::new().await;
    h.user("viewer", Role::Viewer).await;
    let s = h.login("viewer").await;
    const READERS: usize = 299;
    const EVENTS: u64 = 1500;
    let mut counters = Vec::new();
    for _ in 0..READERS {
        let resp = open(&h, &s, "?topics=jobs", None).await;
        let got = Arc::new(AtomicU64::new(0));
        counters.push(got.clone());
        tokio::spawn(async move {
            let mut last = 0;
            read_events(resp.into_body(), |name, id| {
                assert_eq!(name, "job");
                let id = id.expect("every event has an id");
                assert!(id > last, "events arrive in order");
                last = id;
                got.fetch_add(1, Ordering::SeqCst);
                true
            })
            .await;
        });
    }
    let _never_read = open(&h, &s, "?topics=jobs", None).await;
    let hub = &h.state.events;
    assert_eq!(hub.clients(), READERS + 1);
    let mut published = 0;
    while published < EVENTS {
        for _ in 0..100 {
            hub.publish(
                Topic::Jobs,
                serde_json::json!({"what": "progress", "n": published}),
            );
            // Another topic: nobody here asked for it.
            hub.publish(Topic::Alerts, serde_json::json!({"what": "raised"}));
            published += 1;
        }
        until("every reader to catch up", || {
            counters
                .iter()
                .all(|c| c.load(Ordering::SeqCst) == published)
        })
        .await;
    }
    assert!(
        EVENTS as usize > CLIENT_BUFFER,
        "the silent client's buffer overflowed"
    );
    until("the silent client to be dropped", || hub.dropped() == 1).await;
    until("the client count to drop to the readers", || {
        hub.clients() == READERS
    })
    .await;
    assert!(counters.iter().all(|c| c.load(Ordering::SeqCst) == EVENTS));
}

#[tokio::test]
async fn last_event_id_resumes_from_the_ring_or_says_refetch() {
    let h = H::new().await;
    h.user("viewer", Role::Viewer).await;
    let s = h.login("viewer").await;
    let hub = &h.state.events;
    for i in 0..10 {
        hub.publish(Topic::Hosts, serde_json::json!({"what": "online", "i": i}));
    }
    // Resume after event 7: 8, 9 and 10 come back.
    let resp = open(&h, &s, "?topics=hosts", Some(7)).await;
    let mut ids = Vec::new();
    read_events(resp.into_body(), |name, id| {
        assert_eq!(name, "host");
        ids.push(id.unwrap());
        ids.len() < 3
    })
    .await;
    assert_eq!(ids, [8, 9, 10]);
    // Push event 1 out of the ring: resuming from it must refetch.
    for _ in 0..RING {
        hub.publish(Topic::Jobs, serde_json::json!({"what": "log"}));
    }
    let resp = open(&h, &s, "?topics=hosts", Some(1)).await;
    let mut first = None;
    read_events(resp.into_body(), |name, _| {
        first = Some(name.to_owned());
        false
    })
    .await;
    assert_eq!(first.as_deref(), Some("refetch"));
}

#[tokio::test]
async fn an_unknown_topic_is_refused_and_anonymous_clients_get_nothing() {
    let h = H::new().await;
    h.user("viewer", Role::Viewer).await;
    let s = h.login("viewer").await;
    let resp = h
        .send(
            req("GET", "/api/v1/events?topics=secrets")
                .header("cookie", s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(text(resp).await.contains("\"field\":\"topics\""));
    let resp = h
        .send(req("GET", "/api/v1/events").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), 401);
}
