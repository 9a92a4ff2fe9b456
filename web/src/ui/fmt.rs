//! How numbers and times read on every page (UI.md "Numbers"): bytes in
//! binary units with one decimal, durations as `2 m 13 s`, relative times
//! with the absolute time in a `title` and a `<time datetime>`.
//!
//! Functions returning HTML build it from numbers and fixed words only, so
//! templates may mark their output `|safe`.

/// An integer figure (bytes, milliseconds), owned or borrowed — templates
/// pass references.
pub trait Int {
    fn get(&self) -> i64;
}
impl Int for i64 {
    fn get(&self) -> i64 {
        *self
    }
}
impl<T: Int + ?Sized> Int for &T {
    fn get(&self) -> i64 {
        (**self).get()
    }
}

/// An optional integer figure, owned or borrowed.
pub trait OptInt {
    fn get(&self) -> Option<i64>;
}
impl OptInt for Option<i64> {
    fn get(&self) -> Option<i64> {
        *self
    }
}
impl<T: OptInt + ?Sized> OptInt for &T {
    fn get(&self) -> Option<i64> {
        (**self).get()
    }
}

/// Whether two strings are equal (for templates, which compare references).
pub fn same(a: impl AsRef<str>, b: impl AsRef<str>) -> bool {
    a.as_ref() == b.as_ref()
}

/// `1.4 GiB`; bytes below 1 KiB as `512 B`.
pub fn bytes(n: impl Int) -> String {
    let n = n.get();
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `bytes` for an optional figure; `—` when unknown.
pub fn opt_bytes(n: impl OptInt) -> String {
    n.get().map_or_else(|| "—".to_owned(), bytes)
}

/// `2 m 13 s`, `3 h 5 m`, `2 d 4 h`, `40 s`.
pub fn duration_secs(secs: impl Int) -> String {
    let s = secs.get().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} m", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `3 h ago` / `in 12 h` / `just now`, the coarse unit only.
pub fn relative(now_ms: i64, at_ms: i64) -> String {
    let delta = (now_ms - at_ms) / 1000;
    let (future, s) = if delta < 0 {
        (true, -delta)
    } else {
        (false, delta)
    };
    if s < 10 {
        return if future {
            "in a few s".into()
        } else {
            "just now".into()
        };
    }
    let amount = match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// `2026-12-01 14:03:07 UTC`.
pub fn absolute(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| "—".into())
}

/// RFC 3339 for `<time datetime>`.
pub fn iso(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `<time datetime=… title=…>3 h ago</time>`; the script keeps the words fresh.
pub fn time_html(now_ms: impl Int, at_ms: impl Int) -> String {
    let (now_ms, at_ms) = (now_ms.get(), at_ms.get());
    format!(
        r#"<time datetime="{}" title="{}" data-rel>{}</time>"#,
        iso(at_ms),
        absolute(at_ms),
        relative(now_ms, at_ms)
    )
}

/// The server's IANA time zone name (`UTC` when it has none): what a form
/// reads a wall-clock time in when the browser did not say its own.
pub fn server_zone() -> String {
    jiff::tz::TimeZone::system()
        .iana_name()
        .unwrap_or("UTC")
        .to_owned()
}

/// `<time datetime=… data-local>2026-12-01 23:00 UTC</time>`: an absolute
/// time in the server's zone, which the script rewrites in the browser's.
pub fn local_time_html(at_ms: impl Int) -> String {
    let at_ms = at_ms.get();
    let zone_name = server_zone();
    let shown = match (
        jiff::Timestamp::from_millisecond(at_ms),
        jiff::tz::TimeZone::get(&zone_name),
    ) {
        (Ok(t), Ok(z)) => format!("{} {zone_name}", t.to_zoned(z).strftime("%Y-%m-%d %H:%M")),
        _ => absolute(at_ms),
    };
    format!(
        r#"<time datetime="{}" data-local>{shown}</time>"#,
        iso(at_ms)
    )
}

/// `time_html`, or `—` in muted text when there is no time.
pub fn opt_time_html(now_ms: impl Int, at_ms: impl OptInt) -> String {
    let now_ms = now_ms.get();
    at_ms.get().map_or_else(
        || r#"<span class="muted">—</span>"#.to_owned(),
        |t| time_html(now_ms, t),
    )
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_with_one_decimal() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1_503_238_553), "1.4 GiB");
        assert_eq!(opt_bytes(None), "—");
    }

    #[test]
    fn durations_read_as_two_units() {
        assert_eq!(duration_secs(40), "40 s");
        assert_eq!(duration_secs(133), "2 m 13 s");
        assert_eq!(duration_secs(3 * 3600 + 5 * 60), "3 h 5 m");
        assert_eq!(duration_secs(2 * 86_400 + 4 * 3600), "2 d 4 h");
    }

    #[test]
    fn relative_times_say_ago_or_in() {
        let now = 1_000_000_000_000;
        assert_eq!(relative(now, now - 3 * 3_600_000), "3 h ago");
        assert_eq!(relative(now, now + 12 * 3_600_000), "in 12 h");
        assert_eq!(relative(now, now - 2_000), "just now");
        assert!(time_html(now, now).contains("datetime=\"2001-09-09T01:46:40Z\""));
    }
}
