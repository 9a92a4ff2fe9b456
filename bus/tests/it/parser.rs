//! Property tests of the embedded bus's protocol parser: arbitrary,
//! truncated and chunked input never panics, a parse never asks for more
//! than one control line plus `max_payload`, and valid operations survive
//! being split at any point.

use proptest::prelude::*;
use rm_bus_server::server::proto::{MAX_CONTROL_LINE, Parsed, ProtoError, parse};

const MAX_PAYLOAD: usize = 256;

/// Feeds `input` in `chunk`-sized pieces the way the connection does,
/// returning the ops' debug texts, or the error that ended parsing.
fn drive(input: &[u8], chunk: usize) -> (Vec<String>, Option<ProtoError>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut ops = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parse(&buf, MAX_PAYLOAD) {
                Ok(Parsed::Op(op, used)) => {
                    assert!(used > 0 && used <= buf.len());
                    ops.push(format!("{op:?}"));
                    buf.drain(..used);
                }
                Ok(Parsed::NeedMore(n)) => {
                    assert!(n > buf.len(), "asks for more than it has");
                    assert!(
                        n <= MAX_CONTROL_LINE + 2 + MAX_PAYLOAD + 2,
                        "never asks beyond a control line plus max_payload: {n}"
                    );
                    break;
                }
                Err(e) => return (ops, Some(e)),
            }
        }
        assert!(buf.len() <= MAX_CONTROL_LINE + 2 + MAX_PAYLOAD + 2 + chunk);
    }
    (ops, None)
}

fn op_strategy() -> impl Strategy<Value = Vec<u8>> {
    let subject = "[a-z]{1,5}(\\.[a-z*>]{1,3}){0,3}";
    prop_oneof![
        Just(b"PING\r\n".to_vec()),
        Just(b"PONG\r\n".to_vec()),
        (
            subject,
            proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)
        )
            .prop_map(|(s, p)| {
                let mut v = format!("PUB {s} {}\r\n", p.len()).into_bytes();
                v.extend_from_slice(&p);
                v.extend_from_slice(b"\r\n");
                v
            }),
        (
            subject,
            0usize..20,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(s, h, p)| {
                let mut hdr = b"NATS/1.0\r\n".to_vec();
                hdr.extend(std::iter::repeat_n(b'h', h));
                hdr.extend_from_slice(b"\r\n\r\n");
                let mut v =
                    format!("HPUB {s} r.x {} {}\r\n", hdr.len(), hdr.len() + p.len()).into_bytes();
                v.extend_from_slice(&hdr);
                v.extend_from_slice(&p);
                v.extend_from_slice(b"\r\n");
                v
            }),
        (subject, "[0-9]{1,4}").prop_map(|(s, sid)| format!("SUB {s} q {sid}\r\n").into_bytes()),
        ("[0-9]{1,4}", 0u32..10).prop_map(|(sid, m)| format!("UNSUB {sid} {m}\r\n").into_bytes()),
        Just(b"CONNECT {\"verbose\":null,\"jwt\":null}\r\n".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
        drive(&input, chunk);
    }

    #[test]
    fn protocol_like_noise_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("PUB ".to_string()), Just("HPUB ".to_string()), Just("SUB ".to_string()),
                Just("UNSUB ".to_string()), Just("\r\n".to_string()), Just(" ".to_string()),
                Just("99999999999 ".to_string()), Just("-1 ".to_string()), "[a-z.*>]{0,8}",
                "[0-9]{1,6}",
            ],
            0..40,
        ),
        chunk in 1usize..32,
    ) {
        drive(parts.concat().as_bytes(), chunk);
    }

    #[test]
    fn valid_ops_survive_any_split(ops in proptest::collection::vec(op_strategy(), 1..12), chunk in 1usize..50) {
        let input: Vec<u8> = ops.concat();
        let (whole, err) = drive(&input, input.len());
        prop_assert!(err.is_none(), "{err:?}");
        prop_assert_eq!(whole.len(), ops.len());
        let (split, err2) = drive(&input, chunk);
        prop_assert!(err2.is_none());
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn truncated_ops_only_ask_for_more(op in op_strategy(), cut in 0usize..400) {
        let cut = cut.min(op.len().saturating_sub(1));
        match parse(&op[..cut], MAX_PAYLOAD) {
            Ok(Parsed::NeedMore(n)) => prop_assert!(n > cut && n <= op.len()),
            other => prop_assert!(false, "truncated op gave {other:?}"),
        }
    }

    #[test]
    fn oversized_payloads_are_refused_before_reading(extra in 1usize..1_000_000_000) {
        let line = format!("PUB a {}\r\n", MAX_PAYLOAD + extra);
        prop_assert_eq!(parse(line.as_bytes(), MAX_PAYLOAD), Err(ProtoError::MaxPayload));
    }
}
