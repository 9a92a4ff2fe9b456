//! Tolerant parsing of restic's output across 0.14–0.19: JSON lines where
//! every field but `message_type` is optional (zero fields are omitted),
//! 0.14's `struct_type` in `ls`, progress status lines, stderr error lines
//! rendered to text, and the version line.

use rm_bus::msg::{LsEntry, Progress};
use serde_json::Value;

use crate::Version;

/// Parses a line as a JSON object or array; anything else is `None`.
pub(crate) fn json_line(line: &str) -> Option<Value> {
    let t = line.trim();
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    serde_json::from_str(t).ok()
}

/// The line's `message_type` (0.17+ `ls` too), else 0.14's `struct_type`.
pub(crate) fn message_type(v: &Value) -> Option<&str> {
    v.get("message_type")
        .and_then(Value::as_str)
        .or_else(|| v.get("struct_type").and_then(Value::as_str))
}

/// A non-negative integer field; accepts floats (and 2^63-sized values).
pub(crate) fn u64_field(v: &Value, key: &str) -> Option<u64> {
    let f = v.get(key)?;
    if let Some(n) = f.as_u64() {
        return Some(n);
    }
    let x = f.as_f64()?;
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    // `as` saturates at u64::MAX for huge floats.
    Some(x as u64)
}

/// A `status` line of `backup --json` or (0.16+) `restore --json` as
/// Progress; `None` if the line is not a status line.
pub(crate) fn status_progress(v: &Value) -> Option<Progress> {
    if message_type(v) != Some("status") {
        return None;
    }
    let percent = v
        .get("percent_done")
        .and_then(Value::as_f64)
        .filter(|p| p.is_finite())
        .map(|p| p.clamp(0.0, 1.0));
    let current_files = v
        .get("current_files")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .take(16)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Progress {
        percent_done: Some(percent.unwrap_or(0.0)),
        bytes_done: u64_field(v, "bytes_done")
            .or_else(|| u64_field(v, "bytes_restored"))
            .or(Some(0)),
        total_bytes: u64_field(v, "total_bytes"),
        files_done: u64_field(v, "files_done")
            .or_else(|| u64_field(v, "files_restored"))
            .or(Some(0)),
        total_files: u64_field(v, "total_files"),
        seconds_remaining: u64_field(v, "seconds_remaining"),
        current_files,
        ..Progress::default()
    })
}

/// A stderr JSON line rendered as text: per-file `error` lines and 0.18's
/// `exit_error`. `None` for other JSON.
pub(crate) fn stderr_json_text(v: &Value) -> Option<String> {
    match message_type(v)? {
        "exit_error" => Some(
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or("restic exited with an error")
                .to_owned(),
        ),
        "error" => {
            let err = match v.get("error") {
                Some(Value::String(s)) => s.clone(),
                Some(e) => match e.get("message").and_then(Value::as_str) {
                    Some(m) => m.to_owned(),
                    None => render_raw_error(e),
                },
                None => String::from("error"),
            };
            let item = v.get("item").and_then(Value::as_str).unwrap_or("");
            let during = v.get("during").and_then(Value::as_str).unwrap_or("");
            let mut s = String::from("error");
            if !during.is_empty() {
                s.push_str(&format!(" during {during}"));
            }
            if !item.is_empty() {
                s.push_str(&format!(" on {item}"));
            }
            s.push_str(": ");
            s.push_str(&err);
            Some(s)
        }
        _ => None,
    }
}

/// 0.14 prints Go's raw error structs (`{"Op":"read","Path":..,"Err":5}`)
/// or `{}`.
fn render_raw_error(e: &Value) -> String {
    let op = e.get("Op").and_then(Value::as_str);
    let path = e.get("Path").and_then(Value::as_str);
    let errno = e.get("Err").and_then(Value::as_i64);
    match (op, path, errno) {
        (Some(op), Some(path), Some(n)) => format!("{op} {path}: errno {n}"),
        (Some(op), Some(path), None) => format!("{op} {path} failed"),
        _ if e.as_object().is_some_and(|o| o.is_empty()) => "unknown error".to_owned(),
        _ => e.to_string(),
    }
}

/// 0.18's `{"message_type":"exit_error","code":N,"message":"..."}`.
pub(crate) fn exit_error(v: &Value) -> Option<(Option<i64>, String)> {
    if message_type(v) != Some("exit_error") {
        return None;
    }
    let msg = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Some((v.get("code").and_then(Value::as_i64), msg))
}

/// Parses `restic version` output such as
/// `restic 0.14.0 compiled with go1.19.8 on linux/amd64` or
/// `restic 0.17.0-dev (compiled manually) compiled with ...`.
pub(crate) fn version(output: &str) -> Option<Version> {
    let mut words = output.split_whitespace();
    while let Some(w) = words.next() {
        if w != "restic" {
            continue;
        }
        let Some(v) = words.next() else { break };
        let v = v.trim_start_matches('v');
        let mut parts = v.splitn(3, '.');
        let num = |s: Option<&str>| -> Option<u32> {
            let s = s?;
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let major = num(parts.next());
        let minor = num(parts.next());
        let patch = num(parts.next());
        if let (Some(major), Some(minor)) = (major, minor) {
            return Some(Version {
                major,
                minor,
                patch: patch.unwrap_or(0),
            });
        }
    }
    None
}

/// Normalises a snapshot-internal directory path: leading `/`, no trailing
/// `/` (except the root itself).
pub(crate) fn normalize_dir(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_owned();
    }
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// A `node` line of `ls --json` as an entry if it is a direct child of
/// `dir` (already normalised).
pub(crate) fn ls_child(v: &Value, dir: &str) -> Option<LsEntry> {
    if message_type(v) != Some("node") {
        return None;
    }
    let path = v.get("path").and_then(Value::as_str)?;
    if path == dir || parent_of(path) != dir {
        return None;
    }
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_owned());
    Some(LsEntry {
        name,
        kind: v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        path: path.to_owned(),
        size: u64_field(v, "size"),
        mtime: v.get("mtime").and_then(Value::as_str).map(str::to_owned),
    })
}

/// The repository id of an `init --json` line (0.15+).
pub(crate) fn init_id(v: &Value) -> Option<String> {
    if message_type(v) != Some("initialized") {
        return None;
    }
    v.get("id").and_then(Value::as_str).map(str::to_owned)
}

/// The repository id of `cat config` output (pretty-printed JSON).
pub(crate) fn config_id(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    v.get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A lock as `restic cat lock ID --no-lock` prints it (pretty JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockInfo {
    pub hostname: String,
    pub pid: i64,
}

pub(crate) fn lock_info(text: &str) -> Option<LockInfo> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    Some(LockInfo {
        hostname: v
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        pid: v.get("pid").and_then(Value::as_i64).unwrap_or(0),
    })
}

/// Removes terminal escape sequences (restic prints `ESC[2K` before some
/// messages) and other control characters but tabs.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // parameters and intermediates, then one final byte
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
    }
    out
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions() {
        let v = version("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n").unwrap();
        assert_eq!(
            v,
            Version {
                major: 0,
                minor: 14,
                patch: 0
            }
        );
        let v = version("restic 0.17.0-dev (compiled manually) compiled with go1.22").unwrap();
        assert_eq!(
            v,
            Version {
                major: 0,
                minor: 17,
                patch: 0
            }
        );
        let v = version("restic 0.18.1 compiled with go1.24.4 on linux/amd64").unwrap();
        assert_eq!(
            v,
            Version {
                major: 0,
                minor: 18,
                patch: 1
            }
        );
        assert!(version("rustic 0.9").is_none());
        assert!(version("restic").is_none());
        assert!(version("restic x.y.z").is_none());
        assert!(
            Version {
                major: 0,
                minor: 9,
                patch: 9
            } < Version {
                major: 0,
                minor: 14,
                patch: 0
            }
        );
    }

    #[test]
    fn status_line_with_huge_seconds_remaining() {
        let v = json_line(
            r#"{"message_type":"status","seconds_remaining":9223372036854775808,"percent_done":0.5,"total_files":5,"total_bytes":100,"bytes_done":50,"current_files":["/a"]}"#,
        )
        .unwrap();
        let p = status_progress(&v).unwrap();
        assert_eq!(p.seconds_remaining, Some(9_223_372_036_854_775_808));
        assert_eq!(p.percent_done, Some(0.5));
        assert_eq!(p.bytes_done, Some(50));
        assert_eq!(p.total_bytes, Some(100));
        assert_eq!(p.files_done, Some(0));
        assert_eq!(p.current_files, vec!["/a".to_owned()]);
        // float seconds, everything else omitted
        let v = json!({"message_type":"status","seconds_remaining": 1.0e20});
        let p = status_progress(&v).unwrap();
        assert_eq!(p.seconds_remaining, Some(u64::MAX));
        assert_eq!(p.percent_done, Some(0.0));
        assert!(status_progress(&json!({"message_type":"summary"})).is_none());
    }

    #[test]
    fn non_json_lines_are_skipped() {
        assert!(json_line("Fatal: wrong password").is_none());
        assert!(json_line("{not json").is_none());
        assert!(json_line("").is_none());
        assert!(json_line("  {\"a\":1}  ").is_some());
    }

    #[test]
    fn stderr_errors_render() {
        let v014 = json!({"message_type":"error","error":{"Op":"read","Path":"/proc/self/mem","Err":5},"during":"archival","item":"/proc/self/mem"});
        assert_eq!(
            stderr_json_text(&v014).unwrap(),
            "error during archival on /proc/self/mem: read /proc/self/mem: errno 5"
        );
        let v171 = json!({"message_type":"error","error":{"message":"open /x: permission denied"},"during":"scan","item":"/x"});
        assert_eq!(
            stderr_json_text(&v171).unwrap(),
            "error during scan on /x: open /x: permission denied"
        );
        let empty = json!({"message_type":"error","error":{},"item":"/y"});
        assert_eq!(
            stderr_json_text(&empty).unwrap(),
            "error on /y: unknown error"
        );
        let exit = json!({"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"});
        assert_eq!(
            stderr_json_text(&exit).unwrap(),
            "Fatal: wrong password or no key found"
        );
        assert_eq!(
            exit_error(&exit),
            Some((Some(12), "Fatal: wrong password or no key found".into()))
        );
        assert!(stderr_json_text(&json!({"message_type":"status"})).is_none());
    }

    #[test]
    fn ls_children_only() {
        let dir = normalize_dir("/data/");
        assert_eq!(dir, "/data");
        assert_eq!(normalize_dir(""), "/");
        assert_eq!(normalize_dir("data/x"), "/data/x");
        let snap = json!({"struct_type":"snapshot","paths":["/data"]});
        assert!(ls_child(&snap, &dir).is_none());
        let me = json!({"name":"data","type":"dir","path":"/data","struct_type":"node"});
        assert!(ls_child(&me, &dir).is_none());
        let child = json!({"name":"a","type":"file","path":"/data/a","size":3,"mtime":"2024-01-01T00:00:00Z","struct_type":"node"});
        let e = ls_child(&child, &dir).unwrap();
        assert_eq!(
            (e.name.as_str(), e.kind.as_str(), e.size),
            ("a", "file", Some(3))
        );
        let grandchild =
            json!({"name":"b","type":"file","path":"/data/sub/b","struct_type":"node"});
        assert!(ls_child(&grandchild, &dir).is_none());
        // 0.17+: message_type, no size on dirs
        let v017 = json!({"name":"sub","type":"dir","path":"/data/sub","message_type":"node","struct_type":"node"});
        let e = ls_child(&v017, &dir).unwrap();
        assert_eq!((e.kind.as_str(), e.size), ("dir", None));
        let top = json!({"name":"data","type":"dir","path":"/data","message_type":"node"});
        assert_eq!(ls_child(&top, "/").unwrap().name, "data");
    }

    #[test]
    fn config_and_lock() {
        let cfg =
            "{\n  \"version\": 2,\n  \"id\": \"3998ca\",\n  \"chunker_polynomial\": \"34db\"\n}\n";
        assert_eq!(config_id(cfg).as_deref(), Some("3998ca"));
        assert!(config_id("garbage").is_none());
        let lock = "{\n \"time\": \"2026-01-01T00:00:00Z\", \"exclusive\": false, \"hostname\": \"vm\", \"username\": \"root\", \"pid\": 14926\n}";
        assert_eq!(
            lock_info(lock),
            Some(LockInfo {
                hostname: "vm".into(),
                pid: 14926
            })
        );
        let init = json!({"message_type":"initialized","id":"cba1","repository":"/r"});
        assert_eq!(init_id(&init).as_deref(), Some("cba1"));
    }

    #[test]
    fn cleans_escapes() {
        assert_eq!(
            clean("\u{1b}[2Ksignal interrupt received"),
            "signal interrupt received"
        );
        assert_eq!(clean("a\tb\u{7}c"), "a\tbc");
        assert_eq!(clean("plain"), "plain");
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("héllo".into(), 2), "h…");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}
