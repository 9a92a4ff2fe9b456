//! Results larger than the bus takes in one message, end to end with real
//! restic: a repository whose `restic snapshots --json` exceeds 2 MiB (the
//! bus's `max_payload` is 1 MiB) is listed by the agent, travels in parts,
//! and lands whole in the control plane's snapshots cache; a host's config
//! too large for one message reaches its agent in parts, on hello and on
//! push.

use rm_agent::outbox::Outbox;
use rm_bus::msg::{AgentConfig, JobParams};
use rm_controlplane::api;
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshots_listing_over_two_mib_reaches_the_snapshots_cache_in_parts() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let a = env.agent("big-1", &bin).await.unwrap();
    let repo = env.new_repo("big", &a.host_id).await;
    env.attach_full(&repo, &a.host_id).await;

    // 2500 tiny files with long paths, each a backup target of its own:
    // every snapshot lists all 2500 paths (~750 KB of JSON per snapshot)
    let base = env.path("src").join("d".repeat(150));
    std::fs::create_dir_all(&base).unwrap();
    let mut list = String::new();
    for i in 0..2500 {
        let p = base.join(format!("{i:0>100}"));
        std::fs::write(&p, i.to_string()).unwrap();
        list.push_str(&format!("{}\n", p.display()));
    }
    let list_file = env.path("files-from.txt");
    std::fs::write(&list_file, list).unwrap();
    for _ in 0..4 {
        let out = env.restic(
            &bin,
            "big",
            &[
                "backup",
                "--host",
                "elsewhere",
                "--files-from",
                list_file.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = env.snapshots(&bin, "big");
    let json_len = serde_json::to_string(&listed).unwrap().len();
    assert!(
        json_len > 2 * 1024 * 1024,
        "restic's listing is {json_len} bytes"
    );

    let created = env
        .job(&a.host_id, &repo, JobParams::Snapshots { host_name: None })
        .await;
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    let summary: Value = serde_json::from_str(job.summary_json.as_deref().unwrap()).unwrap();
    assert_eq!(summary.as_array().map(Vec::len), Some(4));

    // the cache holds every snapshot with every one of its paths
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    let cached = rm_store::snapshots::list(&mut c, &repo, None)
        .await
        .unwrap();
    assert_eq!(cached.len(), 4);
    for s in &listed {
        let id = s["id"].as_str().unwrap();
        let got = cached
            .iter()
            .find(|c| c.snapshot_id == id)
            .unwrap_or_else(|| panic!("snapshot {id} not cached"));
        let paths: Value = serde_json::from_str(&got.paths_json).unwrap();
        assert_eq!(paths, s["paths"], "paths of {id}");
        assert_eq!(got.hostname, "elsewhere");
    }
    // nothing was set aside, nothing is left waiting, no parts linger
    let outbox = Outbox::open(a.state_dir.join("outbox"), usize::MAX).unwrap();
    assert!(outbox.rejected().is_empty(), "{:?}", outbox.rejected());
    assert_eq!(
        rm_store::parts::count(&mut c).await.unwrap(),
        0,
        "parts are deleted once reassembled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_too_large_for_one_message_reaches_the_agent_in_parts() {
    let bin = restic_bin();
    let env = Env::start_with(rm_testkit::BusOptions {
        max_payload: Some(64 * 1024),
        ..Default::default()
    })
    .await
    .unwrap();
    let (host, dir) = env.enroll("many-1").await.unwrap();
    let repo = env
        .add_repo("many", &env.full.url("many"), None)
        .await
        .unwrap();
    env.attach_full(&repo, &host).await;
    // the host is offline: its config grows to well over 64 KiB unsent
    let long = format!("/srv/{}", "p".repeat(400));
    let put = |i: usize| api::SchedulePut {
        schedule_id: None,
        host_id: host.clone(),
        repo_id: repo.clone(),
        cron: format!("{} 3 * * *", i % 60),
        timezone: "Europe/Berlin".into(),
        params: JobParams::Backup {
            paths: vec![format!("{long}/{i}")],
            excludes: vec![],
            tags: vec![],
            one_file_system: false,
            host_name: None,
        },
        enabled: true,
        jitter_secs: 0,
        timeout_secs: Some(600),
        grace_secs: None,
    };
    for i in 0..120 {
        let _: api::ScheduleSaved = env.call(api::SCHEDULE_PUT, put(i)).await;
    }
    let db = env.cp.db().await;
    let version = {
        let mut c = db.read().await.unwrap();
        rm_store::hosts::get(&mut c, &host)
            .await
            .unwrap()
            .config_version
    };
    let config_file = dir.join("config.json");
    let agent_config = || -> Option<AgentConfig> {
        serde_json::from_slice(&std::fs::read(&config_file).ok()?).ok()
    };

    // hello: the reply cannot carry it, so it follows in parts
    let a = Agent::start(env.settings(&dir, "many-1", &bin))
        .await
        .unwrap();
    env.wait_online(&a.host_id).await;
    let got = eventually("the agent applied the big config", || async {
        agent_config().filter(|c| c.version == u64::try_from(version).unwrap())
    })
    .await;
    assert_eq!(got.schedules.len(), 120);
    assert!(serde_json::to_vec(&got).unwrap().len() > 64 * 1024);

    // a push while online: also in parts, confirmed by the agent
    let saved: api::ScheduleSaved = env.call(api::SCHEDULE_PUT, put(120)).await;
    eventually("the pushed config confirmed", || async {
        let mut c = db.read().await.ok()?;
        let h = rm_store::hosts::get(&mut c, &host).await.ok()?;
        (h.applied_config_version == saved.config_version).then_some(())
    })
    .await;
    assert_eq!(agent_config().unwrap().schedules.len(), 121);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_listing_too_large_for_the_bus_is_refused_with_the_reason() {
    let bin = restic_bin();
    let env = Env::start_with(rm_testkit::BusOptions {
        max_payload: Some(64 * 1024),
        ..Default::default()
    })
    .await
    .unwrap();
    let a = env.agent("ls-1", &bin).await.unwrap();
    let repo = env.new_repo("wide", &a.host_id).await;
    env.attach_full(&repo, &a.host_id).await;
    // one directory whose listing is far over 64 KiB
    let src = env.path("wide");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..600 {
        std::fs::write(src.join(format!("{i:0>150}")), b"x").unwrap();
    }
    let out = env.restic(&bin, "wide", &["backup", src.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = env.snapshots(&bin, "wide")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let err = env
        .call_raw::<_, rm_bus::msg::QueryReply>(
            api::LS,
            api::LsRequest {
                host_id: a.host_id.clone(),
                repo_id: repo,
                snapshot: snap,
                dir: src.display().to_string(),
            },
        )
        .await;
    // an answer, at once, that says why — not a timeout
    let reason = match err {
        Ok(r) => {
            assert!(!r.ok, "{r:?}");
            r.error.unwrap_or_default()
        }
        Err(e) => e.message,
    };
    assert!(
        reason.contains("too large for the bus") && reason.contains("max_payload 65536"),
        "{reason}"
    );
}
