//! One session against a repository: the password file for its duration,
//! and short "query" runs of restic whose whole output is collected
//! (bounded) and whose failure becomes a [`Failure`].

use std::time::{Duration, Instant};

use rm_bus::msg::{ErrorKind, JobKind};
use tokio_util::sync::CancellationToken;

use crate::classify::{self, Finished};
use crate::parse;
use crate::process::{self, Env, Exit, Handler, Line, PasswordFile, Pipe, Spec};
use crate::{Failure, Repo, Restic};

/// Stderr lines kept for messages and `stderr_tail`.
pub(crate) const STDERR_TAIL: usize = 40;
/// Longest log line forwarded.
pub(crate) const MAX_LOG_LINE: usize = 4096;
/// Total stdout bytes a query keeps.
const MAX_QUERY_STDOUT: usize = 64 * 1024 * 1024;

/// A repository plus the password file for this session.
pub(crate) struct Session<'a> {
    pub restic: &'a Restic,
    repo: &'a Repo<'a>,
    password: PasswordFile,
}

impl<'a> Session<'a> {
    pub(crate) fn open(restic: &'a Restic, repo: &'a Repo<'a>) -> Result<Self, Failure> {
        let password =
            PasswordFile::create(repo.scratch_dir, &repo.secrets.password).map_err(|e| {
                Failure {
                    kind: ErrorKind::Fatal,
                    message: format!(
                        "Could not write the restic password file in {}: {e}.",
                        repo.scratch_dir.display()
                    ),
                    exit_code: None,
                }
            })?;
        Ok(Session {
            restic,
            repo,
            password,
        })
    }

    pub(crate) fn spec<'s>(
        &'s self,
        args: Vec<String>,
        deadline: Instant,
        cancel: Option<&'s CancellationToken>,
        tick: Duration,
    ) -> Spec<'s> {
        Spec {
            bin: self.restic.bin(),
            env: Some(Env {
                secrets: self.repo.secrets,
                cache_dir: self.repo.cache_dir,
                password_file: self.password.path(),
            }),
            args,
            deadline,
            cancel,
            tick,
            max_line: process::MAX_LINE,
            yields: self.restic.yields(),
        }
    }

    /// Runs a short command and returns its stdout lines; a non-zero exit,
    /// a timeout or a cancellation is a [`Failure`].
    pub(crate) async fn query(
        &self,
        job: JobKind,
        args: Vec<String>,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
    ) -> Result<Collected, Failure> {
        let what = args.first().cloned().unwrap_or_default();
        let spec = self.spec(
            args,
            Instant::now() + timeout,
            cancel,
            Duration::from_secs(3600),
        );
        let mut c = Collected::default();
        let exit = process::run(spec, &mut c).await;
        c.into_result(job, &what, exit, timeout)
    }
}

/// Output of a query run.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub stdout: Vec<String>,
    stdout_bytes: usize,
    pub stderr: Vec<String>,
    pub exit_error: Option<String>,
}

impl Collected {
    /// Stdout joined with newlines (for pretty-printed JSON).
    pub(crate) fn stdout_text(&self) -> String {
        self.stdout.join("\n")
    }

    pub(crate) fn into_result(
        self,
        job: JobKind,
        what: &str,
        exit: Exit,
        timeout: Duration,
    ) -> Result<Collected, Failure> {
        let code = match exit {
            Exit::Code(c) => c,
            Exit::Aborted(_) => 1,
            Exit::Signal(sig) => {
                return Err(Failure {
                    kind: ErrorKind::Fatal,
                    message: format!("restic {what} was killed by signal {sig}."),
                    exit_code: None,
                });
            }
            Exit::TimedOut => {
                return Err(Failure {
                    kind: ErrorKind::Timeout,
                    message: format!(
                        "restic {what} did not finish within {} s and was killed.",
                        timeout.as_secs()
                    ),
                    exit_code: None,
                });
            }
            Exit::Cancelled => {
                return Err(Failure {
                    kind: ErrorKind::Cancelled,
                    message: format!("restic {what} was cancelled."),
                    exit_code: None,
                });
            }
            Exit::SpawnFailed(m) => {
                return Err(Failure {
                    kind: ErrorKind::Fatal,
                    message: format!("{m}."),
                    exit_code: None,
                });
            }
        };
        let v = classify::classify(&Finished {
            job,
            code,
            stderr: &self.stderr,
            exit_error: self.exit_error.as_deref(),
            cancelled: false,
        });
        match (v.kind, code) {
            (None, 0) => Ok(self),
            (kind, _) => Err(Failure {
                kind: kind.unwrap_or(ErrorKind::Fatal),
                message: v
                    .message
                    .unwrap_or_else(|| format!("restic {what} failed (exit code {code}).")),
                exit_code: Some(code),
            }),
        }
    }
}

impl Handler for Collected {
    fn line(&mut self, line: Line) {
        match line.pipe {
            Pipe::Stdout => {
                if line.truncated {
                    tracing::warn!(
                        len = line.text.len(),
                        "skipping over-long restic output line"
                    );
                    return;
                }
                if self.stdout_bytes + line.text.len() > MAX_QUERY_STDOUT {
                    return;
                }
                self.stdout_bytes += line.text.len();
                self.stdout.push(line.text);
            }
            Pipe::Stderr => {
                let text = match parse::json_line(&line.text) {
                    Some(v) => {
                        if let Some((_, m)) = parse::exit_error(&v) {
                            self.exit_error = Some(m);
                        }
                        match parse::stderr_json_text(&v) {
                            Some(t) => t,
                            None => return,
                        }
                    }
                    None => parse::clean(&line.text),
                };
                push_tail(&mut self.stderr, parse::truncate(text, MAX_LOG_LINE));
            }
        }
    }
}

/// Appends to a bounded tail.
pub(crate) fn push_tail(tail: &mut Vec<String>, s: String) {
    if tail.len() >= STDERR_TAIL {
        tail.remove(0);
    }
    tail.push(s);
}
