//! HTTP hygiene applied to every response: a strict Content-Security-Policy
//! (no inline script or style), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: same-origin`; a request body limit; a per-request
//! timeout (it bounds producing the response head, so event streams, whose
//! head is sent at once, are not cut); gzip compression (never of event
//! streams); the whole body read before a handler answers; and an `x-request-id` (the client's or a new UUID) that is in
//! the tracing span of every request and echoed in the response.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// Largest request body.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Longest time to produce a response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
    )
}

/// Wraps `router` in the layers above.
pub fn apply(router: Router) -> Router {
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .map_response(
            |r: axum::http::Response<tower_http::limit::ResponseBody<Body>>| r.map(Body::new),
        )
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT));
    router
        .layer(axum::middleware::from_fn(read_body_first))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(layers)
}

/// Reads the whole request body (within [`BODY_LIMIT`]) before any handler
/// or extractor sees the request. A handler that answers early (a bad path
/// id, a wrong content type, a refused login) would otherwise leave the body
/// unread, and hyper then closes the connection while the client may still
/// be sending it: the client sees a TLS EOF instead of the answer. This
/// covers every request, routed or not, so the authentication middleware
/// (CSRF form fields) finds the body already in memory.
async fn read_body_first(
    req: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => axum::response::IntoResponse::into_response(crate::error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the body is larger than 1 MiB, or was cut off",
        )),
    }
}
