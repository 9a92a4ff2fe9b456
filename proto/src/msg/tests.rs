//! Every message round-trips and tolerates fields it does not know.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

fn host() -> HostId {
    HostId::parse("h1").unwrap()
}
fn job() -> JobId {
    JobId::parse("j1").unwrap()
}

fn repo() -> RepoAccess {
    RepoAccess {
        repo_id: "r1".into(),
        secrets: Sealed("c2VhbGVk".into()),
        append_only: true,
    }
}

/// Serialize, check `v`, parse back; then add unknown fields at the top
/// level and parse again: both must equal the original.
fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
    let text = serde_json::to_string(&msg).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(back, msg, "round trip of {text}");

    let mut obj: Value = serde_json::from_str(&text).unwrap();
    if let Some(map) = obj.as_object_mut() {
        map.insert("zz_future_field".into(), json!({"nested": [1, 2, 3]}));
        map.insert("another_new_one".into(), json!("x"));
    }
    let tolerant: T = serde_json::from_value(obj).unwrap();
    assert_eq!(tolerant, msg, "unknown fields changed the parse of {text}");
}

fn all_params() -> Vec<JobParams> {
    vec![
        JobParams::Backup {
            paths: vec!["/data".into()],
            excludes: vec!["*.tmp".into()],
            tags: vec!["nightly".into()],
            one_file_system: true,
            host_name: Some("web-1".into()),
        },
        JobParams::Forget {
            retention: Retention {
                keep_daily: Some(7),
                keep_within: Some("1y".into()),
                ..Retention::default()
            },
            host_name: "web-1".into(),
            prune: true,
        },
        JobParams::Prune {},
        JobParams::Check {
            read_data_subset: Some("5%".into()),
        },
        JobParams::Unlock { remove_all: false },
        JobParams::Locks {},
        JobParams::ForgetPreview {
            retention: Retention {
                keep_last: Some(3),
                ..Retention::default()
            },
            host_name: "web-1".into(),
        },
        JobParams::Snapshots { host_name: None },
        JobParams::Stats {
            mode: StatsMode::RawData,
            snapshot: None,
        },
        JobParams::Diff {
            from: "aa".into(),
            to: "bb".into(),
        },
        JobParams::Restore {
            snapshot: "latest".into(),
            include: vec!["/data/x".into()],
            target: RestoreTarget::Path {
                path: "/tmp/r".into(),
            },
        },
    ]
}

#[test]
fn job_params_round_trip_and_name_their_kind() {
    for p in all_params() {
        assert_ne!(p.kind(), JobKind::Unknown);
        let kind_json = serde_json::to_value(p.kind()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap()["kind"], kind_json);
        roundtrip(p);
    }
}

#[test]
fn unknown_kinds_and_enum_values_parse_as_unknown() {
    let p: JobParams = serde_json::from_value(json!({"kind": "teleport", "to": "mars"})).unwrap();
    assert_eq!(p, JobParams::Unknown);
    let k: JobKind = serde_json::from_value(json!("teleport")).unwrap();
    assert_eq!(k, JobKind::Unknown);
    let e: ErrorKind = serde_json::from_value(json!("cosmic_ray")).unwrap();
    assert_eq!(e, ErrorKind::Unknown);
    let o: JobOutcome = serde_json::from_value(json!("exploded")).unwrap();
    assert_eq!(o, JobOutcome::Unknown);
    let c: Command = serde_json::from_value(json!({"v": 2, "cmd": "self_destruct"})).unwrap();
    assert_eq!(c.body, CommandBody::Unknown);
    assert_eq!(c.v, 2);
}

#[test]
fn missing_version_means_v1() {
    let a: Ack = serde_json::from_value(json!({"ok": true})).unwrap();
    assert_eq!(a, Ack::ok());
}

#[test]
fn malformed_payloads_are_clear_errors() {
    let err = decode::<Heartbeat>("heartbeat", b"{not json").unwrap_err();
    assert!(
        err.to_string().starts_with("malformed heartbeat message"),
        "{err}"
    );
    let err = decode::<JobDone>(
        "done",
        br#"{"job_id":"a.b","outcome":"failed","finished_ms":1}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("only ASCII letters"), "{err}");
}

#[test]
fn agent_messages_round_trip() {
    roundtrip(Hello {
        v: PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        restic_version: Some("0.18.0".into()),
        os: "linux".into(),
        arch: "x86_64".into(),
        hostname: "web-1".into(),
        config_version: 3,
        accepted_jobs: vec![job()],
        running_jobs: vec![],
        accept_seq: Some(AcceptMark {
            boot: "b1".into(),
            seq: 4,
        }),
    });
    let spec = ScheduleSpec {
        schedule_id: "s1".into(),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Berlin".into(),
        enabled: true,
        jitter_secs: 60,
        params: all_params().remove(0),
        repo: repo(),
        timeout_secs: 3600,
    };
    let config = AgentConfig {
        version: 4,
        heartbeat_secs: Some(15),
        schedules: vec![spec],
    };
    roundtrip(HelloReply {
        v: PROTOCOL_VERSION,
        config: Some(config.clone()),
        server_time_ms: 1,
    });
    roundtrip(Heartbeat {
        v: PROTOCOL_VERSION,
        ts_ms: 5,
        agent_version: "0.1.0".into(),
        restic_version: None,
        os: "windows".into(),
        arch: "aarch64".into(),
        uptime_secs: 99,
        config_version: 4,
        disks: vec![DiskFree {
            path: "/".into(),
            free_bytes: 10,
            total_bytes: Some(20),
        }],
        running_jobs: vec![job()],
        next_runs: vec![NextRun {
            schedule_id: "s1".into(),
            at_ms: 100,
        }],
        bus_node: Some("n3".into()),
    });
    roundtrip(Goodbye {
        v: PROTOCOL_VERSION,
        ts_ms: 1,
        reason: Some("shutdown".into()),
    });
    roundtrip(Progress {
        v: PROTOCOL_VERSION,
        ts_ms: 1,
        elapsed_ms: 2,
        percent_done: Some(0.5),
        bytes_done: Some(1),
        total_bytes: Some(2),
        files_done: None,
        total_files: Some(3),
        seconds_remaining: Some(u64::MAX),
        current_files: vec!["/a".into()],
    });
    roundtrip(LogBatch {
        v: PROTOCOL_VERSION,
        seq: 7,
        lines: vec![LogLine {
            ts_ms: 1,
            stream: Stream::Stderr,
            text: "Fatal: wrong password".into(),
        }],
    });
    roundtrip(JobStarted {
        v: PROTOCOL_VERSION,
        job_id: job(),
        kind: JobKind::Backup,
        origin: JobOrigin::Schedule {
            schedule_id: "s1".into(),
        },
        started_ms: 1,
        params: Some(all_params().remove(0)),
        repo_id: Some("r1".into()),
    });
    roundtrip(JobDone {
        v: PROTOCOL_VERSION,
        job_id: job(),
        outcome: JobOutcome::Warning,
        exit_code: Some(3),
        error_kind: Some(ErrorKind::Partial),
        error: Some("1 file unreadable".into()),
        summary: Some(json!({"snapshot_id": "2b79d198", "files_new": 5})),
        stderr_tail: vec!["error: open /x: permission denied".into()],
        started_ms: Some(1),
        finished_ms: 2,
        restic_version: Some("0.14.0".into()),
        summary_parts: Some(PartsRef {
            total: 3,
            bytes: 2_500_000,
        }),
    });
    roundtrip(JobPart {
        v: PROTOCOL_VERSION,
        job_id: job(),
        of: "summary".into(),
        index: 1,
        total: 3,
        data: "[{\"id\":".into(),
    });
    roundtrip(Ack {
        accepted: Some(AcceptMark {
            boot: "b1".into(),
            seq: 5,
        }),
        ..Ack::ok()
    });
    roundtrip(Ack::ok());
    roundtrip(Ack::duplicate());
    roundtrip(Ack::refused("not your job"));
    roundtrip(Ack::refused_for_now("the agent is shutting down"));
}

#[test]
fn commands_round_trip() {
    for p in all_params() {
        roundtrip(Command::new(CommandBody::Dispatch {
            job: JobSpec {
                job_id: job(),
                params: p,
                repo: repo(),
                timeout_secs: 60,
            },
        }));
    }
    roundtrip(Command::new(CommandBody::Cancel { job_id: job() }));
    roundtrip(Command::new(CommandBody::ConfigChanged {
        config: AgentConfig {
            version: 1,
            heartbeat_secs: None,
            schedules: vec![],
        },
    }));
    roundtrip(Command::new(CommandBody::ConfigPart {
        version: 7,
        index: 1,
        total: 2,
        data: "{\"version\":7,".into(),
    }));
    roundtrip(Command::new(CommandBody::Ls {
        repo: repo(),
        snapshot: "abc".into(),
        dir: "/data/sub".into(),
    }));
    roundtrip(Command::new(CommandBody::Snapshots {
        repo: repo(),
        host_name: Some("web-1".into()),
    }));
    roundtrip(QueryReply {
        v: PROTOCOL_VERSION,
        ok: true,
        error_kind: None,
        error: None,
        entries: vec![LsEntry {
            name: "a".into(),
            kind: "dir".into(),
            path: "/data/a".into(),
            size: None,
            mtime: Some("2026-01-01T00:00:00Z".into()),
        }],
        snapshots: None,
        restic_repo_id: None,
    });
    roundtrip(Command::new(CommandBody::RepoInit { repo: repo() }));
    roundtrip(Command::new(CommandBody::RepoVerify { repo: repo() }));
}

#[test]
fn enrollment_round_trips() {
    roundtrip(EnrollRequest {
        v: PROTOCOL_VERSION,
        token: "tok".into(),
        nkey: "UABC".into(),
        xkey: "XABC".into(),
        hostname: "web-1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "0.1.0".into(),
    });
    roundtrip(EnrollReply {
        v: PROTOCOL_VERSION,
        host_id: host(),
        jwt: "eyJ...".into(),
        bus_urls: vec!["tls://cp.example:4222".into()],
        controlplane_xkey: "XCP".into(),
        bus_ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
    });
}

#[test]
fn services_and_events_round_trip() {
    roundtrip(SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "alice".into(),
            via: ActorVia::Session,
            address: None,
        },
        body: json!({"host": "h1"}),
    });
    roundtrip(SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "alice".into(),
            via: ActorVia::Session,
            address: Some("203.0.113.7".into()),
        },
        body: json!({"host": "h1"}),
    });
    roundtrip(SvcReply::<Value> {
        v: PROTOCOL_VERSION,
        ok: None,
        error: Some(SvcError {
            code: "not_found".into(),
            message: "no such host".into(),
        }),
    });
    for repo in [None, Some("r_1".to_owned())] {
        roundtrip(EventMsg {
            v: PROTOCOL_VERSION,
            ts_ms: 1,
            host: Some(host()),
            job: Some(job()),
            id: None,
            repo,
        });
    }
    // an event from before `repo` existed still reads, without one
    let old: EventMsg = decode(
        "event",
        br#"{"v":1,"ts_ms":1,"host":null,"job":null,"id":"s1"}"#,
    )
    .unwrap();
    assert_eq!(old.repo, None);
    assert!(
        !String::from_utf8(encode(&old).to_vec())
            .unwrap()
            .contains("repo")
    );
}

#[test]
fn sealed_secrets_do_not_show_in_debug() {
    let s = Sealed("c2VjcmV0LXBhc3N3b3Jk".into());
    let dbg = format!("{:?}", repo_with(s));
    assert!(!dbg.contains("c2VjcmV0LXBhc3N3b3Jk"), "{dbg}");
}

fn repo_with(secrets: Sealed) -> RepoAccess {
    RepoAccess { secrets, ..repo() }
}

#[test]
fn debug_of_an_enrollment_request_never_shows_the_token() {
    let req = EnrollRequest {
        v: PROTOCOL_VERSION,
        token: "s3cr3t-token".into(),
        nkey: "UABC".into(),
        xkey: "XABC".into(),
        hostname: "web-1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "1".into(),
    };
    let shown = format!("{req:?} {req:#?}");
    assert!(!shown.contains("s3cr3t-token"), "{shown}");
    assert!(shown.contains("web-1"));
}

#[test]
fn an_actor_without_a_client_address_reads_as_none_and_none_is_not_sent() {
    let old: Actor = serde_json::from_value(json!({"name": "alice", "via": "session"})).unwrap();
    assert_eq!(old.address, None);
    let sent = serde_json::to_value(&old).unwrap();
    assert_eq!(sent, json!({"name": "alice", "via": "session"}));
}

#[test]
fn a_heartbeat_without_a_bus_node_reads_as_none_and_none_is_not_sent() {
    // an agent from before stop 55
    let old: Heartbeat = serde_json::from_value(json!({
        "v": 1, "ts_ms": 5, "agent_version": "0.1.0", "restic_version": null,
        "os": "linux", "arch": "x86_64", "uptime_secs": 9
    }))
    .unwrap();
    assert_eq!(old.bus_node, None);
    let sent = serde_json::to_value(&old).unwrap();
    assert!(sent.get("bus_node").is_none(), "{sent}");
}

#[test]
fn a_service_reply_carries_its_owners_time_in_microseconds_and_a_bad_header_reads_as_none() {
    use std::time::Duration;
    let took = Duration::from_micros(12_345);
    let h = svc_took_headers(took);
    assert_eq!(h.get(SVC_TOOK_HEADER).map(|v| v.as_str()), Some("12345"));
    assert_eq!(svc_took(Some(&h)), Some(took));
    // below a microsecond rounds down; none at all or garbage is unknown
    assert_eq!(
        svc_took(Some(&svc_took_headers(Duration::from_nanos(999)))),
        Some(Duration::ZERO)
    );
    assert_eq!(svc_took(None), None);
    assert_eq!(svc_took(Some(&async_nats::HeaderMap::new())), None);
    let mut bad = async_nats::HeaderMap::new();
    bad.insert(SVC_TOOK_HEADER, "-3");
    assert_eq!(svc_took(Some(&bad)), None);
    // the bound the size checks reserve holds for the longest value
    let longest = svc_took_headers(Duration::MAX);
    let v = longest.get(SVC_TOOK_HEADER).map(|v| v.as_str().to_owned());
    assert_eq!(v.as_deref(), Some("18446744073709551615"));
    assert_eq!(
        crate::size::header_len([(SVC_TOOK_HEADER, v.as_deref().unwrap_or(""))]),
        svc_took_header_max()
    );
}
