//! The outbox against a bus with a small `max_payload` and a stand-in
//! control plane that acknowledges everything: a result too large for one
//! message never blocks the results behind it — its summary travels in
//! parts, or it is set aside with its reason and the control plane is told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rm_agent::outbox::Outbox;
use rm_bus::creds::Role;
use rm_bus::msg::{
    Ack, JobDone, JobKind, JobOrigin, JobOutcome, JobParams, JobPart, JobStarted, PROTOCOL_VERSION,
    PartsRef, decode, encode,
};
use rm_bus::reqack::RetryPolicy;
use rm_bus::subject::{AgentSubject, AgentTopic, JobTopic};
use rm_bus::{HostId, JobId};
use rm_testkit::{BusKind, BusOptions, TestBus};

const MAX: usize = 64 * 1024;

type Seen = Arc<Mutex<Vec<(String, JobTopic, Vec<u8>)>>>;

/// A bus with `max_payload` = 64 KiB and a responder that acknowledges
/// every job message, recording (job, topic, payload) in arrival order.
async fn bus_and_responder() -> (TestBus, Seen) {
    let bus = TestBus::start_with(
        BusKind::from_env(),
        BusOptions {
            max_payload: Some(MAX),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let cp = bus.connect_role(Role::Controlplane).await.unwrap();
    let mut sub = cp.subscribe("rm.agent.*.job.>").await.unwrap();
    cp.flush().await.unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Some(AgentSubject {
                topic: AgentTopic::Job(job, topic),
                ..
            }) = AgentSubject::parse(m.subject.as_str())
            else {
                continue;
            };
            s.lock()
                .unwrap()
                .push((job.to_string(), topic, m.payload.to_vec()));
            if let Some(r) = m.reply {
                let _ = cp.publish(r, encode(&Ack::ok())).await;
            }
        }
    });
    (bus, seen)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_secs(2),
        deadline: Some(Duration::from_secs(6)),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        jitter: 0.5,
    }
}

fn done(job: &str, summary: Option<serde_json::Value>, error: Option<String>) -> JobDone {
    JobDone {
        v: PROTOCOL_VERSION,
        job_id: JobId::parse(job).unwrap(),
        outcome: JobOutcome::Succeeded,
        exit_code: Some(0),
        error_kind: None,
        error,
        summary,
        stderr_tail: vec![],
        started_ms: Some(1),
        finished_ms: 2,
        restic_version: Some("0.18.0".into()),
        summary_parts: None,
    }
}

fn started(job: &str) -> JobStarted {
    JobStarted {
        v: PROTOCOL_VERSION,
        job_id: JobId::parse(job).unwrap(),
        kind: JobKind::Snapshots,
        origin: JobOrigin::Dispatch,
        started_ms: 1,
        params: None,
        repo_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_fit_is_set_aside_reported_and_blocks_nothing() {
    let (bus, seen) = bus_and_responder().await;
    let agent = bus.agent("h1").await.unwrap();
    let host = HostId::parse("h1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(dir.path().join("outbox"), 100).unwrap();
    // an error text no split can help: the `done` itself is too large
    let huge = "e".repeat(2 * MAX);
    let j1 = JobId::parse("j1").unwrap();
    let j2 = JobId::parse("j2").unwrap();
    ob.push(&j1, JobTopic::Done, &encode(&done("j1", None, Some(huge))))
        .unwrap();
    // a scheduled run's `started` whose parameters alone are too large
    let mut big_started = started("j2");
    big_started.origin = JobOrigin::Schedule {
        schedule_id: "s1".into(),
    };
    big_started.params = Some(JobParams::Backup {
        paths: (0..1000).map(|i| format!("/srv/{i:0>100}")).collect(),
        excludes: vec![],
        tags: vec![],
        one_file_system: false,
        host_name: None,
    });
    ob.push(&j2, JobTopic::Started, &encode(&big_started))
        .unwrap();
    ob.push(&j2, JobTopic::Done, &encode(&done("j2", None, None)))
        .unwrap();

    let d = ob.drain(&agent, &host, &policy()).await.unwrap();
    assert_eq!((d.remaining, d.rejected), (0, 0), "{d:?}");
    assert!(ob.is_empty(), "nothing left waiting");

    let seen = seen.lock().unwrap().clone();
    let order: Vec<(&str, JobTopic)> = seen.iter().map(|(j, t, _)| (j.as_str(), *t)).collect();
    assert_eq!(
        order,
        [
            ("j1", JobTopic::Done),
            ("j2", JobTopic::Started),
            ("j2", JobTopic::Done)
        ],
        "the results behind the oversized one went through, in order"
    );
    let stand_in: JobDone = decode("done", &seen[0].2).unwrap();
    assert_eq!(stand_in.outcome, JobOutcome::Failed);
    let error = stand_in.error.unwrap();
    assert!(
        error.starts_with("result too large for the bus: ")
            && error.contains(&format!("> max_payload {MAX}"))
            && error.contains("succeeded"),
        "{error}"
    );
    // sent without its parameters: the control plane has the schedule's
    let s2: JobStarted = decode("started", &seen[1].2).unwrap();
    assert_eq!((s2.params, s2.origin), (None, big_started.origin.clone()));
    let rejected = ob.rejected();
    assert_eq!(rejected.len(), 2, "both originals kept: {rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|(_, why)| why.contains(&format!("> max_payload {MAX}"))),
        "{rejected:?}"
    );
    let kept: JobDone = decode("done", &std::fs::read(&rejected[0].0).unwrap()).unwrap();
    let kept_started: JobStarted =
        decode("started", &std::fs::read(&rejected[1].0).unwrap()).unwrap();
    assert_eq!(kept_started, big_started);
    assert_eq!(
        kept.error.map(|e| e.len()),
        Some(2 * MAX),
        "original kept whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_larger_than_max_payload_travels_in_parts_before_its_done() {
    let (bus, seen) = bus_and_responder().await;
    let agent = bus.agent("h1").await.unwrap();
    let host = HostId::parse("h1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(dir.path().join("outbox"), 100).unwrap();
    let summary: serde_json::Value = (0..2000)
        .map(|i| serde_json::json!({"id": format!("{i:064x}"), "paths": ["/srv/\"quoted\"/é"], "tags": ["t"]}))
        .collect();
    let text = summary.to_string();
    assert!(text.len() > 3 * MAX);
    let j3 = JobId::parse("j3").unwrap();
    let j4 = JobId::parse("j4").unwrap();
    ob.push(
        &j3,
        JobTopic::Done,
        &encode(&done("j3", Some(summary.clone()), None)),
    )
    .unwrap();
    ob.push(&j4, JobTopic::Done, &encode(&done("j4", None, None)))
        .unwrap();

    let d = ob.drain(&agent, &host, &policy()).await.unwrap();
    assert_eq!((d.sent, d.remaining, d.rejected), (2, 0, 0), "{d:?}");
    assert!(ob.rejected().is_empty());

    let seen = seen.lock().unwrap().clone();
    let (parts, rest): (Vec<_>, Vec<_>) = seen.iter().partition(|(_, t, _)| *t == JobTopic::Part);
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let parts: Vec<JobPart> = parts
        .iter()
        .map(|(_, _, p)| decode("part", p).unwrap())
        .collect();
    let total = u32::try_from(parts.len()).unwrap();
    for (i, p) in (0u32..).zip(&parts) {
        assert_eq!((p.index, p.total, p.job_id.as_str()), (i, total, "j3"));
    }
    assert_eq!(
        parts.iter().map(|p| p.data.as_str()).collect::<String>(),
        text,
        "the parts reassemble to the summary"
    );
    let order: Vec<(&str, JobTopic)> = rest.iter().map(|(j, t, _)| (j.as_str(), *t)).collect();
    assert_eq!(order, [("j3", JobTopic::Done), ("j4", JobTopic::Done)]);
    let d3: JobDone = decode("done", &rest[0].2).unwrap();
    assert_eq!(d3.summary, None);
    assert_eq!(
        d3.summary_parts,
        Some(PartsRef {
            total,
            bytes: text.len() as u64
        })
    );
    assert_eq!(d3.outcome, JobOutcome::Succeeded);
    // every part came after the last part index before the done
    let last_part = seen
        .iter()
        .rposition(|(_, t, _)| *t == JobTopic::Part)
        .unwrap();
    let done_at = seen
        .iter()
        .position(|(j, t, _)| j == "j3" && *t == JobTopic::Done)
        .unwrap();
    assert!(last_part < done_at, "parts precede their done");
}
