//! At-least-once results with the agent binary killed (SIGKILL) at the
//! worst moments, and exactly-once effects after it comes back.

use std::path::Path;

use crate::support::*;

const MB: usize = 1 << 20;

fn outbox_has_done(state_dir: &Path, job: &str) -> bool {
    outbox_has(state_dir, job, "done")
}

/// Is `job`'s `topic` message (started, done) waiting in the outbox?
fn outbox_has(state_dir: &Path, job: &str, topic: &str) -> bool {
    std::fs::read_dir(state_dir.join("outbox"))
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                // not a `.…tmp` file still being written
                !n.starts_with('.') && n.contains(&format!(".{job}.{topic}."))
            })
        })
        .unwrap_or(false)
}

/// A TCP proxy between the agent and the bus whose bus-to-agent direction
/// can be cut: what the bus sends then (acks among it) is read and
/// dropped, while everything the agent sends still arrives. Stops its
/// connections when dropped.
struct AckDropper {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl AckDropper {
    async fn start(bus_port: u16) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            // dropped with this task: every connection's copies end
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", bus_port)).await else {
                    continue;
                };
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                conns.spawn(async move {
                    let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
                });
                let flag = flag.clone();
                conns.spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match up_r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if !flag.load(Ordering::SeqCst)
                            && down_w.write_all(&buf[..n]).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, cut, task }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// From now on nothing the bus sends reaches the agent.
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for AckDropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn big_tree(env: &Env, name: &str) -> std::path::PathBuf {
    let src = env.path(name);
    let files: Vec<(String, usize)> = (0..6)
        .map(|i| (format!("{name}-{i}.bin"), 25 * MB))
        .collect();
    let refs: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    make_tree(&src, &refs);
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_committed_whose_ack_never_reached_the_agent_is_stored_once_after_sigkill_and_restart()
 {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let (host, state) = env.enroll("k-3").await.unwrap();
    // the agent reaches the bus through a proxy that can drop the answers
    let proxy = AckDropper::start(env.bus.port()).await;
    let mut agent = AgentProc::start(&state, &proxy.url(), &bin).unwrap();
    env.wait_online(&host).await;
    let repo = env.new_repo("k3", &host).await;
    env.attach_append_only(&repo, "k3", &host, REPO_PASSWORD)
        .await;
    let src = big_tree(&env, "src");

    let created = env.job(&host, &repo, backup(&[&src])).await;
    let id = created.job_id.clone();
    let db = env.cp.db().await;
    let get = |db: rm_store::Store, id: String| async move {
        let mut c = db.read().await.ok()?;
        rm_store::jobs::get(&mut c, &id).await.ok()
    };
    // running, and the agent has its `started` acknowledged (gone from
    // its outbox): from here on, only the `done` is left to answer
    eventually("running, started acknowledged", || async {
        let j = get(db.clone(), id.clone()).await?;
        (j.status == "running" && !outbox_has(&state, &id, "started")).then_some(())
    })
    .await;
    proxy.cut();
    // the result is committed, its ack sent, and the agent never read it:
    // the `done` is still in its outbox
    let first = eventually_within(
        "the result committed",
        std::time::Duration::from_secs(120),
        || async {
            let j = get(db.clone(), id.clone()).await?;
            (j.status == "succeeded").then_some(j)
        },
    )
    .await;
    assert!(
        outbox_has_done(&state, &id),
        "the ack reached the agent: nothing was lost"
    );
    agent.kill9();
    drop(proxy);

    // back, straight on the bus: the outbox sends the same `done` again
    let _agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    eventually("the re-sent done acknowledged", || async {
        (!outbox_has_done(&state, &id)).then_some(())
    })
    .await;
    let again = get(db.clone(), id.clone()).await.unwrap();
    assert_eq!(again, first, "the job's result was applied once");
    let mut c = db.read().await.unwrap();
    let jobs = rm_store::jobs::list_for_host(&mut c, &host, None, 100)
        .await
        .unwrap();
    let backups: Vec<_> = jobs.iter().filter(|j| j.kind == "backup").collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let stored = rm_store::snapshots::count(&mut c, &repo).await.unwrap();
    assert_eq!(stored, 1, "one snapshot stored from the one result");
    let snaps = env.snapshots(&bin, "k3");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
}

/// The control plane is down when the result is written: it is
/// acknowledged by nobody, and arrives once after the agent is killed and
/// both come back (no ack is lost here: none was ever sent; the test
/// above loses one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_written_while_the_control_plane_is_down_arrives_once_after_sigkill_and_restart() {
    let bin = restic_bin();
    let mut env = Env::start().await.unwrap();
    let (host, state) = env.enroll("k-1").await.unwrap();
    let mut agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    env.wait_online(&host).await;
    let repo = env.new_repo("k1", &host).await;
    env.attach_append_only(&repo, "k1", &host, REPO_PASSWORD)
        .await;
    let src = big_tree(&env, "src");

    let created = env.job(&host, &repo, backup(&[&src])).await;
    let db = env.cp.db().await;
    eventually("job dispatched", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &created.job_id).await.ok()?;
        (j.status != "queued").then_some(())
    })
    .await;
    drop(db);
    // the control plane goes away: the result cannot be acknowledged
    env.cp.stop().await;
    eventually_within(
        "done written to the outbox",
        std::time::Duration::from_secs(120),
        || async { outbox_has_done(&state, &created.job_id).then_some(()) },
    )
    .await;
    agent.kill9();

    env.cp = Cp::start(&env.bus, env.cp.data_dir.clone()).await.unwrap();
    let _agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    let job = env.finished(&created.job_id).await;
    assert_eq!(job.status, "succeeded", "{job:?}");
    eventually("outbox emptied", || async {
        (!outbox_has_done(&state, &created.job_id)).then_some(())
    })
    .await;
    let snaps = env.snapshots(&bin, "k1");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let db = env.cp.db().await;
    let mut c = db.read().await.unwrap();
    let jobs = rm_store::jobs::list_for_host(&mut c, &host, None, 100)
        .await
        .unwrap();
    let backups: Vec<_> = jobs.iter().filter(|j| j.kind == "backup").collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_accepted_before_sigkill_runs_once_after_restart() {
    let bin = restic_bin();
    let env = Env::start().await.unwrap();
    let (host, state) = env.enroll("k-2").await.unwrap();
    let mut agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    env.wait_online(&host).await;
    let repo = env.new_repo("k2", &host).await;
    env.attach_append_only(&repo, "k2", &host, REPO_PASSWORD)
        .await;
    let big = big_tree(&env, "big");
    let small = env.path("small");
    make_tree(&small, &[("s.txt", 1234)]);

    // the first job holds the repository; the second waits its turn on
    // the agent, accepted (persisted and acknowledged) but not started
    let first = env.job(&host, &repo, backup(&[&big])).await;
    let db = env.cp.db().await;
    eventually("first running", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &first.job_id).await.ok()?;
        (j.status == "running").then_some(())
    })
    .await;
    let second = env.job(&host, &repo, backup(&[&small])).await;
    eventually("second acknowledged by the agent", || async {
        let mut c = db.read().await.ok()?;
        let j = rm_store::jobs::get(&mut c, &second.job_id).await.ok()?;
        (j.status == "dispatched").then_some(())
    })
    .await;
    assert!(
        state
            .join("jobs")
            .join(format!("{}.json", second.job_id))
            .exists()
    );
    agent.kill9();
    // restic dies with the agent
    let needle = big.display().to_string();
    eventually("restic gone with the agent", || async {
        restic_processes(&needle).is_empty().then_some(())
    })
    .await;

    let _agent = AgentProc::start(&state, &env.bus.url(), &bin).unwrap();
    let j2 = env.finished(&second.job_id).await;
    assert_eq!(j2.status, "succeeded", "{j2:?}");
    let j1 = env.finished(&first.job_id).await;
    assert_eq!(j1.status, "failed", "{j1:?}");
    assert!(
        j1.error.as_deref().unwrap_or("").contains("agent stopped"),
        "{j1:?}"
    );
    let snaps = env.snapshots(&bin, "k2");
    let of_small: Vec<_> = snaps
        .iter()
        .filter(|s| s["paths"][0] == small.display().to_string())
        .collect();
    assert_eq!(
        of_small.len(),
        1,
        "the accepted job ran exactly once: {snaps:?}"
    );
    assert!(
        !snaps
            .iter()
            .any(|s| s["paths"][0] == big.display().to_string()),
        "the killed backup left no snapshot: {snaps:?}"
    );
}
