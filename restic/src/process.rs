//! Spawning restic: environment (secrets in env and a private password
//! file, never on the command line), its own process group, concurrent
//! bounded line reading of stdout and stderr, timeout and cancellation
//! (SIGKILL to the whole process group, then reap).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use rm_bus::seal::RepoSecrets;

/// Longest line kept from restic's output; longer lines are cut (and so
/// fail to parse as JSON, and are skipped). `snapshots --json` prints the
/// whole array on one line, hence the generous default.
pub(crate) const MAX_LINE: usize = 32 * 1024 * 1024;

/// Environment variables inherited from our own environment that would
/// override or conflict with the repository and password we set.
const SCRUBBED_ENV: [&str; 5] = [
    "RESTIC_PASSWORD",
    "RESTIC_PASSWORD_COMMAND",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_REPOSITORY",
    "RESTIC_REPOSITORY_FILE",
];

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipe {
    Stdout,
    Stderr,
}

/// One line of output (without its terminator). `truncated` when the line
/// was longer than the reader's cap.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub pipe: Pipe,
    pub text: String,
    pub truncated: bool,
}

/// How a restic process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Died from a signal we did not send.
    Signal(i32),
    /// We killed it: the deadline passed.
    TimedOut,
    /// We killed it: the cancellation token fired.
    Cancelled,
    /// We stopped it because the handler asked to ([`Handler::abort`]);
    /// the code it exited with, if any.
    Aborted(Option<i32>),
    /// It could not be started.
    SpawnFailed(String),
}

/// Receives what a running restic prints, and a periodic tick.
pub(crate) trait Handler {
    fn line(&mut self, line: Line);
    /// Called about every `tick` passed to [`run`] while restic runs.
    fn tick(&mut self) {}
    /// Checked after every line: `true` stops restic (SIGINT so it can
    /// remove its lock, SIGKILL after a grace period). Used when restic
    /// would only retry something that cannot succeed.
    fn abort(&self) -> bool {
        false
    }
}

/// The 0600 password file for one run; deleted when dropped.
pub(crate) struct PasswordFile {
    path: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl PasswordFile {
    /// Writes `password` to a new, uniquely named 0600 file in `dir`.
    pub(crate) fn create(dir: &Path, password: &str) -> std::io::Result<PasswordFile> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            ".restic-pw-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = PasswordFile { path };
        f.write_all(password.as_bytes())?;
        f.sync_all()?;
        Ok(file)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove restic password file");
        }
    }
}

/// Everything needed to run restic against one repository.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub secrets: &'a RepoSecrets,
    pub cache_dir: Option<&'a Path>,
    pub password_file: &'a Path,
}

/// One restic invocation.
pub(crate) struct Spec<'a> {
    pub bin: &'a Path,
    /// Repository environment; `None` for `restic version`.
    pub env: Option<Env<'a>>,
    pub args: Vec<String>,
    pub deadline: Instant,
    pub cancel: Option<&'a CancellationToken>,
    pub tick: Duration,
    /// Per-line cap.
    pub max_line: usize,
    /// Start restic below this process's priorities ([`crate::Restic::yielding`]).
    pub yields: bool,
}

fn build_command(spec: &Spec<'_>) -> Command {
    let mut cmd = Command::new(spec.bin);
    for k in SCRUBBED_ENV {
        cmd.env_remove(k);
    }
    // restic's own progress rate (0.14 defaults to 60 lines a second).
    cmd.env("RESTIC_PROGRESS_FPS", "4");
    let mut args: Vec<OsString> = Vec::new();
    if let Some(env) = spec.env {
        for (k, v) in &env.secrets.env {
            if SCRUBBED_ENV.contains(&k.as_str()) {
                tracing::warn!(key = %k, "ignoring repository env entry that would override the runner's");
                continue;
            }
            cmd.env(k, v);
        }
        cmd.env("RESTIC_REPOSITORY", &env.secrets.repository);
        cmd.env("RESTIC_PASSWORD_FILE", env.password_file);
        if let Some(cache) = env.cache_dir {
            let mut a = OsString::from("--cache-dir=");
            a.push(cache.as_os_str());
            args.push(a);
        }
    }
    args.extend(spec.args.iter().map(OsString::from));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    os::own_group(&mut cmd);
    if spec.yields {
        os::below_us(&mut cmd);
    }
    cmd
}

/// What differs between Unix and Windows: restic in its own process group
/// (so a cancel or timeout reaches its whole tree), dying with the agent,
/// and how an exit status reads. The Windows half cannot be compiled on
/// this project's build machines; it is kept to these few lines.
#[cfg(unix)]
mod os {
    pub(super) fn own_group(cmd: &mut tokio::process::Command) {
        cmd.process_group(0);
        die_with_parent(cmd);
    }

    /// SIGKILL to the process group `pgid` (the child is its leader and
    /// has not been reaped yet, so the group id cannot have been reused).
    pub(super) fn kill_tree(pgid: Option<u32>) {
        signal_group(pgid, libc::SIGKILL);
    }

    /// SIGINT to the group: restic removes its lock and exits.
    pub(super) fn interrupt_tree(pgid: Option<u32>) {
        signal_group(pgid, libc::SIGINT);
    }

    pub(super) fn exit_of(s: std::process::ExitStatus) -> super::Exit {
        use std::os::unix::process::ExitStatusExt as _;
        match (s.code(), s.signal()) {
            (Some(c), _) => super::Exit::Code(c),
            (None, Some(sig)) => super::Exit::Signal(sig),
            (None, None) => super::Exit::Signal(0),
        }
    }

    fn signal_group(pgid: Option<u32>, sig: libc::c_int) {
        let Some(pgid) = pgid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            return;
        };
        if pgid <= 1 {
            return;
        }
        // SAFETY: killpg has no memory-safety preconditions.
        let rc = unsafe { libc::killpg(pgid, sig) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(pgid, error = %e, "killpg");
        }
    }

    /// restic runs in its own process group, which also means it would
    /// outlive an agent killed with SIGKILL and keep writing to the
    /// repository behind the agent's back. On Linux the kernel sends it
    /// SIGKILL when the agent's thread that spawned it dies (a tokio worker
    /// thread, which lives as long as the runtime; nothing in the agent uses
    /// `block_in_place`, which could retire one early).
    #[cfg(target_os = "linux")]
    fn die_with_parent(cmd: &mut tokio::process::Command) {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and
        // calls only async-signal-safe functions (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // the agent died between fork and prctl
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the agent exited"));
                }
                Ok(())
            });
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn die_with_parent(_cmd: &mut tokio::process::Command) {}

    /// Ten nice steps more than the spawning thread (a process's nice
    /// weighs it against the others of its scheduling group, which the
    /// child shares with us: same session, same cgroup) and, on Linux,
    /// the lowest best-effort I/O priority (not the idle class, which
    /// starves restic while anything else keeps the disk busy). Best
    /// effort: a priority that cannot be set does not stop a backup.
    pub(super) fn below_us(cmd: &mut tokio::process::Command) {
        // SAFETY: the closure runs in the forked child before exec and
        // calls only async-signal-safe system calls (nice, ioprio_set).
        unsafe {
            cmd.pre_exec(|| {
                let _ = libc::nice(YIELD_NICE);
                lowest_io();
                Ok(())
            });
        }
    }

    /// How many nice steps [`below_us`] adds.
    const YIELD_NICE: libc::c_int = 10;

    #[cfg(target_os = "linux")]
    fn lowest_io() {
        // ioprio_set(IOPRIO_WHO_PROCESS, this process,
        //            IOPRIO_CLASS_BE << 13 | 7): best effort, level 7
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_BE_LOWEST: libc::c_long = (2 << 13) | 7;
        // SAFETY: a plain system call with integer arguments.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0,
                IOPRIO_BE_LOWEST,
            )
        };
    }

    #[cfg(not(target_os = "linux"))]
    fn lowest_io() {}
}

#[cfg(windows)]
mod os {
    pub(super) fn own_group(_cmd: &mut tokio::process::Command) {}

    /// Not done on Windows (a priority class would go here).
    pub(super) fn below_us(_cmd: &mut tokio::process::Command) {}

    /// `taskkill /T /F`: the process and everything it started.
    pub(super) fn kill_tree(pid: Option<u32>) {
        if let Some(pid) = pid {
            let _ = std::process::Command::new("taskkill")
                .args(["/T", "/F", "/PID", &pid.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    pub(super) fn interrupt_tree(pid: Option<u32>) {
        kill_tree(pid);
    }

    pub(super) fn exit_of(s: std::process::ExitStatus) -> super::Exit {
        super::Exit::Code(s.code().unwrap_or(-1))
    }
}

/// Reads `r` line by line (`\n` or `\r` terminated, empty lines dropped),
/// keeping at most `max` bytes of each line.
async fn read_lines<R: AsyncRead + Unpin>(r: R, pipe: Pipe, max: usize, tx: mpsc::Sender<Line>) {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    loop {
        let chunk = match r.fill_buf().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, ?pipe, "reading restic output");
                break;
            }
        };
        if chunk.is_empty() {
            break;
        }
        let (end, found) = match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if end > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..end.min(room)]);
        r.consume(if found { end + 1 } else { end });
        if found && (!buf.is_empty() || truncated) {
            let line = Line {
                pipe,
                text: String::from_utf8_lossy(&buf).into_owned(),
                truncated,
            };
            buf.clear();
            truncated = false;
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }
    if !buf.is_empty() || truncated {
        let line = Line {
            pipe,
            text: String::from_utf8_lossy(&buf).into_owned(),
            truncated,
        };
        let _ = tx.send(line).await;
    }
}

/// How long we wait for the output pipes to reach EOF after restic exited
/// (a grandchild outside the group could hold them open).
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// How long restic may take to exit after SIGINT when a handler aborts it.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Runs restic to completion, feeding its output to `handler`.
pub(crate) async fn run(spec: Spec<'_>, handler: &mut (dyn Handler + Send)) -> Exit {
    let mut cmd = build_command(&spec);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Exit::SpawnFailed(format!("could not start {}: {e}", spec.bin.display()));
        }
    };
    let pgid = child.id();
    tracing::debug!(pid = ?pgid, command = spec.args.first().map(String::as_str).unwrap_or(""), "restic started");

    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            out,
            Pipe::Stdout,
            spec.max_line,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            err,
            Pipe::Stderr,
            spec.max_line,
            tx.clone(),
        )));
    }
    drop(tx);

    let never = CancellationToken::new();
    let cancel = spec.cancel.unwrap_or(&never);
    let deadline = tokio::time::sleep_until(spec.deadline.into());
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(spec.tick.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lines_open = true;

    let exit = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                os::kill_tree(pgid);
                let _ = child.wait().await;
                break Exit::Cancelled;
            }
            _ = &mut deadline => {
                os::kill_tree(pgid);
                let _ = child.wait().await;
                break Exit::TimedOut;
            }
            _ = tick.tick() => handler.tick(),
            line = rx.recv(), if lines_open => match line {
                Some(l) => {
                    handler.line(l);
                    if handler.abort() {
                        os::interrupt_tree(pgid);
                        let grace = ABORT_GRACE.min(spec.deadline.saturating_duration_since(Instant::now()));
                        let code = match tokio::time::timeout(grace, child.wait()).await {
                            Ok(Ok(s)) => s.code(),
                            _ => {
                                os::kill_tree(pgid);
                                let _ = child.wait().await;
                                None
                            }
                        };
                        break Exit::Aborted(code);
                    }
                }
                None => lines_open = false,
            },
            status = child.wait() => {
                break match status {
                    Ok(s) => os::exit_of(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for restic");
                        os::kill_tree(pgid);
                        Exit::Signal(0)
                    }
                };
            }
        }
    };

    // Drain what is left in the pipes (bounded in time).
    if lines_open {
        let grace = tokio::time::sleep(DRAIN_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                line = rx.recv() => match line {
                    Some(l) => handler.line(l),
                    None => break,
                },
            }
        }
    }
    for r in readers {
        r.abort();
    }
    tracing::debug!(pid = ?pgid, ?exit, "restic finished");
    exit
}
