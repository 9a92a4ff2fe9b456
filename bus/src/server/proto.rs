//! The client side of the NATS text protocol, as a bounded parser.
//!
//! [`parse`] looks at the front of the read buffer and either returns one
//! complete operation and how many bytes it used, asks for more bytes (and
//! says how many it needs, never more than a control line plus
//! `max_payload`), or refuses the input. It never allocates; the caller
//! owns the buffer and grows it only by what [`Parsed::NeedMore`] asks.

use std::fmt;

/// Longest control line (everything up to `\r\n`) nats-server accepts.
pub const MAX_CONTROL_LINE: usize = 4096;

/// One client operation, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOp<'a> {
    Connect(&'a [u8]),
    Pub {
        subject: &'a str,
        reply: Option<&'a str>,
        /// Header block length (0 for `PUB`); `msg[..hdr_len]` is the header.
        hdr_len: usize,
        headers: bool,
        /// Header block followed by payload.
        msg: &'a [u8],
    },
    Sub {
        subject: &'a str,
        queue: Option<&'a str>,
        sid: &'a str,
    },
    Unsub {
        sid: &'a str,
        max: Option<u64>,
    },
    Ping,
    Pong,
    /// `+OK` / `-ERR` / `INFO` from a client: accepted and ignored.
    Ignored,
}

/// Result of looking at the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// One operation that used the first `usize` bytes.
    Op(ClientOp<'a>, usize),
    /// Incomplete: at least this many bytes in total are needed.
    NeedMore(usize),
}

/// Input the server refuses; each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Not an operation, or a message not followed by `\r\n`.
    UnknownOp,
    /// A control line longer than [`MAX_CONTROL_LINE`].
    MaxControlLine,
    /// A message bigger than `max_payload`.
    MaxPayload,
    /// An operation with missing or malformed arguments.
    BadArgs(&'static str),
}

impl ProtoError {
    /// The `-ERR` text nats-server sends for this error, if it sends one.
    pub fn err_text(&self) -> Option<&'static str> {
        match self {
            Self::UnknownOp => Some("Unknown Protocol Operation"),
            Self::MaxControlLine => Some("Maximum Control Line Exceeded"),
            Self::MaxPayload => Some("Maximum Payload Violation"),
            Self::BadArgs(_) => None,
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadArgs(what) => write!(f, "malformed {what} arguments"),
            other => f.write_str(other.err_text().unwrap_or("protocol error")),
        }
    }
}

impl std::error::Error for ProtoError {}

fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// Splits the argument part of a control line on runs of spaces/tabs.
/// At most 4 arguments are meaningful for any op; a 5th makes it malformed.
fn split_args(line: &[u8]) -> Option<([&str; 5], usize)> {
    let mut out = [""; 5];
    let mut n = 0;
    for part in line.split(is_space).filter(|p| !p.is_empty()) {
        if n == out.len() {
            return None;
        }
        out[n] = std::str::from_utf8(part).ok()?;
        n += 1;
    }
    Some((out, n))
}

fn parse_size(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses one operation from the front of `buf`.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Parsed<'_>, ProtoError> {
    let window = &buf[..buf.len().min(MAX_CONTROL_LINE + 2)];
    let Some(nl) = window.iter().position(|b| *b == b'\n') else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(ProtoError::MaxControlLine);
        }
        // Reject garbage early rather than waiting for a newline.
        check_prefix(buf)?;
        return Ok(Parsed::NeedMore(buf.len() + 1));
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    if line_end > MAX_CONTROL_LINE {
        return Err(ProtoError::MaxControlLine);
    }
    let line = &buf[..line_end];
    let after_line = nl + 1;
    let (verb, args) = match line.iter().position(is_space) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let op = |o| Ok(Parsed::Op(o, after_line));
    if verb.eq_ignore_ascii_case(b"PUB") || verb.eq_ignore_ascii_case(b"HPUB") {
        let headers = verb.len() == 4;
        let (a, n) = split_args(args).ok_or(ProtoError::UnknownOp)?;
        let (subject, reply, hdr, total) = match (headers, n) {
            (false, 2) => (a[0], None, "0", a[1]),
            (false, 3) => (a[0], Some(a[1]), "0", a[2]),
            (true, 3) => (a[0], None, a[1], a[2]),
            (true, 4) => (a[0], Some(a[1]), a[2], a[3]),
            _ => return Err(ProtoError::UnknownOp),
        };
        let total = parse_size(total).ok_or(ProtoError::BadArgs("PUB"))?;
        let hdr_len = parse_size(hdr).ok_or(ProtoError::BadArgs("HPUB"))?;
        if hdr_len > total {
            return Err(ProtoError::BadArgs("HPUB"));
        }
        if total > max_payload {
            return Err(ProtoError::MaxPayload);
        }
        let need = after_line + total + 2;
        if buf.len() < need {
            return Ok(Parsed::NeedMore(need));
        }
        if &buf[after_line + total..need] != b"\r\n" {
            return Err(ProtoError::UnknownOp);
        }
        let msg = &buf[after_line..after_line + total];
        return Ok(Parsed::Op(
            ClientOp::Pub {
                subject,
                reply,
                hdr_len,
                headers,
                msg,
            },
            need,
        ));
    }
    if verb.eq_ignore_ascii_case(b"SUB") {
        let (a, n) = split_args(args).ok_or(ProtoError::BadArgs("SUB"))?;
        return match n {
            2 => op(ClientOp::Sub {
                subject: a[0],
                queue: None,
                sid: a[1],
            }),
            3 => op(ClientOp::Sub {
                subject: a[0],
                queue: Some(a[1]),
                sid: a[2],
            }),
            _ => Err(ProtoError::BadArgs("SUB")),
        };
    }
    if verb.eq_ignore_ascii_case(b"UNSUB") {
        let (a, n) = split_args(args).ok_or(ProtoError::BadArgs("UNSUB"))?;
        return match n {
            1 => op(ClientOp::Unsub {
                sid: a[0],
                max: None,
            }),
            2 => {
                let max = parse_size(a[1]).ok_or(ProtoError::BadArgs("UNSUB"))?;
                op(ClientOp::Unsub {
                    sid: a[0],
                    max: Some(max as u64),
                })
            }
            _ => Err(ProtoError::BadArgs("UNSUB")),
        };
    }
    if verb.eq_ignore_ascii_case(b"PING") && args.iter().all(is_space) {
        return op(ClientOp::Ping);
    }
    if verb.eq_ignore_ascii_case(b"PONG") && args.iter().all(is_space) {
        return op(ClientOp::Pong);
    }
    if verb.eq_ignore_ascii_case(b"CONNECT") {
        return op(ClientOp::Connect(trim(args)));
    }
    if verb.eq_ignore_ascii_case(b"+OK")
        || verb.eq_ignore_ascii_case(b"-ERR")
        || verb.eq_ignore_ascii_case(b"INFO")
    {
        return op(ClientOp::Ignored);
    }
    Err(ProtoError::UnknownOp)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !is_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !is_space(c))
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Refuses a partial control line that cannot become a known operation.
fn check_prefix(buf: &[u8]) -> Result<(), ProtoError> {
    const VERBS: [&[u8]; 10] = [
        b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG", b"CONNECT", b"+OK", b"-ERR", b"INFO",
    ];
    let end = buf
        .iter()
        .position(|b| is_space(b) || *b == b'\r')
        .unwrap_or(buf.len());
    let word = &buf[..end];
    let complete = end < buf.len();
    let ok = VERBS.iter().any(|v| {
        if complete {
            word.eq_ignore_ascii_case(v)
        } else {
            word.len() <= v.len() && word.eq_ignore_ascii_case(&v[..word.len()])
        }
    });
    if ok {
        Ok(())
    } else {
        Err(ProtoError::UnknownOp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> ClientOp<'_> {
        match parse(input, 1024).unwrap() {
            Parsed::Op(op, used) => {
                assert_eq!(used, input.len(), "{:?}", String::from_utf8_lossy(input));
                op
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ops() {
        assert_eq!(one(b"PING\r\n"), ClientOp::Ping);
        assert_eq!(one(b"pong\r\n"), ClientOp::Pong);
        assert_eq!(
            one(b"PUB foo 2\r\nhi\r\n"),
            ClientOp::Pub {
                subject: "foo",
                reply: None,
                hdr_len: 0,
                headers: false,
                msg: b"hi"
            }
        );
        assert_eq!(
            one(b"pub  foo\tbar   0\r\n\r\n"),
            ClientOp::Pub {
                subject: "foo",
                reply: Some("bar"),
                hdr_len: 0,
                headers: false,
                msg: b""
            }
        );
        assert_eq!(
            one(b"HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"),
            ClientOp::Pub {
                subject: "foo",
                reply: Some("r"),
                hdr_len: 12,
                headers: true,
                msg: b"NATS/1.0\r\n\r\nhi"
            }
        );
        assert_eq!(
            one(b"SUB foo q 7\r\n"),
            ClientOp::Sub {
                subject: "foo",
                queue: Some("q"),
                sid: "7"
            }
        );
        assert_eq!(
            one(b"UNSUB 7 3\r\n"),
            ClientOp::Unsub {
                sid: "7",
                max: Some(3)
            }
        );
        assert_eq!(
            one(b"CONNECT {\"a\":null}\r\n"),
            ClientOp::Connect(b"{\"a\":null}")
        );
    }

    #[test]
    fn incomplete_and_errors() {
        assert_eq!(parse(b"PU", 10), Ok(Parsed::NeedMore(3)));
        assert_eq!(parse(b"PUB foo 5\r\nhi", 10), Ok(Parsed::NeedMore(18)));
        assert_eq!(parse(b"PUB foo 11\r\n", 10), Err(ProtoError::MaxPayload));
        assert_eq!(
            parse(b"PUB foo 2\r\nhiX\r\n", 10),
            Err(ProtoError::UnknownOp)
        );
        assert_eq!(parse(b"FOO bar\r\n", 10), Err(ProtoError::UnknownOp));
        assert_eq!(parse(b"XYZ", 10), Err(ProtoError::UnknownOp));
        assert_eq!(parse(b"SUB foo\r\n", 10), Err(ProtoError::BadArgs("SUB")));
        assert_eq!(
            parse(b"PUB foo -1\r\n", 10),
            Err(ProtoError::BadArgs("PUB"))
        );
        assert_eq!(
            parse(b"HPUB foo 5 2\r\n", 10),
            Err(ProtoError::BadArgs("HPUB"))
        );
        let long = vec![b'P'; MAX_CONTROL_LINE + 10];
        assert!(parse(&long, 10).is_err());
        let mut long_line = b"SUB ".to_vec();
        long_line.extend(std::iter::repeat_n(b'a', MAX_CONTROL_LINE + 1));
        assert_eq!(parse(&long_line, 10), Err(ProtoError::MaxControlLine));
    }
}
