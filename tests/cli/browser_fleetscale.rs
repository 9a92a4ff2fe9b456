//! Browser set-up for the fleet UI at scale (issue 11): a second, empty
//! installation (`restic-manager serve` on a fresh data directory, no
//! agent, one admin), so step `57-fleet-scale` can watch an empty
//! dashboard take its first host live. Stopped when the returned guard
//! drops.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::browser::{Kill, user_add};
use crate::serve::{free_port, wait_running};

/// Starts the empty installation under `dir`; returns its guard and the
/// `empty` entry of the browser config (its URL and admin).
pub fn start_empty(dir: &Path) -> (Kill, serde_json::Value) {
    let data = dir.join("rm-empty");
    std::fs::create_dir_all(&data).unwrap();
    user_add(&data, "first", "admin", "first-password-e2e");
    let child = Command::new(env!("CARGO_BIN_EXE_restic-manager"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--bus-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--web-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("serve-empty.log")).unwrap(),
        ))
        .spawn()
        .expect("start the empty installation");
    let mut serve = Kill(child);
    let url = wait_running(&mut serve.0);
    let cfg = serde_json::json!({
        "url": url,
        "admin": {"name": "first", "password": "first-password-e2e"},
    });
    (serve, cfg)
}
