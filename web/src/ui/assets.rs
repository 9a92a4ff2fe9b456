//! The stylesheet and the script, compiled into the binary and served with
//! a long cache lifetime: pages link them as `?v=<hash>`, so a new build
//! changes the URL.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};

const CSS: &str = include_str!("../../static/app.css");
const JS: &str = include_str!("../../static/app.js");
const CACHE: &str = "public, max-age=31536000, immutable";

/// A short hash of both assets.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let digest = Sha256::new()
            .chain_update(CSS.as_bytes())
            .chain_update(JS.as_bytes())
            .finalize();
        data_encoding::HEXLOWER.encode(&digest[..6])
    })
}

pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        CSS,
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        JS,
    )
}
