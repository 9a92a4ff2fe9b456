//! restic binary detection: `restic version` (30 s timeout) and the
//! version it reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rm_bus::msg::{ErrorKind, JobKind};

use crate::Failure;
use crate::process::{self, Spec};
use crate::session::Collected;

/// A restic version such as 0.14.0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A detected restic binary.
#[derive(Debug, Clone)]
pub struct Restic {
    bin: PathBuf,
    version: Version,
    /// Whether its runs yield to the process that starts them
    /// ([`Restic::yielding`]).
    yields: bool,
}

const DETECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Restic {
    /// Runs `restic version` (timeout 30 s) and parses e.g. "restic 0.14.0
    /// compiled with go1.19.8 on linux/amd64"; an unparseable version is an
    /// error naming the output.
    pub async fn detect(bin: impl Into<PathBuf>) -> Result<Restic, Failure> {
        let bin = bin.into();
        let spec = Spec {
            bin: &bin,
            env: None,
            args: vec!["version".into()],
            deadline: Instant::now() + DETECT_TIMEOUT,
            cancel: None,
            tick: Duration::from_secs(3600),
            max_line: 64 * 1024,
            yields: false,
        };
        let mut c = Collected::default();
        let exit = process::run(spec, &mut c).await;
        let c = c.into_result(JobKind::Unknown, "version", exit, DETECT_TIMEOUT)?;
        let out = c.stdout_text();
        match crate::parse::version(&out) {
            Some(version) => {
                tracing::debug!(bin = %bin.display(), %version, "detected restic");
                Ok(Restic {
                    bin,
                    version,
                    yields: false,
                })
            }
            None => Err(Failure {
                kind: ErrorKind::Fatal,
                message: format!(
                    "Could not parse the restic version from {:?}.",
                    crate::parse::truncate(out.trim().to_owned(), 200)
                ),
                exit_code: Some(0),
            }),
        }
    }

    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The version as `0.14.0`.
    pub fn version_string(&self) -> String {
        self.version.to_string()
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// This restic, its runs started ten nice steps below the process that
    /// runs them and at the lowest best-effort I/O priority (Linux;
    /// elsewhere unchanged):
    /// for a runner inside a process whose own work must come first —
    /// `serve --local-agent`, where restic would otherwise weigh the same
    /// as the control plane it shares a scheduling group with. A
    /// standalone agent gets the same from its systemd unit instead
    /// (`Nice=`, `IOSchedulingClass=`, `IOSchedulingPriority=`,
    /// `CPUWeight=`).
    #[must_use]
    pub fn yielding(mut self) -> Self {
        self.yields = true;
        self
    }

    /// Whether [`Restic::yielding`] was asked for.
    pub fn yields(&self) -> bool {
        self.yields
    }
}
