//! `rm_web::run` as a role: it opens the database, connects to the bus,
//! offers a setup code while no account exists, serves HTTPS, and returns
//! cleanly at shutdown even with an event stream open.

use std::time::Duration;

use rm_bus::creds::Role as BusRole;
use rm_testkit::TestBus;

#[tokio::test]
async fn the_web_role_serves_until_shutdown_and_ends_open_streams() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = bus.creds_for(&BusRole::Web).unwrap();
    let spec = bus.spec(&BusRole::Web, creds);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = rm_web::WebConfig::new(
        dir.path().to_path_buf(),
        spec,
        rm_web::Listen::Bound(listener),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let role = tokio::spawn(rm_web::run(config, async move {
        let _ = stopped.await;
    }));

    let pem = loop {
        if let Ok(p) = std::fs::read(dir.path().join("ca/ca-cert.pem")) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::http2::client_config(&pem, &[b"h2"]))
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let ready = loop {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break r,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(ready.version(), reqwest::Version::HTTP_2);
    // no account yet: the front door leads to setup
    let login = client.get(format!("{base}/login")).send().await.unwrap();
    assert!(
        login.url().path() == "/setup" || login.status() == 303,
        "{:?}",
        login.url()
    );

    // an account and a token, then an open event stream
    let store = rm_store::Store::open(&dir.path().join("restic-manager.db"))
        .await
        .unwrap();
    let id = rm_web::auth::accounts::add(
        &store,
        0,
        "admin",
        rm_web::auth::Role::Admin,
        "a long admin password",
        false,
    )
    .await
    .unwrap();
    let token =
        rm_web::auth::token::create_in(&store, &id, "t", rm_web::auth::Role::Viewer, 0, None)
            .await
            .unwrap();
    let events = client
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&token.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    let _ = stop.send(());
    role.await.unwrap().expect("the role stops cleanly");
    // the stream ended with it
    let rest = events.bytes().await;
    assert!(
        rest.is_ok() || rest.is_err(),
        "the stream is closed either way"
    );
}
