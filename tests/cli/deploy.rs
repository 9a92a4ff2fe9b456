//! `deploy/`: the systemd units pass `systemd-analyze verify` and carry
//! their hardening; the Linux install script fetches the agent binary from
//! a real `serve`, checks it against the pinned certificate and its
//! SHA-256, installs it and enrolls.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rm_bus::subject::{SvcRole, Verb};

use crate::serve::{call_role, free_port, terminate, wait_running};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn units() -> Vec<PathBuf> {
    unit_files("service")
}

/// `deploy/systemd/*.<ext>`, sorted.
fn unit_files(ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_timer_starts_a_shipped_hardened_service_and_catches_up_missed_runs() {
    let timers = unit_files("timer");
    let names: Vec<String> = timers
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for timer in [
        "restic-manager-nats-cert.timer",
        "restic-manager-controlplane-backup.timer",
    ] {
        assert!(names.iter().any(|n| n == timer), "{timer} in {names:?}");
    }
    for timer in &timers {
        let service = timer.with_extension("service");
        assert!(
            service.exists(),
            "{} has its service (hardened by the test above)",
            timer.display()
        );
        let text = std::fs::read_to_string(timer).unwrap();
        let name = timer.file_name().unwrap().to_string_lossy();
        for line in ["Persistent=true", "WantedBy=timers.target"] {
            assert!(text.lines().any(|l| l == line), "{name} has {line}");
        }
        let service = std::fs::read_to_string(&service).unwrap();
        assert!(
            service.lines().any(|l| l == "Type=oneshot"),
            "{name}'s service is a oneshot"
        );
    }
}

#[test]
fn every_unit_is_hardened_and_server_roles_run_as_their_own_user() {
    let units = units();
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for role in [
        "",
        "-bus",
        "-controlplane",
        "-alerts",
        "-notifier",
        "-web",
        "-agent",
        "-nats-cert",
        "-controlplane-backup",
    ] {
        assert!(
            names.contains(&format!("restic-manager{role}.service")),
            "a unit for restic-manager{role}: {names:?}"
        );
    }
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        let name = unit.file_name().unwrap().to_string_lossy();
        for line in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
        ] {
            assert!(text.lines().any(|l| l == line), "{name} has {line}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("ReadWritePaths=/var/lib/")
                    || l.starts_with("ReadOnlyPaths=/var/lib/")),
            "{name} names its data directory"
        );
        if !name.contains("agent") {
            assert!(
                text.lines().any(|l| l == "User=restic-manager"),
                "{name} runs as the dedicated user"
            );
        }
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (scripts/test installs Debian's systemd)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // verify insists the ExecStart binary exists: point it at ours
    let bin = env!("CARGO_BIN_EXE_restic-manager");
    let mut copies = Vec::new();
    for unit in units().into_iter().chain(unit_files("timer")) {
        let text = std::fs::read_to_string(&unit)
            .unwrap()
            .replace("/usr/bin/restic-manager-agent ", &format!("{bin} "))
            .replace("/usr/bin/restic-manager ", &format!("{bin} "));
        let copy = tmp.path().join(unit.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// The agent binary next to ours (the workspace build makes both).
fn agent_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_restic-manager")).with_file_name("restic-manager-agent");
    assert!(
        p.exists(),
        "{} is missing: build it (`cargo build -p rm-agent`; the test command builds the workspace)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_script_verifies_the_pinned_download_and_enrolls_the_agent() {
    for tool in ["curl", "openssl", "sha256sum"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is installed"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agents = tmp.path().join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    let arch = std::env::consts::ARCH;
    let served = agents.join(format!("restic-manager-agent-linux-{arch}"));
    std::fs::copy(agent_bin(), &served).unwrap();
    let bus_port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--bus-listen", &format!("127.0.0.1:{bus_port}")])
        .args(["--web-listen", "127.0.0.1:0", "--agent-dir"])
        .arg(&agents)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = wait_running(&mut serve);
    // The enrollment token comes back sealed to a key of this request.
    let (req, key) = rm_controlplane::api::HostAdd::new("installed-by-script");
    let reply = call_role(
        &data,
        bus_port,
        SvcRole::Controlplane,
        Verb::new("host-add"),
        serde_json::to_value(&req).unwrap(),
    )
    .await;
    let sealed: rm_controlplane::api::SealedEnrollment =
        serde_json::from_value(reply.ok.expect("host added")).unwrap();
    let added = sealed.open(&key).expect("sealed to the asker");
    let token = added.token.clone();
    let command = added.command.clone();
    let fingerprint = command
        .split_whitespace()
        .skip_while(|w| *w != "--fingerprint")
        .nth(1)
        .unwrap()
        .to_owned();

    let script = root().join("deploy/install-agent.sh");
    let prefix = tmp.path().join("prefix");
    let state = tmp.path().join("agent-state");
    let run = |fp: &str| {
        Command::new("sh")
            .arg(&script)
            .args(["--server", &url, "--token", &token, "--fingerprint", fp])
            .args(["--name", "installed-by-script", "--no-service", "--prefix"])
            .arg(&prefix)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap()
    };
    // a wrong pin: nothing is downloaded or installed
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = run(&wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong fingerprint is refused");
    assert!(stderr.contains("refusing to continue"), "{stderr}");
    assert!(!prefix.join("bin/restic-manager-agent").exists());

    let out = run(&fingerprint);
    let status = terminate(&mut serve);
    assert!(
        out.status.success(),
        "install-agent.sh: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "serve stopped cleanly");
    let installed = std::fs::read(prefix.join("bin/restic-manager-agent")).unwrap();
    assert!(
        installed == std::fs::read(&served).unwrap(),
        "the installed agent is the served binary"
    );
    assert!(
        state.join("identity.json").exists(),
        "the agent enrolled (identity in its state directory)"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified (sha256"));
    // the command pins the installation's CA, and the agent got it for the bus
    let ca = std::fs::read(data.join("ca/ca-cert.pem")).unwrap();
    let ca_der = rm_bus::pki::verify::first_cert(&ca).unwrap();
    assert_eq!(fingerprint, rm_bus::pki::fingerprint_of(&ca_der));
    assert_eq!(std::fs::read(state.join("bus-ca.pem")).unwrap(), ca);
}
