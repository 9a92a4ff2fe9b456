//! Message size against the server's limit.
//!
//! The bus refuses any message whose headers plus payload exceed the
//! `max_payload` the server advertised in its `INFO`. Every sender checks
//! before sending ([`check`]), so an oversized message is a clear,
//! definitive [`TooLarge`] — never a retried request or a dropped
//! connection — and large results can be split ([`chunk_len`]) to fit.

use async_nats::Client;

/// The limit of a server whose `INFO` has not arrived yet (the NATS default).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Room kept for the envelope around a chunk (subject-independent fields,
/// headers) when splitting data to fit.
pub const ENVELOPE_RESERVE: usize = 4096;

/// A message bigger than the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{size} bytes > max_payload {max}")]
pub struct TooLarge {
    /// Headers plus payload, as the server counts them.
    pub size: usize,
    /// The server's advertised `max_payload`.
    pub max: usize,
}

/// The server's advertised `max_payload`, read from the connection's last
/// `INFO` (before the first one: the client's negotiated default).
pub fn max_payload(client: &Client) -> usize {
    match client.server_info().max_payload {
        0 => match client.max_payload() {
            0 => DEFAULT_MAX_PAYLOAD,
            m => m,
        },
        m => m,
    }
}

/// Bytes a header block with these `(name, value)` pairs takes on the wire
/// (`NATS/1.0\r\n`, one `name: value\r\n` each, `\r\n`); 0 without headers.
pub fn header_len<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    let mut len = 0;
    let mut any = false;
    for (k, v) in headers {
        any = true;
        len += k.len() + 2 + v.len() + 2;
    }
    if any { len + 10 + 2 } else { 0 }
}

/// Checks a message of `header_len` header bytes and `payload_len` payload
/// bytes against `max`.
pub fn check_against(max: usize, header_len: usize, payload_len: usize) -> Result<(), TooLarge> {
    let size = header_len + payload_len;
    if size > max {
        Err(TooLarge { size, max })
    } else {
        Ok(())
    }
}

/// Checks a message against the server `client` is connected to.
pub fn check(client: &Client, header_len: usize, payload_len: usize) -> Result<(), TooLarge> {
    check_against(max_payload(client), header_len, payload_len)
}

/// Publishes `payload` unless it is too large for the server (then nothing
/// is sent and the caller gets [`PublishError::TooLarge`]).
pub async fn publish(
    client: &Client,
    subject: impl async_nats::subject::ToSubject,
    payload: bytes::Bytes,
) -> Result<(), PublishError> {
    check(client, 0, payload.len())?;
    client
        .publish(subject, payload)
        .await
        .map_err(|e| PublishError::Bus(e.to_string()))
}

/// Why [`publish`] sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("message too large for the bus: {0}")]
    TooLarge(#[from] TooLarge),
    #[error("{0}")]
    Bus(String),
}

/// How many bytes of text may go into one chunk so that the chunk, with
/// every byte JSON-escaped (at most doubled: `"` and `\` become two bytes;
/// the text is itself serialized JSON, so it holds no raw control
/// characters) and wrapped in its envelope, fits in `max`.
pub fn chunk_len(max: usize) -> usize {
    (max.saturating_sub(ENVELOPE_RESERVE) / 2).max(1)
}

/// Splits `text` into pieces of at most `limit` bytes, on character
/// boundaries (a piece may be shorter; none is empty).
pub fn split_text(text: &str, limit: usize) -> Vec<&str> {
    let limit = limit.max(4);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = limit.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_matches_the_wire_format() {
        assert_eq!(header_len([]), 0);
        let wire = "NATS/1.0\r\nRm-Idempotency-Key: j1:done\r\n\r\n";
        assert_eq!(header_len([("Rm-Idempotency-Key", "j1:done")]), wire.len());
    }

    #[test]
    fn check_counts_headers_and_payload() {
        assert_eq!(check_against(100, 40, 60), Ok(()));
        assert_eq!(
            check_against(100, 40, 61),
            Err(TooLarge {
                size: 101,
                max: 100
            })
        );
        assert_eq!(
            TooLarge {
                size: 101,
                max: 100
            }
            .to_string(),
            "101 bytes > max_payload 100"
        );
    }

    #[test]
    fn split_text_keeps_characters_whole_and_loses_nothing() {
        let text = "aé€😀".repeat(1000);
        for limit in [4, 5, 7, 100, 4096, 1 << 20] {
            let parts = split_text(&text, limit);
            assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= limit));
            assert_eq!(parts.concat(), text);
        }
        assert!(split_text("", 10).is_empty());
    }

    #[test]
    fn an_escaped_chunk_fits() {
        let max = 64 * 1024;
        let worst = "\"".repeat(chunk_len(max));
        let escaped = serde_json::to_string(&worst).unwrap();
        assert!(escaped.len() + ENVELOPE_RESERVE <= max + 2);
    }
}
