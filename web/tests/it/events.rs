//! Live events over SSE: bus messages reach clients by topic, a client
//! resumes with `Last-Event-ID` (or is told to refetch), and one client
//! that stops reading is told to refetch and goes on from the newest event
//! while 299 others get every event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use http_body_util::BodyExt;
use rm_bus::creds::Role as BusRole;
use rm_web::auth::Role;

use crate::harness::*;

/// Reads SSE frames from a body: `(event name, data)` pairs.
struct Reader {
    body: Body,
    buf: String,
}

impl Reader {
    fn new(body: Body) -> Self {
        Self {
            body,
            buf: String::new(),
        }
    }

    /// The next event, or None when the stream ended (within 10 s).
    async fn next(&mut self) -> Option<(String, String, serde_json::Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut id = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_owned();
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                return Some((name, id, value));
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")?
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

async fn connect(h: &H, s: &Session, query: &str, last_id: Option<&str>) -> Reader {
    let mut r = req("GET", &format!("/api/v1/events{query}")).header(header::COOKIE, s.header());
    if let Some(id) = last_id {
        r = r.header("last-event-id", id);
    }
    let resp = h.send(r.body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header_of(&resp, "content-type").as_deref(),
        Some("text/event-stream")
    );
    Reader::new(resp.into_body())
}

/// The alerts role's `rm.evt.alert.raised` for alert `al_1` of host `h1`.
async fn raise_alert(alerts_role: &async_nats::Client) {
    let body = serde_json::json!({"v": 1, "ts_ms": 1, "host": "h1", "id": "al_1"});
    alerts_role
        .publish(
            "rm.evt.alert.raised",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn bus_events_reach_clients_by_topic() {
    let h = H::new().await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    tokio::spawn(rm_web::events::pump(h.state.clone()));
    let jobs = connect(&h, &s, "?topics=jobs", None).await;
    let mut jobs = jobs;
    let mut alerts = connect(&h, &s, "?topics=alerts,hosts", None).await;

    let agent = h.bus.agent("h1").await.unwrap();
    let alerts_role = h.bus.connect_role(BusRole::Alerts).await.unwrap();
    // the pump subscribes asynchronously: publish until the first arrives
    let progress = serde_json::json!({"v": 1, "ts_ms": 5, "elapsed_ms": 100, "percent_done": 0.25,
        "bytes_done": 10, "total_bytes": 40, "current_files": ["/a"]});
    let first = loop {
        raise_alert(&alerts_role).await;
        agent
            .publish(
                "rm.agent.h1.job.job_1.progress",
                serde_json::to_vec(&progress).unwrap().into(),
            )
            .await
            .unwrap();
        agent.flush().await.unwrap();
        alerts_role.flush().await.unwrap();
        if h.state.events.clients() == 2
            && let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), jobs.next()).await
        {
            break e;
        }
    };
    // the jobs client sees only job events: the alert published before it is not there
    assert_eq!(first.0, "job");
    assert_eq!(first.2["type"], "progress");
    assert_eq!(first.2["job_id"], "job_1");
    assert_eq!(first.2["host_id"], "h1");
    assert_eq!(first.2["percent_done"], 0.25);
    assert_eq!(first.2["current_files"], serde_json::json!(["/a"]));
    let (name, _, data) = alerts.next().await.unwrap();
    assert_eq!(name, "alert");
    assert_eq!(data["type"], "raised");
    assert_eq!(data["alert_id"], "al_1");
}

/// The `<body ...>` tag of the page at `path`: where a page names its live
/// events' topics and scope for the page script.
async fn body_tag(h: &H, s: &Session, path: &str) -> String {
    let (status, html) = crate::settings::get(h, s, path).await;
    assert_eq!(status, 200, "{path}");
    let at = html.find("<body").expect("a body");
    html[at..at + html[at..].find('>').unwrap()].to_owned()
}

/// The field a refused `GET` of `path` names (it must answer 400).
async fn refused_field(h: &H, s: &Session, path: impl AsRef<str>) -> String {
    let resp = h
        .send(
            req("GET", path.as_ref())
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 400, "{}", path.as_ref());
    json(resp).await["error"]["field"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Seeds `hosts` hosts (`seed-h000000`, ...) with `jobs_per_host` jobs and
/// a snapshot each, and their repository `seed-repo-0000`.
async fn seed(h: &H, hosts: usize, jobs_per_host: usize) {
    rm_store::seed::fleet(
        &h.state.store,
        &rm_store::seed::Spec {
            hosts,
            jobs_per_host,
            snapshots_per_host: 1,
            now_ms: h.state.now(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// Polls `f` every 20 ms until it holds, for at most 10 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within 10 s: {what}");
}

/// Heartbeats come at a rate set by the size of the fleet: they reach only
/// clients of the `vitals` topic, without an id and outside the ring, and
/// the web process holds the heartbeat subscription only while such a
/// client is connected.
#[tokio::test]
async fn heartbeats_reach_only_vitals_clients_and_are_subscribed_only_while_one_is_connected() {
    let h = H::new().await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    tokio::spawn(rm_web::events::pump(h.state.clone()));
    let mut all = connect(&h, &s, "", None).await;
    let agent = h.bus.agent("h1").await.unwrap();
    let alerts_role = h.bus.connect_role(BusRole::Alerts).await.unwrap();
    let ev = &h.state.events;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!ev.vitals_subscribed(), "nobody asked for vitals");

    let mut vitals = connect(&h, &s, "?topics=vitals", None).await;
    eventually("subscribed for a vitals client", || ev.vitals_subscribed()).await;
    let hb =
        serde_json::to_vec(&serde_json::json!({"v": 1, "ts_ms": 7, "uptime_secs": 3})).unwrap();
    // the subscription reaches the bus asynchronously: publish until one arrives
    let first = loop {
        agent
            .publish("rm.agent.h1.heartbeat", hb.clone().into())
            .await
            .unwrap();
        agent.flush().await.unwrap();
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), vitals.next()).await {
            break e;
        }
    };
    assert_eq!(first.0, "host");
    assert_eq!(first.1, "", "vitals carry no id");
    assert_eq!(first.2["type"], "vitals");
    assert_eq!(first.2["host_id"], "h1");
    assert_eq!(first.2["uptime_secs"], 3);

    raise_alert(&alerts_role).await;
    alerts_role.flush().await.unwrap();
    // the default topics: the alert is the first event, no heartbeat before it
    let (name, id, data) = all.next().await.unwrap();
    assert_eq!(
        (name.as_str(), data["type"].as_str()),
        ("alert", Some("raised"))
    );
    assert!(!id.is_empty());
    // and none was kept for resumption
    let mut replay = connect(&h, &s, "", Some("0")).await;
    assert_eq!(got(&mut replay, 1).await, ["alert/raised"]);

    drop(vitals);
    eventually("unsubscribed after the last vitals client left", || {
        !ev.vitals_subscribed()
    })
    .await;
    assert_eq!(ev.vitals_clients(), 0);
}

/// The next `n` events of `r` as `name/type`.
async fn got(r: &mut Reader, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (name, _, data) = r.next().await.expect("an event");
        out.push(format!("{name}/{}", data["type"].as_str().unwrap_or("")));
    }
    out
}

#[tokio::test]
async fn a_viewer_does_not_receive_log_lines_or_channel_changes_live_or_replayed() {
    let h = H::new().await;
    h.user("v", Role::Viewer).await;
    h.user("o", Role::Operator).await;
    h.user("a", Role::Admin).await;
    let (sv, so, sa) = (h.login("v").await, h.login("o").await, h.login("a").await);
    let mut viewer = connect(&h, &sv, "", None).await;
    let mut operator = connect(&h, &so, "", None).await;
    let mut admin = connect(&h, &sa, "", None).await;
    let ev = &h.state.events;
    ev.publish(
        "job",
        serde_json::json!({"type": "log", "job_id": "j1", "lines": [{"text": "/secret/path"}]}),
    );
    ev.publish(
        "channels",
        serde_json::json!({"type": "changed", "id": "c1"}),
    );
    ev.publish(
        "job",
        serde_json::json!({"type": "progress", "job_id": "j1"}),
    );
    ev.publish(
        "alert",
        serde_json::json!({"type": "raised", "alert_id": "al"}),
    );
    // the viewer's first event is the progress: the log line and the
    // channel change published before it were skipped
    assert_eq!(got(&mut viewer, 2).await, ["job/progress", "alert/raised"]);
    assert_eq!(
        got(&mut operator, 3).await,
        ["job/log", "job/progress", "alert/raised"]
    );
    assert_eq!(
        got(&mut admin, 4).await,
        [
            "job/log",
            "channels/changed",
            "job/progress",
            "alert/raised"
        ]
    );
    // the same rule on a Last-Event-ID replay
    let mut replay = connect(&h, &sv, "", Some("0")).await;
    assert_eq!(got(&mut replay, 2).await, ["job/progress", "alert/raised"]);
    let mut replay = connect(&h, &so, "?topics=jobs", Some("0")).await;
    assert_eq!(got(&mut replay, 2).await, ["job/log", "job/progress"]);
}

#[tokio::test]
async fn last_event_id_resumes_from_the_ring_or_asks_to_refetch() {
    let h = H::new().await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    for i in 0..3 {
        h.state
            .events
            .publish("job", serde_json::json!({"type": "progress", "n": i}));
    }
    let mut r = connect(&h, &s, "", Some("1")).await;
    let (_, id, data) = r.next().await.unwrap();
    assert_eq!(
        (id.as_str(), data["n"].clone()),
        ("2", serde_json::json!(1))
    );
    let (_, id, _) = r.next().await.unwrap();
    assert_eq!(id, "3");
    // live events continue after the replay, without repeats
    h.state.events.publish("job", serde_json::json!({"n": 3}));
    let (_, id, _) = r.next().await.unwrap();
    assert_eq!(id, "4");

    // far behind the ring: told to refetch, then the ring
    for i in 0..rm_web::events::RING {
        h.state.events.publish("host", serde_json::json!({"n": i}));
    }
    let mut old = connect(&h, &s, "?topics=hosts", Some("1")).await;
    let (name, _, _) = old.next().await.unwrap();
    assert_eq!(name, "refetch");
    let (name, _, _) = old.next().await.unwrap();
    assert_eq!(name, "host");

    // unknown topics are a clear error
    assert_eq!(
        refused_field(&h, &s, "/api/v1/events?topics=weather").await,
        "topics"
    );
}

/// A page's first live connection must not miss what happened between
/// its render and the connection (a job that finished meanwhile left the
/// job page saying "running" for good): the page carries the last event id
/// published before it read the database, and `?since=` replays after it.
#[tokio::test]
async fn a_page_carries_its_render_event_id_and_since_replays_what_came_after_it() {
    let h = H::new().await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    for i in 0..2 {
        h.state
            .events
            .publish("job", serde_json::json!({"type": "started", "n": i}));
    }
    let page = text(
        h.send(
            req("GET", "/jobs")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    let rendered_at = page
        .split("data-event-id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| {
            panic!(
                "the page carries data-event-id: {}",
                &page[..page.len().min(600)]
            )
        });
    assert_eq!(
        rendered_at, "2",
        "the last event published before the render"
    );

    // the job finishes before the page's stream connects
    h.state
        .events
        .publish("job", serde_json::json!({"type": "finished", "n": 2}));
    let mut r = connect(&h, &s, &format!("?topics=jobs&since={rendered_at}"), None).await;
    let (_, id, data) = r.next().await.unwrap();
    assert_eq!(
        (id.as_str(), data["type"].as_str()),
        ("3", Some("finished"))
    );
    // then live, without repeats
    h.state
        .events
        .publish("job", serde_json::json!({"type": "queued", "n": 3}));
    let (_, id, _) = r.next().await.unwrap();
    assert_eq!(id, "4");

    // Last-Event-ID (a browser's own reconnect) wins over since
    let mut r = connect(&h, &s, "?topics=jobs&since=0", Some("3")).await;
    let (_, id, _) = r.next().await.unwrap();
    assert_eq!(id, "4");

    // an id this process never gave out (it restarted since the render):
    // told to refetch, and later events still arrive
    let mut r = connect(&h, &s, "?topics=jobs&since=900", None).await;
    let (name, _, _) = r.next().await.unwrap();
    assert_eq!(name, "refetch");
    h.state
        .events
        .publish("job", serde_json::json!({"type": "queued", "n": 4}));
    let (_, id, _) = r.next().await.unwrap();
    assert_eq!(id, "5");
}

/// The next `n` events of `r` as `name/type/host/job`.
async fn got_about(r: &mut Reader, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (name, _, d) = r.next().await.expect("an event");
        let s = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
        out.push(format!(
            "{name}/{}/{}/{}",
            s("type"),
            s("host_id"),
            s("job_id")
        ));
    }
    out
}

/// A host's page, a host's job list and a job's page narrow their stream
/// to that host or job (`?host=`, `?job=`), live and on replay, so a page
/// open during a fleet's backups is not sent, and does not reload for,
/// every other host's events.
#[tokio::test]
async fn a_host_or_job_page_gets_only_its_own_events_live_and_replayed() {
    let h = H::new().await;
    seed(&h, 1, 2).await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    let mut fleet = connect(&h, &s, "?topics=jobs,schedules", None).await;
    let mut host = connect(&h, &s, "?topics=jobs,schedules&host=h1", None).await;
    let mut job = connect(&h, &s, "?topics=jobs,schedules&job=j2", None).await;
    let ev = &h.state.events;
    let publish = |kind: &str, host: &str, job: &str| {
        ev.publish(
            "job",
            serde_json::json!({"type": kind, "host_id": host, "job_id": job}),
        );
    };
    publish("started", "h1", "j1");
    publish("started", "h2", "j2");
    publish("progress", "h2", "j2");
    publish("progress", "h1", "j1");
    ev.publish(
        "schedule",
        serde_json::json!({"type": "changed", "id": "s1"}),
    );
    publish("finished", "h2", "j2");
    assert_eq!(
        got_about(&mut fleet, 6).await,
        [
            "job/started/h1/j1",
            "job/started/h2/j2",
            "job/progress/h2/j2",
            "job/progress/h1/j1",
            "schedule/changed/-/-",
            "job/finished/h2/j2"
        ]
    );
    // h1's events and the one about no host; then h1's next, not h2's
    assert_eq!(
        got_about(&mut host, 3).await,
        [
            "job/started/h1/j1",
            "job/progress/h1/j1",
            "schedule/changed/-/-"
        ]
    );
    publish("finished", "h1", "j1");
    assert_eq!(got_about(&mut host, 1).await, ["job/finished/h1/j1"]);
    // j2's events only
    assert_eq!(
        got_about(&mut job, 3).await,
        [
            "job/started/h2/j2",
            "job/progress/h2/j2",
            "job/finished/h2/j2"
        ]
    );
    // the same on a replay from the ring
    let mut replay = connect(&h, &s, "?topics=jobs&host=h2", Some("0")).await;
    assert_eq!(
        got_about(&mut replay, 3).await,
        [
            "job/started/h2/j2",
            "job/progress/h2/j2",
            "job/finished/h2/j2"
        ]
    );
    // one scope at a time
    assert_eq!(
        refused_field(&h, &s, "/api/v1/events?host=h1&job=j1").await,
        "job"
    );

    // the pages name their scope for the page script
    let job_id: String = {
        let mut c = h.state.store.read().await.unwrap();
        sqlx::query_scalar("SELECT id FROM jobs ORDER BY id LIMIT 1")
            .fetch_one(&mut *c)
            .await
            .unwrap()
    };
    let tag = body_tag(&h, &s, "/hosts/seed-h000000").await;
    assert!(
        tag.contains("data-event-host=\"seed-h000000\"") && !tag.contains("data-event-job"),
        "{tag}"
    );
    let tag = body_tag(&h, &s, &format!("/jobs/{job_id}")).await;
    assert!(
        tag.contains(&format!("data-event-job=\"{job_id}\"")) && !tag.contains("data-event-host"),
        "{tag}"
    );
    let tag = body_tag(&h, &s, "/jobs?host=seed-h000000").await;
    assert!(tag.contains("data-event-host=\"seed-h000000\""), "{tag}");
    let tag = body_tag(&h, &s, "/jobs").await;
    assert!(
        tag.contains("data-topics")
            && !tag.contains("data-event-host")
            && !tag.contains("data-event-job"),
        "the fleet's pages are not narrowed: {tag}"
    );
}

/// A fleet-wide page is sent every job's state changes but the progress
/// and log lines of only the hosts it shows (`?progress=`): the dashboard
/// its rows', a job list and a repository's page none. At 100,000 hosts a
/// burst's progress was thousands of events a second to every such page
/// (stop 47).
#[tokio::test]
async fn fleet_pages_get_job_progress_only_for_the_hosts_they_show() {
    let h = H::new().await;
    seed(&h, 2, 1).await;
    h.user("o", Role::Operator).await;
    let s = h.login("o").await;
    let mut rows = connect(&h, &s, "?topics=jobs&progress=h1,h3", None).await;
    let mut none = connect(&h, &s, "?topics=jobs&progress=", None).await;
    let mut all = connect(&h, &s, "?topics=jobs", None).await;
    let ev = &h.state.events;
    let publish = |kind: &str, host: &str, job: &str| {
        ev.publish(
            "job",
            serde_json::json!({"type": kind, "host_id": host, "job_id": job}),
        );
    };
    publish("started", "h2", "j2");
    publish("progress", "h2", "j2");
    publish("log", "h2", "j2");
    publish("progress", "h1", "j1");
    publish("log", "h1", "j1");
    publish("finished", "h2", "j2");
    assert_eq!(
        got_about(&mut all, 6).await,
        [
            "job/started/h2/j2",
            "job/progress/h2/j2",
            "job/log/h2/j2",
            "job/progress/h1/j1",
            "job/log/h1/j1",
            "job/finished/h2/j2"
        ]
    );
    assert_eq!(
        got_about(&mut rows, 4).await,
        [
            "job/started/h2/j2",
            "job/progress/h1/j1",
            "job/log/h1/j1",
            "job/finished/h2/j2"
        ],
        "every job's state, the progress of the hosts named"
    );
    assert_eq!(
        got_about(&mut none, 2).await,
        ["job/started/h2/j2", "job/finished/h2/j2"],
        "no progress at all"
    );
    // the same on a replay from the ring
    let mut replay = connect(&h, &s, "?topics=jobs&progress=h2", Some("0")).await;
    assert_eq!(
        got_about(&mut replay, 4).await,
        [
            "job/started/h2/j2",
            "job/progress/h2/j2",
            "job/log/h2/j2",
            "job/finished/h2/j2"
        ]
    );
    // a bounded list
    let many: Vec<String> = (0..=rm_web::events::OutputOf::MAX_HOSTS)
        .map(|i| format!("h{i}"))
        .collect();
    assert_eq!(
        refused_field(
            &h,
            &s,
            format!("/api/v1/events?progress={}", many.join(","))
        )
        .await,
        "progress"
    );

    // the pages say which hosts' progress they show
    let dashboard = body_tag(&h, &s, "/").await;
    assert!(
        dashboard.contains(r#"data-event-progress="seed-h000000,seed-h000001""#),
        "the dashboard: its rows' hosts: {dashboard}"
    );
    let hosts = body_tag(&h, &s, "/hosts").await;
    assert!(
        hosts.contains(r#"data-event-progress="seed-h000000,seed-h000001""#),
        "{hosts}"
    );
    let jobs = body_tag(&h, &s, "/jobs").await;
    assert!(jobs.contains(r#"data-event-progress="""#), "{jobs}");
    let host_jobs = body_tag(&h, &s, "/jobs?host=seed-h000000").await;
    assert!(!host_jobs.contains("data-event-progress"), "{host_jobs}");
}

/// A repository's page narrows its stream to that repository (`?repo=`):
/// its own `repo` events and the state changes of its jobs, live and on
/// replay. Job events carry no repository before they name one, so the
/// page reloaded on every job of the fleet (at 100,000 hosts, on every
/// result of a burst).
#[tokio::test]
async fn a_repository_page_gets_only_its_own_and_its_jobs_events_live_and_replayed() {
    let h = H::new().await;
    seed(&h, 1, 1).await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    let mut r1 = connect(&h, &s, "?topics=jobs,repos&repo=r1&progress=", None).await;
    let ev = &h.state.events;
    let job = |kind: &str, job: &str, repo: Option<&str>| {
        let mut d = serde_json::json!({"type": kind, "host_id": "h1", "job_id": job});
        if let Some(r) = repo {
            d["repo_id"] = r.into();
        }
        ev.publish("job", d);
    };
    job("queued", "j1", Some("r1"));
    job("queued", "j2", Some("r2"));
    job("progress", "j1", None);
    job("finished", "j3", None);
    ev.publish("repo", serde_json::json!({"type": "changed", "id": "r2"}));
    ev.publish(
        "schedule",
        serde_json::json!({"type": "changed", "id": "s1"}),
    );
    ev.publish(
        "repo",
        serde_json::json!({"type": "changed", "id": "r1", "host_id": "h1"}),
    );
    job("finished", "j1", Some("r1"));
    assert_eq!(
        got_about(&mut r1, 3).await,
        [
            "job/queued/h1/j1",
            "repo/changed/h1/-",
            "job/finished/h1/j1"
        ],
        "r1's job and record only"
    );
    let mut replay = connect(&h, &s, "?topics=jobs,repos&repo=r2", Some("0")).await;
    assert_eq!(
        got_about(&mut replay, 2).await,
        ["job/queued/h1/j2", "repo/changed/-/-"]
    );
    // one scope at a time
    assert_eq!(
        refused_field(&h, &s, "/api/v1/events?host=h1&repo=r1").await,
        "repo"
    );
    // the page names its repository for the page script
    let tag = body_tag(&h, &s, "/repositories/seed-repo-0000").await;
    assert!(
        tag.contains(r#"data-event-repo="seed-repo-0000""#)
            && !tag.contains("data-event-host")
            && tag.contains(r#"data-event-progress="""#),
        "{tag}"
    );
    let tag = body_tag(&h, &s, "/repositories").await;
    assert!(!tag.contains("data-event-repo"), "{tag}");
}

/// `/metrics` times the web role's own share of the live path: each
/// client's hand-over of a job progress event, from its publication here
/// (`rm_sse_send_lag_seconds`), once per client that is sent it; other
/// events, and a client that did not ask for that host's progress, add
/// nothing.
#[tokio::test]
async fn the_hand_over_of_progress_to_each_client_is_timed() {
    let h = H::new().await;
    h.user("o", Role::Operator).await;
    let s = h.login("o").await;
    let token = h.token(Role::Viewer).await;
    let count = |body: &str| -> u64 {
        let line = body
            .lines()
            .find(|l| l.starts_with("rm_sse_send_lag_seconds_count "))
            .unwrap_or_else(|| panic!("no send lag in\n{body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(count(&h.get_text(&token, "/metrics").await.1), 0);
    let mut a = connect(&h, &s, "?topics=jobs", None).await;
    let mut b = connect(&h, &s, "?topics=jobs&progress=h1", None).await;
    let mut none = connect(&h, &s, "?topics=jobs&progress=", None).await;
    let ev = &h.state.events;
    ev.publish(
        "job",
        serde_json::json!({"type": "started", "host_id": "h1", "job_id": "j1"}),
    );
    ev.publish(
        "job",
        serde_json::json!({"type": "progress", "host_id": "h1", "job_id": "j1", "ts_ms": 1}),
    );
    ev.publish(
        "job",
        serde_json::json!({"type": "log", "host_id": "h1", "job_id": "j1"}),
    );
    ev.publish(
        "job",
        serde_json::json!({"type": "finished", "host_id": "h1", "job_id": "j1"}),
    );
    assert_eq!(got_about(&mut a, 4).await.len(), 4);
    assert_eq!(got_about(&mut b, 4).await.len(), 4);
    assert_eq!(
        got_about(&mut none, 2).await,
        ["job/started/h1/j1", "job/finished/h1/j1"]
    );
    let body = h.get_text(&token, "/metrics").await.1;
    assert_eq!(
        count(&body),
        2,
        "one hand-over per client sent the progress:\n{body}"
    );
    assert!(
        body.contains("rm_sse_send_lag_seconds_bucket{le=\"+Inf\"} 2"),
        "{body}"
    );
}

#[tokio::test]
async fn a_client_that_falls_behind_is_told_to_refetch_and_goes_on_while_299_others_get_every_event()
 {
    let h = H::new().await;
    h.user("v", Role::Viewer).await;
    let s = h.login("v").await;
    let counts: Vec<Arc<AtomicUsize>> = (0..299).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut tasks = Vec::new();
    for c in &counts {
        let mut r = connect(&h, &s, "?topics=jobs", None).await;
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((_, _, _)) = r.next().await {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let mut never = connect(&h, &s, "?topics=jobs", None).await;
    assert_eq!(h.state.events.clients(), 300);
    let buffer = rm_web::events::CLIENT_BUFFER;
    // more events than one client may fall behind, in rounds the readers keep up with
    let total = buffer + 50;
    let mut sent = 0;
    while sent < total {
        let round = (total - sent).min(buffer / 2);
        for _ in 0..round {
            h.state
                .events
                .publish("job", serde_json::json!({"n": sent}));
            sent += 1;
        }
        let target = sent;
        for _ in 0..2000 {
            if counts.iter().all(|c| c.load(Ordering::SeqCst) >= target) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            counts.iter().all(|c| c.load(Ordering::SeqCst) == target),
            "every reading client has all {target} events"
        );
    }
    // the one that did not read fell behind: it is told to refetch (what it
    // missed is gone), counted, and its stream goes on from the newest event
    assert_eq!(
        never.next().await.map(|(name, _, _)| name).as_deref(),
        Some("refetch")
    );
    assert_eq!(h.state.events.fell_behind(), 1);
    h.state
        .events
        .publish("job", serde_json::json!({"n": "after"}));
    let (name, id, data) = never.next().await.expect("the same stream goes on");
    assert_eq!(
        (name.as_str(), id, data["n"].as_str()),
        ("job", (total + 1).to_string(), Some("after")),
        "the next event after the refetch is the newest, not one it missed"
    );
    assert_eq!(h.state.events.clients(), 300, "nobody was disconnected");
    for t in tasks {
        t.abort();
    }
}
