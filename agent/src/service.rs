//! Installing the agent as a service: a systemd unit on Linux; on Windows a
//! service registered through the Service Control Manager (`sc.exe`), kept
//! small and behind `cfg(windows)` because this project's build machines
//! cannot compile Windows code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The systemd unit's name.
pub const UNIT_NAME: &str = "restic-manager-agent.service";
/// Where units are installed by default.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// What the service runs.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The agent binary.
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    pub restic_bin: PathBuf,
}

/// The systemd unit text. restic needs to read everything it backs up, so
/// the agent runs as root; the unit still confines what it may write.
pub fn systemd_unit(spec: &ServiceSpec) -> String {
    format!(
        "[Unit]\n\
         Description=restic-manager agent (runs restic backups for this host)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} --state-dir {state} --restic {restic} run\n\
         Restart=always\n\
         RestartSec=5\n\
         # restic children get the stop signal with the agent; give running\n\
         # jobs time to be cancelled and recorded\n\
         KillMode=mixed\n\
         TimeoutStopSec=30\n\
         # restic yields the cores to this host's own services: Nice= alone\n\
         # only weighs it inside its own scheduling group (autogroups); the\n\
         # lowest best-effort I/O priority, as the idle class can starve it\n\
         CPUWeight=20\n\
         Nice=10\n\
         IOSchedulingClass=best-effort\n\
         IOSchedulingPriority=7\n\
         StateDirectory=restic-manager-agent\n\
         StateDirectoryMode=0700\n\
         NoNewPrivileges=yes\n\
         PrivateTmp=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe = spec.exe.display(),
        state = spec.state_dir.display(),
        restic = spec.restic_bin.display(),
    )
}

/// Writes the unit into `unit_dir`; with `systemctl`, reloads systemd and
/// enables and starts the service.
pub fn install_systemd(spec: &ServiceSpec, unit_dir: &Path, systemctl: bool) -> Result<PathBuf> {
    if !spec.state_dir.join("identity.json").exists() {
        bail!(
            "{} holds no enrollment: run `restic-manager-agent enroll` first",
            spec.state_dir.display()
        );
    }
    std::fs::create_dir_all(unit_dir)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let path = unit_dir.join(UNIT_NAME);
    crate::state::write_durable(&path, systemd_unit(spec).as_bytes(), false)?;
    if systemctl {
        run("systemctl", &["daemon-reload"])?;
        run("systemctl", &["enable", "--now", UNIT_NAME])?;
    }
    Ok(path)
}

/// Stops and disables the service and removes the unit. The state
/// directory (keys, outbox) is left in place.
pub fn uninstall_systemd(unit_dir: &Path, systemctl: bool) -> Result<()> {
    let path = unit_dir.join(UNIT_NAME);
    if systemctl {
        let _ = run("systemctl", &["disable", "--now", UNIT_NAME]);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    if systemctl {
        run("systemctl", &["daemon-reload"])?;
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{cmd} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Windows: registers the agent with the Service Control Manager through
/// `sc.exe` (auto start, restart on failure). Not compiled on this
/// project's build machines.
#[cfg(windows)]
pub fn install_windows(spec: &ServiceSpec) -> Result<()> {
    let bin = format!(
        "\"{}\" --state-dir \"{}\" --restic \"{}\" run --windows-service",
        spec.exe.display(),
        spec.state_dir.display(),
        spec.restic_bin.display()
    );
    run(
        "sc.exe",
        &[
            "create",
            "restic-manager-agent",
            "binPath=",
            &bin,
            "start=",
            "auto",
            "DisplayName=",
            "restic-manager agent",
        ],
    )?;
    run(
        "sc.exe",
        &[
            "failure",
            "restic-manager-agent",
            "reset=",
            "86400",
            "actions=",
            "restart/5000/restart/5000/restart/30000",
        ],
    )?;
    run("sc.exe", &["start", "restic-manager-agent"])
}

#[cfg(windows)]
pub fn uninstall_windows() -> Result<()> {
    let _ = run("sc.exe", &["stop", "restic-manager-agent"]);
    run("sc.exe", &["delete", "restic-manager-agent"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_agent_with_its_state_dir_and_is_removed_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = ServiceSpec {
            exe: "/usr/local/bin/restic-manager-agent".into(),
            state_dir: tmp.path().join("state"),
            restic_bin: "/usr/bin/restic".into(),
        };
        let units = tmp.path().join("units");
        let err = install_systemd(&spec, &units, false).unwrap_err();
        assert!(err.to_string().contains("enroll"), "{err}");
        std::fs::create_dir_all(&spec.state_dir).unwrap();
        std::fs::write(spec.state_dir.join("identity.json"), b"{}").unwrap();
        let path = install_systemd(&spec, &units, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!(
            "ExecStart=/usr/local/bin/restic-manager-agent --state-dir {} --restic /usr/bin/restic run",
            spec.state_dir.display()
        )));
        assert!(text.contains("Restart=always") && text.contains("WantedBy=multi-user.target"));
        uninstall_systemd(&units, false).unwrap();
        assert!(!path.exists());
        uninstall_systemd(&units, false).unwrap();
    }

    /// The lines that set a unit's scheduling priorities.
    fn priorities(unit: &str) -> Vec<&str> {
        unit.lines()
            .map(str::trim)
            .filter(|l| {
                [
                    "CPUWeight=",
                    "Nice=",
                    "IOSchedulingClass=",
                    "IOSchedulingPriority=",
                    "IOWeight=",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect()
    }

    #[test]
    fn installed_unit_yields_the_cpu_and_the_disk_without_starving_as_the_packaged_unit_does() {
        let spec = ServiceSpec {
            exe: "/usr/bin/restic-manager-agent".into(),
            state_dir: "/var/lib/restic-manager-agent".into(),
            restic_bin: "/usr/bin/restic".into(),
        };
        let packaged = include_str!("../../deploy/systemd/restic-manager-agent.service");
        let installed = systemd_unit(&spec);
        // a nice value alone does not make restic yield to other services
        // (autogroups): the weight is what does
        assert!(
            priorities(&installed).contains(&"CPUWeight=20"),
            "{installed}"
        );
        // the idle I/O class starves restic beside a busy disk: the lowest
        // best-effort priority instead
        for want in ["IOSchedulingClass=best-effort", "IOSchedulingPriority=7"] {
            assert!(priorities(&installed).contains(&want), "{installed}");
        }
        assert!(!installed.contains("IOSchedulingClass=idle"), "{installed}");
        assert_eq!(priorities(&installed), priorities(packaged));
    }
}
