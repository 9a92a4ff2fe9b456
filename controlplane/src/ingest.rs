//! Ingest of everything agents send.
//!
//! - hello (request): last-seen, vitals, config re-sync, reconciliation of
//!   the agent's jobs with ours, then queued jobs go out.
//! - heartbeat: kept in memory (`beats`), flushed periodically through
//!   the writer task: changed rows only, vitals only when they changed.
//! - goodbye: offline at once.
//! - job `started` / `done` (request/ack, at least once): the host in the
//!   subject must own the job; applied idempotently by (job, phase), a
//!   batch per transaction with its shared follow-up work written once
//!   (`settle`), acknowledged only after commit, then events. A run of
//!   `done`s is read and written set-based (`rm_store::results`): a few
//!   statements for the run, not a few per result.
//!   A re-send of a result committed lately is acknowledged as a
//!   duplicate from memory (`crate::committed`), without the queue.
//! - job `part` (request/ack, at least once): a chunk of a summary too large
//!   for one message, stored until the `done` naming the parts' total
//!   reassembles it.
//! - job logs: appended (at most once), capped per job; what arrived
//!   together is one write.
//!
//! Every write goes through the role's writer task (`Cp::writer`): one
//! transaction per batch of whatever is queued; replies and events follow
//! the commit. Hello reads its host and builds its config (decrypting and
//! sealing secrets) on a read connection, outside the write lock.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Result;
use async_nats::Message;
use futures_util::StreamExt;
use rm_bus::msg::{
    Ack, Goodbye, Heartbeat, Hello, HelloReply, JobClaim, JobDone, JobOrigin, JobPart, JobStarted,
    LogBatch, PROTOCOL_VERSION, PartsRef, decode, encode,
};
use rm_bus::subject::{self, AgentSubject, AgentTopic, AgentTopicKind, Event, JobTopic};
use rm_store::jobs::{self, Finish, Finished, JobStatus, NewJob, Phase};
use rm_store::writer::Waiter;
use rm_store::{hosts, parts, results, schedules as sched_store};

use sqlx::Connection;

use crate::awaited::AwaitedQueue;
use crate::committed::Committed;
use crate::settle::Settle;
use crate::{Cp, dispatch, jobs as job_svc, lock, schedules};

pub(crate) async fn serve(cp: Arc<Cp>) -> Result<()> {
    let mut hello = cp
        .client
        .subscribe(subject::agent_any(AgentTopicKind::Hello))
        .await?;
    let mut beats = cp
        .client
        .subscribe(subject::agent_any(AgentTopicKind::Heartbeat))
        .await?;
    let mut byes = cp
        .client
        .subscribe(subject::agent_any(AgentTopicKind::Goodbye))
        .await?;
    let mut started = cp
        .client
        .subscribe(subject::agent_any_job(JobTopic::Started))
        .await?;
    let mut done = cp
        .client
        .subscribe(subject::agent_any_job(JobTopic::Done))
        .await?;
    let mut parts = cp
        .client
        .subscribe(subject::agent_any_job(JobTopic::Part))
        .await?;
    let logs = cp
        .client
        .subscribe(subject::agent_any_job(JobTopic::Log))
        .await?;
    let mut claims = cp
        .client
        .subscribe(subject::agent_any_job(JobTopic::Claim))
        .await?;
    cp.client.flush().await?;
    // The offline sweeper counts its grace from here: heartbeats can arrive.
    *lock(&cp.connected_since) = Some(tokio::time::Instant::now());

    // one hello per host: the hosts bound it
    let queue = Arc::new(AwaitedQueue::new(
        cp.t.hello_max_wait,
        cp.t.hello_newest_first,
        usize::MAX,
    ));
    let (c, q) = (cp.clone(), queue.clone());
    let hellos_in = async move {
        // Read as they come: a reconnect storm waits in the queue (one
        // hello per host, stale ones dropped) instead of in the
        // subscription behind hellos nobody waits for any more.
        while let Some(m) = hello.next().await {
            let Some(host) = host_of(&m) else { continue };
            let pushed = q.push(host, m);
            c.metrics.hellos.queued(pushed, q.len());
        }
        Ok::<(), anyhow::Error>(())
    };
    // A bounded number of handlers, each one hello at a time.
    let handlers = futures_util::future::join_all((0..cp.t.hello_concurrency.max(1)).map(|_| {
        let (c, q) = (cp.clone(), queue.clone());
        async move {
            loop {
                // stale hellos are dropped by the queue, counted here
                let t = q.take(|n| c.metrics.hellos.expired(n, q.len())).await;
                c.metrics.hellos.taken(1, q.len(), t.newest_first);
                tracing::debug!(host = %t.key, waited_ms = t.waited.as_millis(), newest_first = t.newest_first, "hello taken");
                let c2 = c.clone();
                // its own task: a panic stays with this hello
                if let Err(e) = tokio::spawn(async move { on_hello(&c2, t.msg).await }).await {
                    tracing::error!(host = %t.key, error = %e, "hello handler failed");
                    c.metrics.count_error("hello");
                }
            }
        }
    }));
    let hellos = async move {
        tokio::select! {
            r = hellos_in => r,
            () = async { handlers.await; } => Ok(()),
        }
    };
    let c = cp.clone();
    let beats_in = async move {
        while let Some(m) = beats.next().await {
            let Some(host) = host_of(&m) else { continue };
            match decode::<Heartbeat>("heartbeat", &m.payload) {
                Ok(hb) => {
                    let now = c.now();
                    c.metrics.heartbeat_received(now - hb.ts_ms);
                    c.resync.heartbeat(&host, hb.config_version);
                    // memory only: never blocks, never drops a beat
                    c.beats.beat(&host, &hb, now);
                }
                Err(e) => tracing::warn!(host = %host, error = %e, "heartbeat ignored"),
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let c = cp.clone();
    let byes_in = async move {
        while let Some(m) = byes.next().await {
            let Some(host) = host_of(&m) else { continue };
            if decode::<Goodbye>("goodbye", &m.payload).is_err() {
                tracing::warn!(host = %host, "malformed goodbye ignored");
                continue;
            }
            match on_goodbye(&c, &host).await {
                Ok(true) => c.event(Event::HostOffline, Some(&host), None, None).await,
                Ok(false) => {}
                Err(e) => c.metrics.loop_error("goodbye", &e.into()),
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let results = Arc::new(AwaitedQueue::new(
        cp.t.result_max_wait,
        cp.t.result_newest_first,
        cp.t.ingest_queue,
    ));
    let committed = Arc::new(Committed::new(COMMITTED_KEYS));
    let (c, q, known) = (cp.clone(), results.clone(), committed.clone());
    let results_in = async move {
        // Read as they come: a burst and its retries wait in the queue
        // (one per subject and key, stale ones dropped) instead of in the
        // subscriptions, where every ack came too late (`crate::awaited`).
        // A re-send of a result committed lately is answered at once.
        let take = |m: Message| async {
            let key = result_key(&m);
            if known.contains(&key) {
                c.metrics.result_acked_from_memory();
                reply(&c, &m, encode(&Ack::duplicate())).await;
                return;
            }
            let pushed = q.push(key, m);
            c.metrics.results.queued(pushed, q.len());
        };
        loop {
            tokio::select! {
                Some(m) = started.next() => take(m).await,
                Some(m) = done.next() => take(m).await,
                Some(m) = parts.next() => take(m).await,
                Some(m) = claims.next() => take(m).await,
                else => break,
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let c = cp.clone();
    let logs_in = async move {
        // What arrived together is one write (log lines are at most once).
        let mut logs = logs.ready_chunks(c.t.ingest_batch.max(1));
        while let Some(batch) = logs.next().await {
            let w = c.clone();
            let r = c
                .writer
                .run(move |tx| {
                    Box::pin(async move {
                        for m in &batch {
                            if let Err(e) = on_log(&w, tx, m).await {
                                tracing::warn!(subject = %m.subject, error = %format!("{e:#}"), "log batch not stored");
                            }
                        }
                        Ok::<_, rm_store::StoreError>(())
                    })
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "log lines not stored");
                c.metrics.count_error("logs");
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    // Each its own task. As one task (a `try_join!`) only one core could
    // run them, and the heartbeat reader (6,700 a second at 100,000 hosts)
    // waited while another branch held that core: the client's buffer
    // for the heartbeat subscription filled and it dropped heartbeats
    // (2,340 in one minute of a 100,000-agent run, docs/benchmarks.md).
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(hellos);
    // The heartbeat reader even on a thread of its own: as a task it took
    // its turn behind every hello handler and result batch in the
    // runtime's queue, and at the end of a 100,000-agent ramp the buffer
    // still filled (6,136 drops in 3 s). It only decodes and records in
    // memory; the thread ends when ingest does (`stop_beats` dropped).
    let (stop_beats, beats_stopped) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Handle::current();
    tasks.spawn_blocking(move || {
        rt.block_on(async move {
            tokio::select! {
                r = beats_in => r,
                _ = beats_stopped => Ok(()),
            }
        })
    });
    tasks.spawn(byes_in);
    tasks.spawn(results_in);
    tasks.spawn(logs_in);
    tasks.spawn(heartbeat_flusher(cp.clone()));
    tasks.spawn(result_writer(cp.clone(), results, committed));
    // The first to fail ends ingest; dropping the set aborts the others
    // (and `stop_beats` the heartbeat thread).
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| anyhow::anyhow!("an ingest task ended abnormally: {e}"))??;
    }
    drop(stop_beats);
    Ok(())
}

async fn on_goodbye(cp: &Cp, host: &str) -> rm_store::Result<bool> {
    // beats before the goodbye must not bring it back online
    cp.beats.offline(host);
    let (id, now) = (host.to_owned(), cp.now());
    cp.writer
        .run(move |tx| Box::pin(async move { hosts::mark_offline(tx, &id, now).await }))
        .await
}

fn host_of(m: &Message) -> Option<String> {
    match AgentSubject::parse(m.subject.as_str()) {
        Some(s) => Some(s.host.to_string()),
        None => {
            tracing::warn!(subject = %m.subject, "message on a malformed agent subject ignored");
            None
        }
    }
}

/// Answers an agent's request, only ever on that agent's own inbox.
async fn reply(cp: &Cp, m: &Message, body: bytes::Bytes) {
    let Some(r) = &m.reply else { return };
    let own = AgentSubject::parse(m.subject.as_str())
        .is_some_and(|s| subject::is_agent_inbox(r.as_str(), &s.host));
    if !own {
        cp.metrics.reply_refused();
        tracing::warn!(subject = %m.subject, reply = %r, "reply subject is not the asking agent's inbox; not answered");
        return;
    }
    if let Err(e) = cp.client.publish(r.clone(), body).await {
        tracing::warn!(error = %e, "reply not sent");
    }
}

fn vitals_of_hello(h: &Hello) -> hosts::Vitals {
    hosts::Vitals {
        agent_version: Some(h.agent_version.clone()),
        restic_version: h.restic_version.clone(),
        os: Some(h.os.clone()),
        arch: Some(h.arch.clone()),
        uptime_secs: None,
        vitals_json: None,
    }
}

async fn on_hello(cp: &Arc<Cp>, m: Message) {
    let Some(host) = host_of(&m) else { return };
    let hello: Hello = match decode("hello", &m.payload) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(host = %host, error = %e, "malformed hello");
            return;
        }
    };
    match handle_hello(cp, &host, &hello).await {
        Ok(mut r) => {
            let mut body = encode(&r);
            if r.config.is_some() && rm_bus::size::check(&cp.client, 0, body.len()).is_err() {
                // too large to ride on the reply: pushed in parts instead
                tracing::info!(host = %host, bytes = body.len(), "config too large for the hello reply; pushing it in parts");
                r.config = None;
                body = encode(&r);
                schedules::spawn_push(cp, vec![host.clone()]);
            }
            reply(cp, &m, body).await;
        }
        Err(e) => {
            tracing::error!(host = %host, error = %format!("{e:#}"), "hello not handled");
            cp.metrics.count_error("hello");
        }
    }
}

async fn handle_hello(cp: &Arc<Cp>, host_id: &str, hello: &Hello) -> Result<HelloReply> {
    let now = cp.now();
    let applied = i64::try_from(hello.config_version).unwrap_or(0);
    // Read, decrypt and seal on a read connection: never under the write lock.
    let config = {
        let mut c = cp.store.read().await?;
        let host = hosts::get(&mut c, host_id).await?;
        if host.status()? == hosts::HostStatus::Revoked {
            anyhow::bail!("hello from revoked host");
        }
        // Behind, or ahead (this database was restored from an older
        // backup): either way the agent gets the control plane's config.
        if applied == host.config_version {
            None
        } else {
            match schedules::build_config(cp, &mut c, &host).await {
                Ok(c) => Some(c),
                Err(f) => {
                    tracing::error!(host = %host_id, reason = %f.message, "config not built for hello");
                    None
                }
            }
        }
    };
    let (id, vitals) = (host_id.to_owned(), vitals_of_hello(hello));
    let (came_online, active) = cp
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let came_online = hosts::record_seen(tx, &id, now, &vitals).await?;
                hosts::set_applied_config(tx, &id, applied).await?;
                let active = jobs::active_for(tx, &id).await?;
                Ok::<_, rm_store::StoreError>((came_online, active))
            })
        })
        .await?;
    if came_online {
        cp.event(Event::HostOnline, Some(host_id), None, None).await;
    }

    // Reconcile: what the agent holds vs what we think it holds.
    let held: HashSet<String> = hello
        .accepted_jobs
        .iter()
        .chain(&hello.running_jobs)
        .map(ToString::to_string)
        .collect();
    lock(&cp.agent_jobs).insert(host_id.to_owned(), held.clone());
    for job in &active {
        if held.contains(&job.id) {
            if job.cancel_requested {
                let cp = cp.clone();
                let (h, j) = (host_id.to_owned(), job.id.clone());
                tokio::spawn(async move { job_svc::send_cancel(&cp, &h, &j).await });
            }
        } else if composed_before_accept(cp, hello, &job.id) {
            // The hello left the agent before this job reached it.
            tracing::debug!(job = %job.id, host = %host_id, "job not in a hello composed before it was accepted");
        } else {
            // Its `done` may still be in the agent's outbox: wait a grace.
            spawn_lost_check(cp, host_id.to_owned(), job.id.clone());
        }
    }
    // Held jobs ended here as cancelled (a cancel while the host was
    // offline): the agent must stop them.
    let stale: Vec<String> = held
        .iter()
        .filter(|j| !active.iter().any(|a| &a.id == *j))
        .cloned()
        .collect();
    if !stale.is_empty() {
        let cancelled = {
            let mut c = cp.store.read().await?;
            jobs::cancelled_among(&mut c, &stale).await?
        };
        for j in cancelled {
            tracing::info!(job = %j, host = %host_id, "agent still holds a cancelled job; telling it");
            let cp = cp.clone();
            let h = host_id.to_owned();
            tokio::spawn(async move { job_svc::send_cancel(&cp, &h, &j).await });
        }
    }
    dispatch::spawn_dispatch(cp, host_id.to_owned());
    Ok(HelloReply {
        v: PROTOCOL_VERSION,
        config,
        server_time_ms: now,
    })
}

/// Was `hello` composed before the agent accepted `job`? Known when the
/// dispatch ack and the hello carry marks of the same agent process; a
/// different process (the agent restarted) or no marks (an older agent)
/// count as "after", as before marks existed.
fn composed_before_accept(cp: &Cp, hello: &Hello, job: &str) -> bool {
    let Some(h) = &hello.accept_seq else {
        return false;
    };
    lock(&cp.accept_marks)
        .get(job)
        .is_some_and(|m| m.boot == h.boot && m.seq > h.seq)
}

fn spawn_lost_check(cp: &Arc<Cp>, host: String, job: String) {
    cp.metrics.lost_check();
    let cp = cp.clone();
    tokio::spawn(async move {
        tokio::time::sleep(cp.t.lost_grace).await;
        let still_unknown = !lock(&cp.agent_jobs)
            .get(&host)
            .is_some_and(|s| s.contains(&job));
        if !still_unknown {
            return;
        }
        let (id, now) = (job.clone(), cp.now());
        let r = cp
            .writer
            .run(move |tx| {
                Box::pin(async move {
                    let j = jobs::get(&mut *tx, &id).await?;
                    if j.status()?.is_terminal() {
                        return Ok::<_, anyhow::Error>(None);
                    }
                    let lost = jobs::finish(&mut *tx, &id, JobStatus::Lost, &Finish {
                        error: Some("the agent no longer knows this job (restarted or reinstalled); its result will not arrive".into()),
                        finished_at: now,
                        ..Finish::default()
                    })
                    .await?;
                    // its repository, for the event
                    Ok(lost.then_some(j.repo_id))
                })
            })
            .await;
        match r {
            Ok(Some(repo)) => {
                lock(&cp.accept_marks).remove(&job);
                tracing::warn!(job = %job, host = %host, "job lost");
                cp.job_event(Event::JobFinished, &host, &job, repo.as_deref())
                    .await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(job = %job, error = %format!("{e:#}"), "lost check failed"),
        }
    });
}

/// Flushes heartbeats kept in memory every `seen_flush` (the changed
/// rows, `flush_rows_per_write` to a write), and at once the hosts that
/// came online, alone: the periodic flush keeps its time however often
/// hosts come back.
async fn heartbeat_flusher(cp: Arc<Cp>) -> Result<()> {
    let every = cp.t.seen_flush.min(cp.t.heartbeat * 2);
    let per_write = cp.t.flush_rows_per_write.max(1);
    let mut next = tokio::time::Instant::now() + every;
    loop {
        let periodic = tokio::select! {
            () = tokio::time::sleep_until(next) => true,
            () = cp.beats.wake.notified() => false,
        };
        let mut rows = if periodic {
            next = tokio::time::Instant::now() + every;
            cp.beats.dirty()
        } else {
            cp.beats.came_online()
        };
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(per_write));
            if !flush_beats(&cp, rows).await {
                // the rest stays dirty too: the next flush writes them
                break;
            }
            rows = rest;
        }
    }
}

/// Writes one part of a flush; false if it was not written (its rows stay
/// dirty).
async fn flush_beats(cp: &Arc<Cp>, rows: Vec<crate::beats::Flush>) -> bool {
    let count = rows.len();
    let r = cp
        .writer
        .run(move |tx| {
            Box::pin(async move {
                let beats: Vec<hosts::Beat<'_>> = rows
                    .iter()
                    .map(|f| hosts::Beat {
                        id: &f.host,
                        seen_at: f.seen,
                        uptime_secs: f.uptime,
                        vitals: f.vitals.as_ref(),
                    })
                    .collect();
                let done = hosts::record_beats(tx, &beats).await?;
                Ok::<_, rm_store::StoreError>((rows, done))
            })
        })
        .await;
    match r {
        Ok((rows, done)) => {
            let vitals = rows.iter().filter(|f| f.vitals.is_some()).count();
            cp.beats.flushed(&rows);
            cp.beats.placed(&done.rowids);
            // counted once the rows are known flushed: a reader of the
            // counter sees them as such
            cp.metrics.heartbeats_flushed(rows.len(), vitals);
            for h in done.unknown {
                tracing::warn!(host = %h, "heartbeat from unknown host");
                cp.beats.forget(&h);
            }
            for h in done.came_online {
                cp.event(Event::HostOnline, Some(&h), None, None).await;
                dispatch::spawn_dispatch(cp, h);
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, count, "heartbeats not written; retried at the next flush");
            cp.metrics.count_error("heartbeats");
            false
        }
    }
}

/// A result's key in the queue: its subject (host, job, phase) and its
/// idempotency key (a part's index), so an agent's retry replaces the
/// copy still waiting.
fn result_key(m: &Message) -> String {
    let key = rm_bus::reqack::IdempotencyKey::of(m);
    format!("{} {}", m.subject, key.as_ref().map_or("", |k| k.as_str()))
}

/// Results whose re-sends memory answers ([`Committed`]).
const COMMITTED_KEYS: usize = 65_536;

/// `m`'s key for [`Committed`] if a re-send of it, once `ack` committed,
/// is a duplicate whatever happens meanwhile: an accepted `started` or
/// `done` with an idempotency key (the store records each phase once).
/// Not a part (a part sent again before its `done` replaces the stored
/// one), not a claim (its answer depends on the schedule's state), and
/// nothing refused or to be asked again.
fn committed_key(m: &Message, ack: &Ack) -> Option<String> {
    if !ack.ok || ack.retry {
        return None;
    }
    rm_bus::reqack::IdempotencyKey::of(m)?;
    let subj = AgentSubject::parse(m.subject.as_str())?;
    match subj.topic {
        AgentTopic::Job(_, JobTopic::Started | JobTopic::Done) => Some(result_key(m)),
        _ => None,
    }
}

/// What applying one started/done message produced.
struct Applied {
    ack: Ack,
    /// The event to publish after commit: (event, owner host, job, the
    /// job's repository).
    event: Option<(Event, String, String, Option<String>)>,
}

/// Applies `started` / `done` / `part` / `claim` a batch at a time: the
/// batch is ONE queued write (one transaction, one commit), applied in
/// parts ([`apply_parts`]), each part's shared follow-up work written once
/// ([`Settle`]); acks go out as soon as it commits, then events, in one
/// pass. A light trickle lingers briefly to share a commit; under a burst
/// the batch is full at once. While a batch commits the next one gathers.
/// Other writers' writes (operators') queue beside it, never behind a
/// backlog of results, and one that waits ends the transaction after the
/// part in progress: the rest of the batch goes first into the next one.
/// A result that did not commit gets no ack: its agent sends it again.
/// Results come from the queue ingest reads them into ([`AwaitedQueue`]):
/// the oldest while the writer keeps up, the newest once it is behind,
/// never one its agent stopped waiting for.
async fn result_writer(cp: Arc<Cp>, q: Arc<AwaitedQueue>, committed: Arc<Committed>) -> Result<()> {
    let part = cp.t.ingest_batch.max(1);
    let max = cp.t.ingest_commit_results.max(part);
    let expired = |n| cp.metrics.results.expired(n, q.len());
    let taken = |t: Vec<crate::awaited::Taken>| {
        let newest_first = t.iter().any(|t| t.newest_first);
        cp.metrics.results.taken(t.len(), q.len(), newest_first);
        t.into_iter().map(|t| t.msg)
    };
    // results of a batch cut short by an operator's write: they waited
    // already, so they go first and without lingering
    let mut carried: Vec<Message> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            batch.extend(taken(q.take_up_to(max, expired).await));
            let deadline = tokio::time::Instant::now() + cp.t.ingest_linger;
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, q.take_up_to(max - batch.len(), expired))
                    .await
                {
                    Ok(more) => batch.extend(taken(more)),
                    Err(_) => break,
                }
            }
        } else if batch.len() < max {
            let (more, n) = q.try_take_up_to(max - batch.len());
            if n > 0 {
                expired(n);
            }
            batch.extend(taken(more));
        }
        let c = cp.clone();
        let r = cp
            .writer
            .run(move |tx| Box::pin(async move { apply_parts(&c, tx, batch, part).await }))
            .await;
        match r {
            Ok(Parts { applied, rest, out }) => {
                carried = rest;
                for (m, a) in applied.iter().zip(&out) {
                    if let Some(key) = a.as_ref().and_then(|a| committed_key(m, &a.ack)) {
                        committed.insert(key);
                    }
                }
                after_commit(&cp, &applied, out).await
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "results not committed; their agents will retry");
                cp.metrics.count_error("results");
            }
        }
    }
}

/// Why a transaction of results ended before its batch did
/// ([`apply_parts`]; counted apart in the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Someone waited for the write connection (an operator's write in
    /// the writer's first lane, or another role of the process).
    Waiting(Waiter),
    /// The parts had taken `Timings::ingest_parts_budget`.
    Time,
}

/// What one transaction of results applied ([`apply_parts`]).
struct Parts {
    /// The results applied, in order ...
    applied: Vec<Message>,
    /// ... what each produced (`None`: not applied, no ack) ...
    out: Vec<Option<Applied>>,
    /// ... and the results left for the next transaction.
    rest: Vec<Message>,
}

/// Applies `batch` in parts of `part` results ([`apply_batch`] each) inside
/// the writer's one transaction, and stops after a part when the batch is
/// done, when an operator's write or another role is waiting for the
/// connection, or when the parts have taken `Timings::ingest_parts_budget`
/// (each cause counted apart, [`Cut`]). The pages results share (index
/// leaves, a repository's and a host's rows) are written once per commit,
/// so a larger commit writes fewer pages a result (13.6 at 1,024, 10.3 at
/// 4,096, docs/benchmarks.md, stop 59; shorter commits, not a faster
/// writer, stop 60); an operator's click waits for one part and the
/// commit, as it did for a batch of one part.
async fn apply_parts(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    mut batch: Vec<Message>,
    part: usize,
) -> Result<Parts> {
    let started = std::time::Instant::now();
    let mut out = Vec::with_capacity(batch.len());
    let mut done = 0;
    let mut cut = None;
    while done < batch.len() {
        let end = done.saturating_add(part).min(batch.len());
        out.extend(apply_batch(cp, tx, &batch[done..end]).await?);
        done = end;
        cut = match cp.writer.waiting() {
            Some(w) => Some(Cut::Waiting(w)),
            None if started.elapsed() >= cp.t.ingest_parts_budget => Some(Cut::Time),
            None => None,
        };
        if cut.is_some() {
            break;
        }
    }
    cp.metrics.results_applied(started.elapsed());
    let rest = batch.split_off(done);
    if let Some(cut) = cut.filter(|_| !rest.is_empty()) {
        cp.metrics.results_cut_short(cut);
    }
    Ok(Parts {
        applied: batch,
        out,
        rest,
    })
}

/// Acks, then events, for a committed batch (`None`: not applied, no ack).
async fn after_commit(cp: &Cp, batch: &[Message], out: Vec<Option<Applied>>) {
    let applied = out.iter().flatten().count();
    let duplicates = out.iter().flatten().filter(|a| a.ack.duplicate).count();
    cp.metrics.results_committed(applied, duplicates);
    let mut events = Vec::with_capacity(out.len());
    for (m, a) in batch.iter().zip(out) {
        let Some(a) = a else { continue };
        reply(cp, m, encode(&a.ack)).await;
        events.extend(a.event);
    }
    let mut finished = false;
    for (e, host, job, repo) in events {
        finished |= e == Event::JobFinished;
        cp.job_event(e, &host, &job, repo.as_deref()).await;
    }
    if finished {
        // a repository may have become free
        cp.dispatch_wake.notify_one();
    }
}

/// Applies a batch inside the writer's transaction: all together in one
/// savepoint; if that fails, again one result at a time, each in its own
/// savepoint, so one bad result does not hold up the others (it alone is
/// `None`). An error here means the transaction itself is unusable.
async fn apply_batch(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    batch: &[Message],
) -> Result<Vec<Option<Applied>>> {
    {
        let mut sp = tx.begin().await?;
        match apply_all(cp, &mut sp, batch).await {
            Ok(v) => {
                sp.commit().await?;
                return Ok(v.into_iter().map(Some).collect());
            }
            Err(e) => {
                sp.rollback().await?;
                tracing::warn!(results = batch.len(), error = %format!("{e:#}"), "result batch failed; applying its results one at a time");
                cp.metrics.results_alone(batch.len());
            }
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        let mut sp = tx.begin().await?;
        match apply_all(cp, &mut sp, std::slice::from_ref(m)).await {
            Ok(mut v) => {
                sp.commit().await?;
                out.push(v.pop());
            }
            Err(e) => {
                sp.rollback().await?;
                tracing::error!(subject = %m.subject, error = %format!("{e:#}"), "result not applied; the agent will retry");
                cp.metrics.count_error("results");
                out.push(None);
            }
        }
    }
    Ok(out)
}

/// Applies each result in order, then the work they share. A run of
/// consecutive `done` messages for distinct jobs is applied together
/// ([`apply_done_run`]: a few statements for the whole run); everything
/// else one message at a time. Results before a run are written before
/// it reads, so the order of the batch is kept.
async fn apply_all(cp: &Cp, tx: &mut rm_store::Conn, batch: &[Message]) -> Result<Vec<Applied>> {
    let mut settle = Settle::default();
    let mut out = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        let run = done_run(&batch[i..]);
        if run.is_empty() {
            let a = apply_result(cp, tx, &batch[i], &mut settle).await?;
            out.push(record_refusal(cp, tx, &batch[i], a).await?);
            i += 1;
            continue;
        }
        let n = run.len();
        let applied = apply_done_run(cp, tx, run, &mut settle).await?;
        for (m, a) in batch[i..i + n].iter().zip(applied) {
            out.push(record_refusal(cp, tx, m, a).await?);
        }
        i += n;
    }
    settle.write(cp, tx).await?;
    Ok(out)
}

/// The `done` messages at the front of `batch` that decode, each for a
/// job none before it in the run names: (sending host, message).
fn done_run(batch: &[Message]) -> Vec<(String, JobDone)> {
    let mut run: Vec<(String, JobDone)> = Vec::new();
    let mut ids = HashSet::new();
    for m in batch {
        let Some(subj) = AgentSubject::parse(m.subject.as_str()) else {
            break;
        };
        let AgentTopic::Job(job_id, JobTopic::Done) = &subj.topic else {
            break;
        };
        let Ok(msg) = decode::<JobDone>("done", &m.payload) else {
            break;
        };
        if msg.job_id != *job_id || !ids.insert(msg.job_id.to_string()) {
            break;
        }
        run.push((subj.host.to_string(), msg));
    }
    run
}

/// Puts a summary that came in parts back into `msg`. Parts that did not
/// all arrive (only possible when this database lost them) leave the
/// summary empty and say so in the job's error.
async fn reassemble(
    tx: &mut rm_store::Conn,
    id: &str,
    p: PartsRef,
    msg: &mut JobDone,
) -> Result<()> {
    let problem = match parts::take(&mut *tx, id, "summary", p.total, p.bytes).await? {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => {
                tracing::info!(job = %id, parts = p.total, bytes = p.bytes, "summary reassembled from parts");
                msg.summary = Some(v);
                return Ok(());
            }
            Err(e) => format!("its parts are not JSON: {e}"),
        },
        Err(incomplete) => incomplete.to_string(),
    };
    tracing::error!(job = %id, reason = %problem, "summary parts did not reassemble");
    let note = format!("the result's summary was lost in transit ({problem})");
    msg.error = Some(match msg.error.take() {
        Some(e) => format!("{e}; {note}"),
        None => note,
    });
    Ok(())
}

/// Keeps a refused result where an operator sees it (the agent moves it
/// to its `rejected/` directory and stops sending it); the host's page is
/// told to refresh once the batch commits.
async fn record_refusal(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    m: &Message,
    mut a: Applied,
) -> Result<Applied> {
    // a refusal for now (a busy repository) is asked again, not kept
    if a.ack.ok || a.ack.duplicate || a.ack.retry {
        return Ok(a);
    }
    let Some(subj) = AgentSubject::parse(m.subject.as_str()) else {
        return Ok(a);
    };
    let AgentTopic::Job(job_id, topic) = &subj.topic else {
        return Ok(a);
    };
    let phase = match topic {
        JobTopic::Started => "started",
        JobTopic::Done => "done",
        JobTopic::Part => "part",
        JobTopic::Claim => "claim",
        _ => "other",
    };
    let reason = a.ack.error.clone().unwrap_or_default();
    let host = subj.host.to_string();
    tracing::warn!(host = %host, job = %job_id, phase, reason = %reason, "result refused; recorded");
    rm_store::rejected::record(
        &mut *tx,
        &host,
        job_id.as_str(),
        phase,
        &reason,
        &m.payload,
        cp.now(),
    )
    .await?;
    a.event = Some((Event::HostChanged, host, job_id.to_string(), None));
    Ok(a)
}

fn refused(reason: impl Into<String>) -> Applied {
    Applied {
        ack: Ack::refused(reason),
        event: None,
    }
}

async fn apply_result(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    m: &Message,
    settle: &mut Settle,
) -> Result<Applied> {
    let Some(subj) = AgentSubject::parse(m.subject.as_str()) else {
        return Ok(refused("malformed subject"));
    };
    let AgentTopic::Job(job_id, topic) = &subj.topic else {
        return Ok(refused("not a job subject"));
    };
    let host = subj.host.to_string();
    match topic {
        JobTopic::Started => {
            let msg: JobStarted = match decode("started", &m.payload) {
                Ok(s) => s,
                Err(e) => return Ok(refused(e.to_string())),
            };
            if msg.job_id != *job_id {
                return Ok(refused("job id in the payload does not match the subject"));
            }
            apply_started(cp, tx, &host, &msg, settle).await
        }
        JobTopic::Done => {
            let msg: JobDone = match decode("done", &m.payload) {
                Ok(s) => s,
                Err(e) => return Ok(refused(e.to_string())),
            };
            if msg.job_id != *job_id {
                return Ok(refused("job id in the payload does not match the subject"));
            }
            let mut one = apply_done_run(cp, tx, vec![(host, msg)], settle).await?;
            Ok(one.pop().unwrap_or_else(|| refused("not applied")))
        }
        JobTopic::Part => {
            let msg: JobPart = match decode("part", &m.payload) {
                Ok(s) => s,
                Err(e) => return Ok(refused(e.to_string())),
            };
            if msg.job_id != *job_id {
                return Ok(refused("job id in the payload does not match the subject"));
            }
            apply_part(cp, tx, &host, &msg).await
        }
        JobTopic::Claim => {
            let msg: JobClaim = match decode("claim", &m.payload) {
                Ok(s) => s,
                Err(e) => return Ok(refused(e.to_string())),
            };
            if msg.job_id != *job_id {
                return Ok(refused("job id in the payload does not match the subject"));
            }
            apply_claim(cp, tx, &host, &msg).await
        }
        _ => Ok(refused("not a result subject")),
    }
}

async fn apply_started(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    host: &str,
    msg: &JobStarted,
    settle: &mut Settle,
) -> Result<Applied> {
    let id = msg.job_id.as_str();
    let (owner, repo) = match jobs::find(&mut *tx, id).await? {
        Some(job) if job.exec_host_id != host => {
            tracing::warn!(job = %id, host = %host, owner = %job.exec_host_id, "started for another host's job refused");
            return Ok(refused("this job belongs to another host"));
        }
        Some(job) => (job.host_id, job.repo_id),
        None => {
            // A run the agent started from its own schedule.
            let JobOrigin::Schedule { schedule_id } = &msg.origin else {
                return Ok(refused("unknown job"));
            };
            let Ok(s) = sched_store::get(&mut *tx, schedule_id).await else {
                return Ok(refused(format!(
                    "unknown schedule {schedule_id} (deleted while the host was offline?): this run is not kept as a job"
                )));
            };
            if s.exec_host_id != host {
                return Ok(refused("this schedule belongs to another host"));
            }
            let params = match &msg.params {
                Some(p) => p.clone(),
                None => s.params()?,
            };
            jobs::insert(
                &mut *tx,
                &NewJob {
                    id,
                    host_id: &s.host_id,
                    exec_host_id: host,
                    repo_id: Some(&s.repo_id),
                    params: &params,
                    origin: "schedule",
                    schedule_id: Some(&s.id),
                    status: JobStatus::Running,
                    timeout_secs: s.timeout_secs,
                    created_by: "schedule",
                    created_at: msg.started_ms,
                    started_at: Some(msg.started_ms),
                },
            )
            .await?;
            settle.counts(&s.host_id);
            (s.host_id, Some(s.repo_id))
        }
    };
    if !jobs::record_phase(&mut *tx, id, Phase::Started, cp.now()).await? {
        return Ok(Applied {
            ack: Ack::duplicate(),
            event: None,
        });
    }
    if let Some(h) = jobs::set_running_row(&mut *tx, id, msg.started_ms).await? {
        settle.counts(&h);
    }
    // its deadline counts from the control plane's clock, not the agent's
    jobs::touch_active(&mut *tx, id, cp.now()).await?;
    Ok(Applied {
        ack: Ack::ok(),
        event: Some((Event::JobStarted, owner, id.to_owned(), repo)),
    })
}

/// An agent asks to start a scheduled job: a prune, check or forget is
/// granted only when its repository is free, a backup when no exclusive
/// job holds it (backups share it); recorded as dispatched in the same
/// statement (so no conflicting dispatch or claim passes beside it);
/// busy → ask again.
async fn apply_claim(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    host: &str,
    msg: &JobClaim,
) -> Result<Applied> {
    let JobOrigin::Schedule { schedule_id } = &msg.origin else {
        return Ok(refused("only scheduled runs ask for their repository"));
    };
    let Ok(s) = sched_store::get(&mut *tx, schedule_id).await else {
        return Ok(refused(format!(
            "unknown schedule {schedule_id} (deleted while the host was offline?): not run"
        )));
    };
    if s.exec_host_id != host {
        return Ok(refused("this schedule belongs to another host"));
    }
    if s.repo_id != msg.repo_id {
        return Ok(refused("this schedule uses another repository"));
    }
    let now = cp.now();
    let claim = jobs::claim_scheduled(
        &mut *tx,
        &NewJob {
            id: msg.job_id.as_str(),
            host_id: &s.host_id,
            exec_host_id: host,
            repo_id: Some(&s.repo_id),
            params: &msg.params,
            origin: "schedule",
            schedule_id: Some(&s.id),
            status: JobStatus::Dispatched,
            timeout_secs: s.timeout_secs,
            created_by: "schedule",
            created_at: now,
            started_at: None,
        },
    )
    .await?;
    Ok(match claim {
        jobs::ScheduledClaim::Granted => {
            tracing::info!(job = %msg.job_id, host = %host, repo = %s.repo_id, "scheduled run may start");
            Applied {
                ack: Ack::ok(),
                event: Some((
                    Event::JobQueued,
                    s.host_id.clone(),
                    msg.job_id.to_string(),
                    Some(s.repo_id.clone()),
                )),
            }
        }
        jobs::ScheduledClaim::Busy {
            other_id,
            other_kind,
        } => {
            tracing::info!(job = %msg.job_id, host = %host, repo = %s.repo_id, other = %other_id, "scheduled run waits for the repository");
            Applied {
                ack: Ack::refused_for_now(format!(
                    "the repository is busy with job {other_id} ({other_kind})"
                )),
                event: None,
            }
        }
        jobs::ScheduledClaim::Finished => refused("this job has already finished"),
    })
}

/// Stores one part of a result too large for one message; the `done`
/// that names the parts' total reassembles them.
async fn apply_part(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    host: &str,
    msg: &JobPart,
) -> Result<Applied> {
    let id = msg.job_id.as_str();
    let Some(job) = jobs::find(&mut *tx, id).await? else {
        return Ok(refused("unknown job; send started first"));
    };
    if job.exec_host_id != host {
        tracing::warn!(job = %id, host = %host, owner = %job.exec_host_id, "part for another host's job refused");
        return Ok(refused("this job belongs to another host"));
    }
    if msg.of != "summary" || msg.index >= msg.total {
        return Ok(refused(format!(
            "unknown part {}/{} of {:?}",
            msg.index, msg.total, msg.of
        )));
    }
    let status = job.status()?;
    if status.is_terminal() && status != JobStatus::Lost {
        // its `done` is recorded: a late re-send (a lost job's late result
        // still counts, so its parts are kept)
        return Ok(Applied {
            ack: Ack::duplicate(),
            event: None,
        });
    }
    parts::put(
        &mut *tx,
        id,
        &msg.of,
        msg.index,
        msg.total,
        &msg.data,
        cp.now(),
    )
    .await?;
    Ok(Applied {
        ack: Ack::ok(),
        event: None,
    })
}

/// Applies a run of `done` messages, each for a different job, in a few
/// statements for the whole run: the jobs and their recorded phases are
/// read at once, then each result is decided in order (refused, a
/// duplicate, or applied: its summary reassembled, its host's summary and
/// repository's health noted in `settle`), then every phase row and every
/// finished job is written at once. One result per message, in order.
async fn apply_done_run(
    cp: &Cp,
    tx: &mut rm_store::Conn,
    run: Vec<(String, JobDone)>,
    settle: &mut Settle,
) -> Result<Vec<Applied>> {
    let ids: Vec<String> = run.iter().map(|(_, d)| d.job_id.to_string()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let found = results::jobs_by_id(&mut *tx, &id_refs).await?;
    let recorded = results::phases_recorded(&mut *tx, &id_refs, Phase::Done).await?;
    let with_repo: Vec<&str> = found
        .values()
        .filter(|j| j.repo_id.is_some())
        .map(|j| j.host_id.as_str())
        .collect();
    settle.prefetch_restic_hosts(&mut *tx, &with_repo).await?;
    let mut out = Vec::with_capacity(run.len());
    let mut phases: Vec<&str> = Vec::with_capacity(run.len());
    let mut finishes: Vec<(&str, JobStatus, Finish)> = Vec::with_capacity(run.len());
    for ((host, mut msg), id) in run.into_iter().zip(&ids) {
        let id = id.as_str();
        let Some(job) = found.get(id) else {
            out.push(refused("unknown job; send started first"));
            continue;
        };
        if job.exec_host_id != host {
            tracing::warn!(job = %id, host = %host, owner = %job.exec_host_id, "done for another host's job refused");
            out.push(refused("this job belongs to another host"));
            continue;
        }
        if recorded.contains(id) {
            out.push(Applied {
                ack: Ack::duplicate(),
                event: None,
            });
            continue;
        }
        phases.push(id);
        if let Some(p) = msg.summary_parts.take() {
            reassemble(tx, id, p, &mut msg).await?;
        }
        lock(&cp.accept_marks).remove(id);
        if !results::FINISHABLE.contains(&job.status.as_str()) {
            // its result is in (the first one wins)
            out.push(Applied {
                ack: Ack::duplicate(),
                event: None,
            });
            continue;
        }
        let status = JobStatus::from_outcome(msg.outcome);
        let error_kind = msg
            .error_kind
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_owned));
        let tail = (!msg.stderr_tail.is_empty()).then(|| msg.stderr_tail.join("\n"));
        let snapshot_id = msg
            .summary
            .as_ref()
            .and_then(|v| v.get("snapshot_id"))
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        finishes.push((
            id,
            status,
            Finish {
                exit_code: msg.exit_code.map(i64::from),
                error_kind,
                error: msg.error.clone(),
                summary_json: msg.summary.as_ref().map(ToString::to_string),
                stderr_tail: tail,
                restic_version: msg.restic_version.clone(),
                started_at: msg.started_ms,
                finished_at: msg.finished_ms,
            },
        ));
        // the host's summary, once per host and batch
        settle.finished(Finished {
            id: id.to_owned(),
            host_id: job.host_id.clone(),
            kind: job.kind.clone(),
            status,
            finished_at: msg.finished_ms,
            snapshot_id,
        });
        if crate::health::record(cp, &mut *tx, job, &msg, settle).await?
            && let Some(repo) = &job.repo_id
        {
            settle.refresh(repo, &job.exec_host_id);
        }
        out.push(Applied {
            ack: Ack::ok(),
            event: Some((
                Event::JobFinished,
                job.host_id.clone(),
                id.to_owned(),
                job.repo_id.clone(),
            )),
        });
    }
    results::record_phases(&mut *tx, &phases, Phase::Done, cp.now()).await?;
    let rows: Vec<results::FinishRow<'_>> = finishes
        .iter()
        .map(|(id, status, finish)| results::FinishRow {
            id,
            status: *status,
            finish,
        })
        .collect();
    results::finish_rows(&mut *tx, &rows).await?;
    settle.write_snapshots(&mut *tx).await?;
    Ok(out)
}

async fn on_log(cp: &Cp, tx: &mut rm_store::Conn, m: &Message) -> Result<()> {
    let Some(subj) = AgentSubject::parse(m.subject.as_str()) else {
        return Ok(());
    };
    let AgentTopic::Job(job_id, _) = &subj.topic else {
        return Ok(());
    };
    let batch: LogBatch = decode("log", &m.payload)?;
    let Some(job) = jobs::find(&mut *tx, job_id.as_str()).await? else {
        return Ok(());
    };
    if job.exec_host_id != subj.host.as_str() {
        tracing::warn!(job = %job_id, host = %subj.host, "log for another host's job ignored");
        return Ok(());
    }
    let lines: Vec<(i64, &str, &str)> = batch
        .lines
        .iter()
        .map(|l| {
            let stream = match l.stream {
                rm_bus::msg::Stream::Stdout => "stdout",
                rm_bus::msg::Stream::Stderr => "stderr",
                rm_bus::msg::Stream::Agent => "agent",
                rm_bus::msg::Stream::Unknown => "unknown",
            };
            (l.ts_ms, stream, l.text.as_str())
        })
        .collect();
    let first = i64::try_from(batch.seq).unwrap_or(0);
    jobs::append_logs(&mut *tx, job_id.as_str(), first, &lines, cp.t.log_cap).await?;
    Ok(())
}
