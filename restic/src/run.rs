//! Running one job: refusals before spawning (unknown kind, invalid
//! parameters, forget/prune with an append-only credential), stale-lock
//! removal when the caller asks for it, the restic run with throttled progress and log events, and
//! the result (outcome, classification, per-kind summary).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rm_bus::msg::{
    ErrorKind, JobKind, JobOutcome, JobParams, LogLine, Progress, RestoreTarget, Stream,
};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::classify::{self, Finished};
use crate::command;
use crate::locks;
use crate::parse;
use crate::process::{self, Exit, Handler, Line, Pipe};
use crate::progress::{self, TargetMeter, Throttle};
use crate::session::{self, MAX_LOG_LINE, Session};
use crate::{Repo, Restic, RunEvent, RunOptions, RunResult};

fn failed(kind: ErrorKind, message: impl Into<String>) -> RunResult {
    RunResult {
        outcome: if kind == ErrorKind::Cancelled {
            JobOutcome::Cancelled
        } else {
            JobOutcome::Failed
        },
        exit_code: None,
        error_kind: Some(kind),
        error: Some(message.into()),
        summary: None,
        stderr_tail: Vec::new(),
    }
}

/// See [`crate::run_job`].
pub(crate) async fn run_job(
    restic: &Restic,
    repo: &Repo<'_>,
    params: &JobParams,
    append_only: bool,
    opts: &RunOptions,
    events: UnboundedSender<RunEvent>,
    cancel: CancellationToken,
) -> RunResult {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let kind = params.kind();
    if kind == JobKind::Unknown {
        return failed(
            ErrorKind::InvalidRequest,
            "This agent does not know the requested job kind.",
        );
    }
    if append_only && matches!(kind, JobKind::Forget | JobKind::Prune) {
        return failed(
            ErrorKind::AppendOnly,
            "This host's credential for the repository is append-only: forget and prune must run on the repository's maintenance host.",
        );
    }
    let args = match command::job_args(params) {
        Ok(a) => a,
        Err(command::Invalid(m)) => {
            return failed(
                ErrorKind::InvalidRequest,
                format!("Invalid job parameters: {m}."),
            );
        }
    };
    if cancel.is_cancelled() {
        return failed(
            ErrorKind::Cancelled,
            "The job was cancelled before restic started.",
        );
    }
    let session = match Session::open(restic, repo) {
        Ok(s) => s,
        Err(f) => return failed(f.kind, f.message),
    };
    tracing::info!(kind = ?kind, restic = %restic.version_string(), "starting restic job");

    if kind == JobKind::Locks {
        return locks::report(&session, &opts.lock_hostname, deadline, &cancel).await;
    }
    if kind != JobKind::Unlock && opts.remove_stale_locks {
        locks::remove_stale(&session, &opts.lock_hostname, deadline, &cancel).await;
    }
    if cancel.is_cancelled() {
        return failed(
            ErrorKind::Cancelled,
            "The job was cancelled before restic started.",
        );
    }

    let meter = match params {
        JobParams::Restore {
            target: RestoreTarget::Path { path },
            ..
        } => Some(
            TargetMeter::start(
                PathBuf::from(path),
                opts.progress_interval.max(Duration::from_secs(2)),
            )
            .await,
        ),
        _ => None,
    };
    let tick =
        (opts.progress_interval / 5).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut h = JobHandler::new(kind, started, opts.progress_interval, events, meter);
    let spec = session.spec(args, deadline, Some(&cancel), tick);
    let exit = process::run(spec, &mut h).await;
    let result = h.finish(exit, opts.timeout).await;
    tracing::info!(
        kind = ?kind,
        outcome = ?result.outcome,
        exit_code = ?result.exit_code,
        error_kind = ?result.error_kind,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "restic job finished"
    );
    result
}

/// Changed paths a `diff` result keeps (the rest are counted): enough
/// for pages of a job page, small enough for the bus (a large result
/// travels in parts).
const MAX_CHANGES: usize = 5_000;

struct JobHandler {
    kind: JobKind,
    started: Instant,
    throttle: Throttle,
    events: UnboundedSender<RunEvent>,
    /// Latest status line not yet sent.
    pending: Option<Progress>,
    /// restic printed JSON status lines (so we do not synthesize).
    json_progress: bool,
    meter: Option<TargetMeter>,
    stdout_tail: Vec<String>,
    stderr_tail: Vec<String>,
    exit_error: Option<String>,
    summary: Option<Value>,
    statistics: Option<Value>,
    /// `diff`'s changed paths (`{path, modifier}`), at most [`MAX_CHANGES`].
    changes: Vec<Value>,
    /// Every change `diff` printed, kept or not.
    changes_total: u64,
    /// A JSON document without message_type (snapshots, forget, stats).
    doc: Option<Value>,
    forbidden: bool,
}

impl JobHandler {
    fn new(
        kind: JobKind,
        started: Instant,
        interval: Duration,
        events: UnboundedSender<RunEvent>,
        meter: Option<TargetMeter>,
    ) -> Self {
        JobHandler {
            kind,
            started,
            throttle: Throttle::new(interval),
            events,
            pending: None,
            json_progress: false,
            meter,
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
            exit_error: None,
            summary: None,
            statistics: None,
            changes: Vec::new(),
            changes_total: 0,
            doc: None,
            forbidden: false,
        }
    }

    fn log(&self, stream: Stream, text: &str) {
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = LogLine {
                ts_ms: progress::now_ms(),
                stream,
                text: parse::truncate(l.to_owned(), MAX_LOG_LINE),
            };
            let _ = self.events.send(RunEvent::Log(line));
        }
    }

    /// Sends `p` as admitted by the throttle at `at`: its elapsed time is
    /// that instant's, so two events' `elapsed_ms` are never closer than
    /// the interval, however late the sending runs.
    fn send_progress(&mut self, mut p: Progress, at: Instant) {
        p.v = 1;
        p.ts_ms = progress::now_ms();
        p.elapsed_ms =
            u64::try_from(at.duration_since(self.started).as_millis()).unwrap_or(u64::MAX);
        let _ = self.events.send(RunEvent::Progress(p));
    }

    fn flush_pending(&mut self) {
        let now = Instant::now();
        if self.pending.is_some()
            && self.throttle.admit(now)
            && let Some(p) = self.pending.take()
        {
            self.send_progress(p, now);
        }
    }

    fn stdout_line(&mut self, text: String) {
        match parse::json_line(&text) {
            Some(v) => match parse::message_type(&v) {
                Some("status") => {
                    if let Some(p) = parse::status_progress(&v) {
                        self.json_progress = true;
                        self.pending = Some(p);
                        self.flush_pending();
                    }
                }
                Some("summary") => self.summary = Some(v),
                Some("statistics") => self.statistics = Some(v),
                Some("change") => {
                    self.changes_total += 1;
                    if self.changes.len() < MAX_CHANGES
                        && let (Some(path), Some(modifier)) = (
                            v.get("path").and_then(Value::as_str),
                            v.get("modifier").and_then(Value::as_str),
                        )
                    {
                        self.changes.push(json!({
                            "path": parse::truncate(path.to_owned(), MAX_LOG_LINE),
                            "modifier": modifier,
                        }));
                    }
                }
                Some(_) => {}
                None => self.doc = Some(v),
            },
            None => {
                let text = parse::clean(&text);
                self.log(Stream::Stdout, &text);
                session::push_tail(&mut self.stdout_tail, parse::truncate(text, MAX_LOG_LINE));
            }
        }
    }

    fn stderr_line(&mut self, text: String) {
        let text = match parse::json_line(&text) {
            Some(v) => {
                if let Some((_, m)) = parse::exit_error(&v) {
                    self.exit_error = Some(m);
                }
                match parse::stderr_json_text(&v) {
                    Some(t) => t,
                    None => return,
                }
            }
            None => parse::clean(&text),
        };
        if matches!(self.kind, JobKind::Forget | JobKind::Prune) && classify::is_forbidden(&text) {
            self.forbidden = true;
        }
        self.log(Stream::Stderr, &text);
        session::push_tail(&mut self.stderr_tail, parse::truncate(text, MAX_LOG_LINE));
    }

    async fn finish(mut self, exit: Exit, timeout: Duration) -> RunResult {
        let code = match exit {
            Exit::Code(c) => Some(c),
            Exit::Aborted(c) => Some(c.unwrap_or(1)),
            _ => None,
        };
        let mut result = RunResult {
            outcome: JobOutcome::Failed,
            exit_code: code,
            error_kind: None,
            error: None,
            summary: None,
            stderr_tail: std::mem::take(&mut self.stderr_tail),
        };
        match exit {
            Exit::Code(_) | Exit::Aborted(_) => {
                // An aborted run is a failure whatever restic exited with
                // (SIGINT makes 0.19 exit 130).
                let c = if matches!(exit, Exit::Aborted(_)) {
                    1
                } else {
                    code.unwrap_or(1)
                };
                let v = classify::classify(&Finished {
                    job: self.kind,
                    code: c,
                    stderr: &result.stderr_tail,
                    exit_error: self.exit_error.as_deref(),
                    cancelled: false,
                });
                result.outcome = v.outcome;
                result.error_kind = v.kind;
                result.error = v.message;
                result.summary = self.summary_for(c).await;
            }
            Exit::Cancelled => {
                result.outcome = JobOutcome::Cancelled;
                result.error_kind = Some(ErrorKind::Cancelled);
                result.error = Some("The job was cancelled; restic was stopped.".into());
            }
            Exit::TimedOut => {
                result.error_kind = Some(ErrorKind::Timeout);
                result.error = Some(format!(
                    "restic did not finish within the job's timeout of {} s and was killed.",
                    timeout.as_secs()
                ));
            }
            Exit::Signal(sig) => {
                result.error_kind = Some(ErrorKind::Fatal);
                result.error = Some(format!("restic was killed by signal {sig}."));
            }
            Exit::SpawnFailed(m) => {
                result.error_kind = Some(ErrorKind::Fatal);
                result.error = Some(format!("{m}."));
            }
        }
        result
    }

    async fn summary_for(&mut self, code: i32) -> Option<Value> {
        let output = || -> Option<Value> {
            if self.stdout_tail.is_empty() {
                None
            } else {
                Some(json!({ "output": self.stdout_tail }))
            }
        };
        match self.kind {
            JobKind::Backup => self.summary.take(),
            JobKind::ForgetPreview => {
                let doc = self.doc.take().filter(Value::is_array).or_else(|| self.joined_doc(Value::is_array))?;
                let plan = crate::plan::retention_plan(&doc)?;
                serde_json::to_value(plan).ok()
            }
            JobKind::Snapshots | JobKind::Forget => {
                self.doc.take().filter(Value::is_array).or_else(|| self.joined_doc(Value::is_array))
            }
            JobKind::Stats => self.doc.take().filter(Value::is_object).or_else(|| self.joined_doc(Value::is_object)),
            JobKind::Diff => self.statistics.take().map(|mut s| {
                if let Some(o) = s.as_object_mut() {
                    o.insert("changes".into(), Value::Array(std::mem::take(&mut self.changes)));
                    o.insert("changes_total".into(), json!(self.changes_total));
                }
                s
            }),
            JobKind::Restore => match self.summary.take() {
                Some(s) => Some(s),
                None => match &self.meter {
                    Some(m) => {
                        let (bytes, files) = m.finish().await;
                        Some(json!({ "bytes_restored": bytes, "files_restored": files }))
                    }
                    None => None,
                },
            },
            JobKind::Check => self.summary.take().or_else(|| {
                Some(json!({ "num_errors": if code == 0 { 0 } else { 1 }, "output": self.stdout_tail }))
            }),
            JobKind::Prune | JobKind::Unlock => output(),
            // answered by `locks::report`, never through this handler
            JobKind::Locks | JobKind::Unknown => None,
        }
    }

    /// Pretty-printed JSON spread over several lines (not what current
    /// versions print, but cheap to accept).
    fn joined_doc(&self, want: fn(&Value) -> bool) -> Option<Value> {
        let text = self.stdout_tail.join("\n");
        serde_json::from_str::<Value>(text.trim()).ok().filter(want)
    }
}

impl Handler for JobHandler {
    fn line(&mut self, line: Line) {
        if line.truncated {
            tracing::warn!(len = line.text.len(), pipe = ?line.pipe, "skipping over-long restic output line");
            return;
        }
        match line.pipe {
            Pipe::Stdout => self.stdout_line(line.text),
            Pipe::Stderr => self.stderr_line(line.text),
        }
    }

    fn tick(&mut self) {
        if let Some(m) = self.meter.as_mut() {
            m.poll();
        }
        if self.pending.is_some() {
            self.flush_pending();
            return;
        }
        if self.json_progress {
            return;
        }
        let now = Instant::now();
        if self.throttle.admit(now) {
            let mut p = progress::elapsed_only(now.duration_since(self.started));
            if let Some(m) = &self.meter {
                let (bytes, files) = m.reading();
                p.bytes_done = Some(bytes);
                p.files_done = Some(files);
            }
            self.send_progress(p, now);
        }
    }

    fn abort(&self) -> bool {
        self.forbidden
    }
}

/// Replays a recorded transcript (see `fixtures/restic/README.md`)
/// through the job handler, as if restic had printed it.
#[cfg(test)]
pub(crate) async fn replay(kind: JobKind, transcript: &str) -> (RunResult, Vec<RunEvent>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut h = JobHandler::new(kind, Instant::now(), Duration::from_millis(500), tx, None);
    let mut code = 0;
    for l in transcript.lines() {
        if let Some(c) = l.strip_prefix("exit: ") {
            code = c.trim().parse().unwrap_or(-1);
        } else if let Some(t) = l.strip_prefix("out: ") {
            h.line(Line {
                pipe: Pipe::Stdout,
                text: t.to_owned(),
                truncated: false,
            });
        } else if let Some(t) = l.strip_prefix("err: ") {
            h.line(Line {
                pipe: Pipe::Stderr,
                text: t.to_owned(),
                truncated: false,
            });
        }
    }
    let res = h.finish(Exit::Code(code), Duration::from_secs(60)).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (res, events)
}
