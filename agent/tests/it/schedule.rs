//! The local scheduler under a controllable clock: a cron slot fires once,
//! and after a simulated sleep over many slots the missed run happens once.

use std::time::Duration;

use rm_bus::clock::ManualClock;
use rm_controlplane::api;

use crate::support::*;

// 2030-01-01T02:58:00Z
const T0: i64 = 1_893_466_680_000;
const MIN: i64 = 60_000;

async fn scheduled_jobs(env: &Env, host: &str) -> Vec<rm_store::jobs::Job> {
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    rm_store::jobs::list_for_host(&mut c, host, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.origin == "schedule")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_slot_fires_once_and_a_missed_run_happens_once_after_sleep() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let clock = ManualClock::new(T0);
    let agent = env
        .agent_with_clock("sched-1", &bin, clock.clone())
        .await
        .unwrap();
    let host = agent.host_id.clone();
    let repo = env.new_repo("s1", &host).await;
    env.attach_append_only(&repo, "s1", &host, REPO_PASSWORD)
        .await;
    let src = env.path("src");
    make_tree(&src, &[("a.txt", 4000), ("b/c.txt", 100)]);

    // daily at 04:00 Berlin time (UTC+1 in January)
    let saved: api::ScheduleSaved = env
        .call(
            api::SCHEDULE_PUT,
            api::SchedulePut {
                schedule_id: None,
                host_id: host.clone(),
                repo_id: repo.clone(),
                cron: "0 4 * * *".into(),
                timezone: "Europe/Berlin".into(),
                params: backup(&[&src]),
                enabled: true,
                jitter_secs: 0,
                timeout_secs: Some(600),
                grace_secs: None,
            },
        )
        .await;
    // an invalid cron expression or time zone is refused with the reason
    for (cron, tz) in [("61 * * * *", "UTC"), ("0 4 * * *", "Mars/Olympus")] {
        let err = env
            .call_raw::<_, api::ScheduleSaved>(
                api::SCHEDULE_PUT,
                api::SchedulePut {
                    schedule_id: None,
                    host_id: host.clone(),
                    repo_id: repo.clone(),
                    cron: cron.into(),
                    timezone: tz.into(),
                    params: backup(&[&src]),
                    enabled: true,
                    jitter_secs: 0,
                    timeout_secs: None,
                    grace_secs: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, "invalid", "{err:?}");
    }

    // the agent acknowledges the config version it applied
    let db = env.cp.db().await;
    let applied = |version: i64| {
        let (db, host) = (&db, host.clone());
        async move {
            eventually(&format!("config {version} applied"), || async {
                let mut c = db.read().await.ok()?;
                let h = rm_store::hosts::get(&mut c, &host).await.ok()?;
                (h.applied_config_version == version).then_some(h)
            })
            .await
        }
    };
    applied(saved.config_version).await;
    // and heartbeats carry its vitals, with the schedule's next run
    let h = eventually("vitals with the next run", || async {
        let mut c = db.read().await.ok()?;
        let h = rm_store::hosts::get(&mut c, &host).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(h.vitals_json.as_deref()?).ok()?;
        (v["next_runs"].as_array()?.len() == 1).then_some((h, v))
    })
    .await;
    assert_eq!(h.0.agent_version.as_deref(), Some(rm_agent::VERSION));
    assert!(h.0.restic_version.is_some() && h.0.os.is_some() && h.0.arch.is_some());
    assert_eq!(h.1["next_runs"][0]["at_ms"], T0 + 2 * MIN, "{}", h.1);
    assert!(
        h.1["disks"][0]["free_bytes"].as_u64().unwrap() > 0,
        "{}",
        h.1
    );

    // the agent has the schedule and has looked at it at T0
    let fired_file = agent.state_dir.join("schedules.json");
    eventually("schedule seen by the agent", || async {
        let text = std::fs::read_to_string(&fired_file).ok()?;
        text.contains(&saved.schedule_id).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(scheduled_jobs(&env, &host).await.is_empty());

    // 04:00 Berlin = 03:00 UTC
    clock.set_ms(T0 + 2 * MIN + 5_000);
    let first = eventually("the 04:00 run", || async {
        let jobs = scheduled_jobs(&env, &host).await;
        (jobs.len() == 1 && jobs[0].status == "succeeded").then(|| jobs[0].clone())
    })
    .await;
    assert_eq!(
        first.schedule_id.as_deref(),
        Some(saved.schedule_id.as_str())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        scheduled_jobs(&env, &host).await.len(),
        1,
        "the slot fired once"
    );

    // the machine sleeps for three days and wakes: one run, not three
    clock.set_ms(T0 + 3 * 24 * 60 * MIN + 10 * MIN);
    eventually("the missed run", || async {
        let jobs = scheduled_jobs(&env, &host).await;
        (jobs.len() == 2 && jobs.iter().all(|j| j.status == "succeeded")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        scheduled_jobs(&env, &host).await.len(),
        2,
        "missed slots collapse into one run"
    );
    assert_eq!(env.snapshots(&bin, "s1").len(), 2);

    // deleting the schedule reaches the agent: no more runs
    let _: api::Done = env
        .call(
            api::SCHEDULE_DELETE,
            api::ScheduleRef {
                schedule_id: saved.schedule_id.clone(),
            },
        )
        .await;
    applied(saved.config_version + 1).await;
    let cached = std::fs::read_to_string(agent.state_dir.join("config.json")).unwrap();
    assert!(!cached.contains(&saved.schedule_id), "{cached}");
    clock.set_ms(T0 + 5 * 24 * 60 * MIN);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(scheduled_jobs(&env, &host).await.len(), 2);
}
