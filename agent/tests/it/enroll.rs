//! Enrolling with the agent binary over HTTPS pinned to the web
//! certificate's fingerprint, then running it as the enrolled host.

use std::path::Path;
use std::process::Output;

use rm_bus::creds::Role;

use crate::support::*;

async fn agent_cmd(state: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_restic-manager-agent"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("agent binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_over_pinned_https_then_run_status_and_install() {
    let env = Env::start().await.unwrap();
    let identity = rm_web::tls::for_data_dir(&env.path("web"), &[]).unwrap();
    let web_client = env.bus.connect_role(Role::Web).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let web = tokio::spawn(rm_web::launch(
        listener,
        identity.server_config.clone(),
        rm_web::routes::app(rm_web::AppState::with_defaults(
            rm_store::Store::open(&env.path("web.db")).await.unwrap(),
            web_client.client.clone(),
        )),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let added = env.host_add("ep-1").await;
    let state = env.path("ep-1");

    // a certificate other than the pinned one: refused before anything is sent
    let wrong = format!("sha256:{}", "00".repeat(32));
    let out = agent_cmd(
        &state,
        &[
            "enroll",
            "--server",
            &url,
            "--token",
            &added.token,
            "--fingerprint",
            &wrong,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("fingerprint"), "{}", text(&out));
    assert!(!state.join("identity.json").exists());

    // the right fingerprint (the token was not used up by the refused try)
    let out = agent_cmd(
        &state,
        &[
            "enroll",
            "--server",
            &url,
            "--token",
            &added.token,
            "--fingerprint",
            &identity.fingerprint,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&added.host_id), "{}", text(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["nkey.seed", "xkey.seed", "agent.jwt"] {
            let mode = std::fs::metadata(state.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    // the one-time token cannot enroll a second endpoint
    let other = env.path("ep-2");
    let out = agent_cmd(
        &other,
        &[
            "enroll",
            "--server",
            &url,
            "--token",
            &added.token,
            "--fingerprint",
            &identity.fingerprint,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("refused"), "{}", text(&out));
    assert!(!other.join("identity.json").exists());

    // status reads the state directory
    let out = agent_cmd(&state, &["status"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(s.contains(&added.host_id) && s.contains("outbox:"), "{s}");

    // the enrolled agent connects with the bus URLs it was given
    let _agent = AgentProc::start(&state, &env.bus.url(), &restic_bin()).unwrap();
    env.wait_online(&added.host_id).await;

    // the service unit runs exactly this state directory
    let units = env.path("units");
    let out = agent_cmd(
        &state,
        &[
            "install",
            "--unit-dir",
            units.to_str().unwrap(),
            "--no-systemctl",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(units.join("restic-manager-agent.service")).unwrap();
    assert!(
        unit.contains(&format!("--state-dir {} ", state.display())),
        "{unit}"
    );

    let _ = stop_tx.send(());
    let _ = web.await;
}
