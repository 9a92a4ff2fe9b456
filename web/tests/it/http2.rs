//! The HTTPS listener negotiates HTTP/2 by ALPN (an event stream works
//! over it) and still speaks HTTP/1.1.

use std::sync::Arc;

use crate::harness::H;

pub fn client_config(pem: &[u8], alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[tokio::test]
async fn https_negotiates_http2_carries_an_event_stream_and_still_serves_http1() {
    let h = H::new().await;
    let identity = rm_web::tls::for_data_dir(h.dir.path(), &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rm_web::launch(
        listener,
        identity.server_config.clone(),
        h.app.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let pem = std::fs::read(h.dir.path().join("ca/ca-cert.pem")).unwrap();
    let url = format!("https://127.0.0.1:{port}/healthz");

    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&pem, &[b"h2", b"http/1.1"]))
        .build()
        .unwrap();
    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.headers().contains_key("content-security-policy"));

    // an event stream over HTTP/2
    let token = h.token(rm_web::auth::Role::Viewer).await;
    let mut events = h2
        .get(format!(
            "https://127.0.0.1:{port}/api/v1/events?topics=jobs"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.version(), reqwest::Version::HTTP_2);
    assert_eq!(events.status(), 200);
    h.state.events.publish(
        "job",
        serde_json::json!({"type": "started", "job_id": "j1"}),
    );
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: job"), "{seen}");
    assert!(seen.contains("\"job_id\":\"j1\""), "{seen}");

    let h1 = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&pem, &[b"http/1.1"]))
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);

    // shutdown ends the open event stream and the server returns
    let _ = stop.send(());
    h.state.events.close();
    server.await.unwrap().unwrap();
    drop(events);
}
