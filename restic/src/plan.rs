//! The retention preview: `restic forget --dry-run --json`'s groups read
//! into a [`RetentionPlan`] that is the same whatever restic version
//! printed it (0.14's keep reasons name no snapshot id; 0.18's do).

use rm_bus::msg::{PlannedSnapshot, RetentionPlan};
use serde_json::Value;

/// Unix milliseconds of an RFC 3339 time as restic prints it
/// (`2026-12-01T18:09:24.012269229Z`, or with a `+01:00` offset).
pub(crate) fn rfc3339_ms(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &t[19..];
    let mut ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        let frac = &f[..digits];
        ms = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
        rest = &f[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let v = num(t.len() - 5..t.len() - 3)? * 60 + num(t.len() - 2..t.len())?;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // days from the civil date (Howard Hinnant's algorithm)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    Some(secs * 1000 + ms)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The plan in `restic forget --dry-run --json`'s array of groups
/// (`{host, paths, tags, keep, remove, reasons}`): every snapshot, newest
/// first, kept or removed, with the keep reasons. 0.14's reasons carry the
/// snapshot without its id, so a reason is matched to its kept snapshot by
/// id when present, else by time and tree.
pub(crate) fn retention_plan(doc: &Value) -> Option<RetentionPlan> {
    let groups = doc.as_array()?;
    let mut out = Vec::new();
    for g in groups {
        let reasons: Vec<&Value> = g
            .get("reasons")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for (list, keep) in [("keep", true), ("remove", false)] {
            let Some(snaps) = g.get(list).and_then(Value::as_array) else {
                continue;
            };
            for s in snaps {
                let id = str_of(s, "id");
                if id.is_empty() {
                    continue;
                }
                let why = if keep {
                    reasons
                        .iter()
                        .find(|r| {
                            let rs = r.get("snapshot").unwrap_or(&Value::Null);
                            let rid = str_of(rs, "id");
                            if rid.is_empty() {
                                str_of(rs, "time") == str_of(s, "time")
                                    && str_of(rs, "tree") == str_of(s, "tree")
                            } else {
                                rid == id
                            }
                        })
                        .map(|r| strings(r.get("matches")))
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let time = str_of(s, "time").to_owned();
                let short = str_of(s, "short_id");
                out.push(PlannedSnapshot {
                    id: id.to_owned(),
                    short_id: if short.is_empty() {
                        id.chars().take(8).collect()
                    } else {
                        short.to_owned()
                    },
                    time_ms: rfc3339_ms(&time),
                    time,
                    hostname: str_of(s, "hostname").to_owned(),
                    paths: strings(s.get("paths")),
                    tags: strings(s.get("tags")),
                    keep,
                    reasons: why,
                });
            }
        }
    }
    out.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then_with(|| a.id.cmp(&b.id)));
    Some(RetentionPlan { snapshots: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from real `restic forget --dry-run --json --keep-last 2
    /// --keep-daily 1` output of 0.14.0: the reasons' snapshots have no id.
    const V014: &str = r#"[{"tags":null,"host":"hostA","paths":["/d"],"keep":[{"time":"2026-12-01T18:09:24.012269229Z","tree":"f324","paths":["/d"],"hostname":"hostA","tags":["t4"],"id":"00dcbe9c96ec","short_id":"00dcbe9c"},{"time":"2026-12-01T18:09:23.209681249Z","tree":"3558","paths":["/d"],"hostname":"hostA","tags":["t3"],"id":"1567b8a2d97b","short_id":"1567b8a2"}],"remove":[{"time":"2026-12-01T18:09:22.368311587Z","tree":"3022","paths":["/d"],"hostname":"hostA","tags":["t2"],"id":"e54873330a89","short_id":"e5487333"}],"reasons":[{"snapshot":{"time":"2026-12-01T18:09:24.012269229Z","tree":"f324","paths":["/d"],"hostname":"hostA","tags":["t4"]},"matches":["last snapshot","daily snapshot"],"counters":{"last":1}},{"snapshot":{"time":"2026-12-01T18:09:23.209681249Z","tree":"3558","paths":["/d"],"hostname":"hostA","tags":["t3"]},"matches":["last snapshot"],"counters":{}}]}]"#;

    /// The same from 0.18.0: reasons carry the id (and no counters), the
    /// kept order differs from the reasons' order here on purpose.
    const V018: &str = r#"[{"tags":null,"host":"hostA","paths":["/d"],"keep":[{"time":"2026-12-01T18:09:29.556654608Z","tree":"6608","paths":["/d"],"hostname":"hostA","tags":["t4"],"program_version":"restic 0.18.0","id":"3239bede06c9","short_id":"3239bede"},{"time":"2026-12-01T18:09:29.083204329Z","tree":"dce9","paths":["/d"],"hostname":"hostA","id":"722782fa7093","short_id":"722782fa"}],"remove":null,"reasons":[{"snapshot":{"time":"2026-12-01T18:09:29.083204329Z","tree":"dce9","id":"722782fa7093","short_id":"722782fa"},"matches":["last snapshot"]},{"snapshot":{"time":"2026-12-01T18:09:29.556654608Z","tree":"6608","id":"3239bede06c9","short_id":"3239bede"},"matches":["last snapshot","daily snapshot"]}]}]"#;

    #[test]
    fn plan_from_014_matches_reasons_by_time_and_tree() {
        let plan = retention_plan(&serde_json::from_str(V014).unwrap()).unwrap();
        let s = &plan.snapshots;
        assert_eq!(s.len(), 3);
        assert_eq!((plan.kept(), plan.removed()), (2, 1));
        assert_eq!(s[0].short_id, "00dcbe9c");
        assert_eq!(s[0].reasons, ["last snapshot", "daily snapshot"]);
        assert_eq!(s[1].reasons, ["last snapshot"]);
        assert!(!s[2].keep && s[2].reasons.is_empty());
        assert_eq!(s[2].tags, ["t2"]);
        assert_eq!(s[2].paths, ["/d"]);
        assert!(s[0].time_ms > s[1].time_ms && s[1].time_ms > s[2].time_ms);
    }

    #[test]
    fn plan_from_018_matches_reasons_by_id_and_takes_null_remove() {
        let plan = retention_plan(&serde_json::from_str(V018).unwrap()).unwrap();
        let s = &plan.snapshots;
        assert_eq!((plan.kept(), plan.removed()), (2, 0));
        assert_eq!(s[0].id, "3239bede06c9");
        assert_eq!(s[0].reasons, ["last snapshot", "daily snapshot"]);
        assert_eq!(s[1].reasons, ["last snapshot"]);
        assert!(s[1].tags.is_empty());
    }

    #[test]
    fn rfc3339_times_with_fractions_and_offsets() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            rfc3339_ms("2026-12-01T19:09:24.012269229+01:00"),
            rfc3339_ms("2026-12-01T18:09:24.012Z")
        );
        assert_eq!(rfc3339_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}
