//! Webhooks the Standard Webhooks way: the envelope as the JSON body, and
//! `webhook-id` (stable across retries), `webhook-timestamp` (Unix seconds
//! of this attempt) and, when the channel has a `whsec_` secret,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//! The channel's custom headers go first; they cannot replace these.

use data_encoding::BASE64;
use hmac::digest::InvalidLength;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use rm_bus::notify::{ChannelError, NotificationEvent, WebhookChannel, webhook_secret_key};
use sha2::Sha256;

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. (HMAC takes
/// keys of any length; the error exists only in the trait's signature.)
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Result<String, InvalidLength> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        BASE64.encode(&mac.finalize().into_bytes())
    ))
}

/// The body and headers of one attempt.
pub fn parts(
    ch: &WebhookChannel,
    webhook_id: &str,
    event: &NotificationEvent,
    now_secs: i64,
) -> Result<(Vec<u8>, HeaderMap), ChannelError> {
    let body = serde_json::to_vec(event)
        .map_err(|e| ChannelError(format!("event does not serialize: {e}")))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &ch.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ChannelError(format!("header name {name:?} is not valid")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| ChannelError(format!("header {name} has an invalid value")))?;
        // Custom header values are often credentials.
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let id = HeaderValue::from_str(webhook_id)
        .map_err(|_| ChannelError("webhook id is not a valid header value".into()))?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", id);
    headers.insert("webhook-timestamp", HeaderValue::from(now_secs));
    if let Some(secret) = &ch.secret {
        let key = webhook_secret_key(secret)?;
        let sig = sign(&key, webhook_id, now_secs, &body)
            .map_err(|_| ChannelError("webhook secret is not a usable HMAC key".into()))?;
        let value = HeaderValue::from_str(&sig)
            .map_err(|_| ChannelError("signature is not a header value".into()))?;
        headers.insert("webhook-signature", value);
    }
    Ok((body, headers))
}

/// The request for one attempt.
pub fn request(
    client: &reqwest::Client,
    ch: &WebhookChannel,
    webhook_id: &str,
    event: &NotificationEvent,
    now_secs: i64,
) -> Result<reqwest::RequestBuilder, ChannelError> {
    let (body, headers) = parts(ch, webhook_id, event, now_secs)?;
    Ok(client.post(&ch.url).headers(headers).body(body))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn channel(secret: Option<&str>) -> WebhookChannel {
        WebhookChannel {
            url: "https://hooks.example/x".into(),
            secret: secret.map(str::to_owned),
            headers: BTreeMap::from([
                ("X-Team".into(), "ops".into()),
                ("Authorization".into(), "Bearer abc".into()),
            ]),
        }
    }

    #[test]
    fn signature_covers_id_timestamp_and_body() {
        let key = b"0123456789abcdef0123456789abcdef";
        let sign = |k: &[u8], id: &str, ts: i64, body: &[u8]| sign(k, id, ts, body).unwrap();
        let s = sign(key, "msg_1", 1_700_000_000, b"{}");
        assert!(s.starts_with("v1,"));
        assert_eq!(BASE64.decode(&s.as_bytes()[3..]).unwrap().len(), 32);
        assert_ne!(s, sign(key, "msg_2", 1_700_000_000, b"{}"));
        assert_ne!(s, sign(key, "msg_1", 1_700_000_001, b"{}"));
        assert_ne!(s, sign(key, "msg_1", 1_700_000_000, b"{ }"));
        assert_ne!(s, sign(b"other key", "msg_1", 1_700_000_000, b"{}"));
    }

    #[test]
    fn headers_carry_id_timestamp_signature_and_custom_ones() {
        let e = NotificationEvent::test("t1", 0, None);
        let (body, h) = parts(&channel(Some("whsec_aGVsbG8=")), "msg_1", &e, 42).unwrap();
        assert_eq!(body, serde_json::to_vec(&e).unwrap());
        assert_eq!(h["webhook-id"], "msg_1");
        assert_eq!(h["webhook-timestamp"], "42");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-team"], "ops");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(
            h["webhook-signature"].to_str().unwrap(),
            sign(b"hello", "msg_1", 42, &body).unwrap()
        );

        let (_, unsigned) = parts(&channel(None), "msg_1", &e, 42).unwrap();
        assert!(unsigned.get("webhook-signature").is_none());
        assert_eq!(unsigned["webhook-id"], "msg_1");
    }
}
