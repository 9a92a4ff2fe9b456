//! The HTTPS listener negotiates HTTP/2 by ALPN and still speaks HTTP/1.1.

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
async fn https_negotiates_http2_and_still_serves_http1() {
    let h = H::new().await;
    let identity = rm_web::tls::load_or_create(&h.dir.path().join("web"), &[]).unwrap();
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
    let pem = std::fs::read(h.dir.path().join("web/web-cert.pem")).unwrap();
    let url = format!("https://127.0.0.1:{port}/healthz");

    let h2 = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&pem, &[b"h2", b"http/1.1"]))
        .build()
        .unwrap();
    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.headers().contains_key("content-security-policy"));

    let h1 = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&pem, &[b"http/1.1"]))
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
