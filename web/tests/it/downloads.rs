//! `GET /download/agent/{file}`: the install scripts fetch the agent binary
//! and its SHA-256 from here, without an account.

use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::harness::{H, header_of, req, text};

#[tokio::test]
async fn the_agent_binary_and_its_sha256_are_served_to_anyone_and_nothing_else_is() {
    let h = H::new().await;
    let dir = h.dir.path().join("agents");
    std::fs::create_dir_all(&dir).unwrap();
    let name = "restic-manager-agent-linux-x86_64";
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join(name), &bytes).unwrap();
    std::fs::write(h.dir.path().join("secret"), b"not for you").unwrap();
    h.state.downloads.set_dir(Some(dir.clone()));
    let want = data_encoding::HEXLOWER.encode(&Sha256::digest(&bytes));

    let resp = h
        .send(
            req("GET", &format!("/download/agent/{name}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header_of(&resp, "x-checksum-sha256").as_deref(),
        Some(want.as_str())
    );
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(got[..] == bytes[..], "the binary's bytes, unchanged");

    let resp = h
        .send(
            req("GET", &format!("/download/agent/{name}.sha256"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        text(resp).await,
        format!("{want}  {name}\n"),
        "sha256sum format"
    );

    for bad in [
        "restic-manager-agent-windows-x86_64.exe",
        "restic-manager-agent-..%2Fsecret",
        "secret",
    ] {
        let resp = h
            .send(
                req("GET", &format!("/download/agent/{bad}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), 404, "{bad}");
        let body = text(resp).await;
        assert!(!body.contains("not for you"), "{bad}");
    }
}
