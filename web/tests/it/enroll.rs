//! `POST /api/v1/enroll` forwards to the control plane: a good token gets a
//! JWT that works on the bus; bad input gets a clear JSON error.

use std::time::Duration;

use nkeys::{KeyPair, XKey};
use rm_bus::creds::{Role, UserCreds};
use rm_bus::msg::{
    Actor, ActorVia, EnrollReply, EnrollRequest, PROTOCOL_VERSION, SvcError, SvcReply, SvcRequest,
    decode, encode,
};
use rm_bus::reqack::{IdempotencyKey, RetryPolicy, request_with_retry};
use rm_bus::subject::{self, SvcRole};
use rm_controlplane::api;
use rm_testkit::TestBus;

struct Running {
    url: String,
    client: reqwest::Client,
    fingerprint: String,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

async fn start(bus: &TestBus, dir: &std::path::Path) -> Running {
    let identity = rm_web::tls::for_data_dir(dir, &[]).unwrap();
    let (cp_tx, cp_rx) = tokio::sync::oneshot::channel::<()>();
    let config = rm_controlplane::Config {
        data_dir: dir.join("cp"),
        db_path: None,
        bus_urls: vec![bus.url()],
        agent_bus_urls: vec![bus.url()],
        authority: bus.authority().clone(),
        server_url: "https://127.0.0.1".into(),
        server_fingerprint: Some(identity.fingerprint.clone()),
        timings: rm_controlplane::Timings::default(),
        clock: rm_bus::clock::system(),
    };
    tokio::spawn(rm_controlplane::run(config, async move {
        let _ = cp_rx.await;
    }));
    let web = bus.connect_role(Role::Web).await.unwrap();
    let state = rm_web::AppState::new(rm_web::state::Shared {
        store: rm_store::Store::open(&dir.join("db.sqlite")).await.unwrap(),
        bus: web.client.clone(),
        live_bus: web.client.clone(),
        svc_timeout: Duration::from_secs(10),
        clock: rm_bus::clock::system(),
        auth: Default::default(),
        setup: Default::default(),
        events: Default::default(),
        http: Default::default(),
        listings: Default::default(),
        downloads: Default::default(),
        recovery: Default::default(),
        touches: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (web_tx, web_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rm_web::launch(
        listener,
        identity.server_config.clone(),
        rm_web::routes::app(state),
        async move {
            let _ = web_rx.await;
        },
    ));
    // trust exactly this installation's certificate
    let pem = std::fs::read(dir.join("ca/ca-cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::http2::client_config(&pem, &[b"http/1.1"]))
        .build()
        .unwrap();
    std::mem::forget(web);
    Running {
        url: format!("https://127.0.0.1:{}", addr.port()),
        client,
        fingerprint: identity.fingerprint,
        stop: vec![cp_tx, web_tx],
    }
}

async fn host_add(bus: &TestBus, name: &str) -> api::HostEnrollment {
    let web = bus.connect_role(Role::Web).await.unwrap();
    let (req, key) = api::HostAdd::new(name);
    let req = SvcRequest {
        v: PROTOCOL_VERSION,
        actor: Actor {
            name: "alice".into(),
            via: ActorVia::Session,
            address: None,
        },
        body: req,
    };
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(5),
        deadline: Some(Duration::from_secs(20)),
        ..RetryPolicy::default()
    };
    let m = request_with_retry(
        &web,
        &subject::svc(SvcRole::Controlplane, api::HOST_ADD),
        &IdempotencyKey::new(rm_bus::ids::random_token(8)),
        encode(&req),
        &policy,
    )
    .await
    .unwrap();
    decode::<SvcReply<api::SealedEnrollment>>("reply", &m.payload)
        .unwrap()
        .ok
        .expect("host added")
        .open(&key)
        .expect("sealed to the asker")
}

#[tokio::test]
async fn enrollment_over_https_reaches_the_control_plane() {
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = start(&bus, dir.path()).await;
    let added = host_add(&bus, "web-1").await;
    assert!(
        added
            .command
            .contains(&format!("--fingerprint {}", web.fingerprint)),
        "{}",
        added.command
    );
    assert!(web.fingerprint.starts_with("sha256:") && web.fingerprint.len() == 7 + 64);

    let health = web
        .client
        .get(format!("{}/healthz", web.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let (nkey, xkey) = (KeyPair::new_user(), XKey::new());
    let body = EnrollRequest {
        v: PROTOCOL_VERSION,
        token: added.token.clone(),
        nkey: nkey.public_key(),
        xkey: xkey.public_key(),
        hostname: "web-1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "test".into(),
    };
    let resp = web
        .client
        .post(format!("{}/api/v1/enroll", web.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: EnrollReply = resp.json().await.unwrap();
    assert_eq!(reply.host_id.as_str(), added.host_id);
    // the JWT it carries works on the bus
    let creds = UserCreds::new(reply.jwt.clone(), nkey.seed().unwrap());
    bus.connect_as(&Role::Agent(reply.host_id.clone()), creds)
        .await
        .expect("agent connects");

    // the same token again: a clear refusal
    let resp = web
        .client
        .post(format!("{}/api/v1/enroll", web.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: SvcError = resp.json().await.unwrap();
    assert_eq!(err.code, "forbidden");
    assert!(
        err.message.contains("invalid, expired or already used"),
        "{}",
        err.message
    );

    // malformed input
    let resp = web
        .client
        .post(format!("{}/api/v1/enroll", web.url))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: SvcError = resp.json().await.unwrap();
    assert!(
        err.message.contains("malformed enrollment request"),
        "{}",
        err.message
    );
    drop(web.stop);
}

#[tokio::test]
async fn the_enrollment_token_never_crosses_the_bus_in_clear() {
    use futures_util::StreamExt;
    let bus = TestBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = start(&bus, dir.path()).await;
    let added = host_add(&bus, "web-1").await;
    // Anyone able to listen where the control plane listens sees only this.
    let spy = bus.connect_role(Role::Controlplane).await.unwrap();
    let mut seen = spy
        .subscribe(subject::svc(SvcRole::Controlplane, api::ENROLL))
        .await
        .unwrap();
    spy.flush().await.unwrap();
    let (nkey, xkey) = (KeyPair::new_user(), XKey::new());
    let body = EnrollRequest {
        v: PROTOCOL_VERSION,
        token: added.token.clone(),
        nkey: nkey.public_key(),
        xkey: xkey.public_key(),
        hostname: "web-1".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        agent_version: "test".into(),
    };
    let resp = web
        .client
        .post(format!("{}/api/v1/enroll", web.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let forwarded = tokio::time::timeout(Duration::from_secs(10), seen.next())
        .await
        .expect("the enrollment crossed the bus")
        .unwrap();
    let text = String::from_utf8_lossy(&forwarded.payload);
    assert!(
        !text.contains(&added.token),
        "token in clear on the bus: {text}"
    );
    assert!(!format!("{body:?}").contains(&added.token));
    drop(web.stop);
}

#[test]
fn the_ca_is_created_once_its_key_is_private_and_enrollment_pins_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = rm_web::tls::for_data_dir(dir.path(), &["backup.example".into()]).unwrap();
    let b = rm_web::tls::for_data_dir(dir.path(), &[]).unwrap();
    assert_eq!(a.fingerprint, b.fingerprint, "a new leaf, the same CA pin");
    let ca = std::fs::read(dir.path().join("ca/ca-cert.pem")).unwrap();
    let der = rm_bus::pki::verify::first_cert(&ca).unwrap();
    assert_eq!(a.fingerprint, rm_bus::pki::fingerprint_of(&der));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca/ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
