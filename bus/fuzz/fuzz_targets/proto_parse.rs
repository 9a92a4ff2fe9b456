//! Fuzzes the embedded bus's client-protocol parser: any input, fed in
//! chunks of a size taken from the input, must never panic and never ask
//! for more than one control line plus `max_payload`.
//!
//! Run with `cargo +nightly fuzz run proto_parse` from `bus/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rm_bus_server::server::proto::{MAX_CONTROL_LINE, Parsed, parse};

const MAX_PAYLOAD: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut buf: Vec<u8> = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse(&buf, MAX_PAYLOAD) {
                Ok(Parsed::Op(_, used)) => {
                    assert!(used > 0 && used <= buf.len());
                    buf.drain(..used);
                }
                Ok(Parsed::NeedMore(n)) => {
                    assert!(n > buf.len());
                    assert!(n <= MAX_CONTROL_LINE + MAX_PAYLOAD + 4);
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
