//! Run an operation on a host (`/hosts/<id>/run`): one form per restic
//! operation with its own parameters. The form's values are parsed into
//! the same `JobParams` the API takes; a bad value re-renders the form with
//! the field's error and the operator's input kept. Destructive and
//! expensive operations (forget, prune, unlock, check with read-data) need
//! an explicit confirmation naming the target, also without script.

use std::collections::BTreeMap;

use rm_bus::msg::{JobParams, Retention, StatsMode};
use serde::Deserialize;

/// The operations offered, in the order the page lists them.
pub const KINDS: [(&str, &str); 8] = [
    ("backup", "Back up"),
    ("snapshots", "Refresh snapshots"),
    ("stats", "Statistics"),
    ("check", "Check"),
    ("diff", "Compare snapshots"),
    ("forget", "Forget (retention)"),
    ("prune", "Prune"),
    ("unlock", "Unlock"),
];

/// Every field any operation's form has; absent ones are empty.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RunForm {
    pub kind: String,
    pub repo_id: String,
    /// One path per line.
    pub paths: String,
    /// One pattern per line.
    pub excludes: String,
    /// Comma-separated.
    pub tags: String,
    pub one_file_system: Option<String>,
    pub keep_last: String,
    pub keep_hourly: String,
    pub keep_daily: String,
    pub keep_weekly: String,
    pub keep_monthly: String,
    pub keep_yearly: String,
    pub keep_within: String,
    pub prune: Option<String>,
    pub read_data_subset: String,
    pub stats_mode: String,
    pub from: String,
    pub to: String,
    /// Minutes; empty = the kind's default.
    pub timeout_minutes: String,
    /// The confirmation checkbox of destructive operations.
    pub confirm: Option<String>,
}

/// Field errors, by field name (looked up with any string-like key, as
/// templates pass references).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(BTreeMap<&'static str, String>);

impl Errors {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, field: &'static str, message: String) {
        self.0.insert(field, message);
    }
    pub fn contains_key(&self, field: impl AsRef<str>) -> bool {
        self.0.contains_key(field.as_ref())
    }
    pub fn get(&self, field: impl AsRef<str>) -> Option<&String> {
        self.0.get(field.as_ref())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn keys(&self) -> impl Iterator<Item = &&'static str> {
        self.0.keys()
    }
}

impl std::ops::Index<&str> for Errors {
    type Output = String;
    fn index(&self, field: &str) -> &String {
        &self.0[field]
    }
}

impl RunForm {
    /// A text field's value by name (for templates that loop over fields).
    pub fn value(&self, field: impl AsRef<str>) -> &str {
        match field.as_ref() {
            "keep_last" => &self.keep_last,
            "keep_hourly" => &self.keep_hourly,
            "keep_daily" => &self.keep_daily,
            "keep_weekly" => &self.keep_weekly,
            "keep_monthly" => &self.keep_monthly,
            "keep_yearly" => &self.keep_yearly,
            "from" => &self.from,
            "to" => &self.to,
            _ => "",
        }
    }
}

/// Whether `kind` changes or reads the whole repository enough to need a
/// confirmation naming the target.
pub fn needs_confirmation(kind: &str, form: &RunForm) -> bool {
    matches!(kind, "forget" | "prune" | "unlock")
        || (kind == "check" && !form.read_data_subset.trim().is_empty())
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn keep(errors: &mut Errors, field: &'static str, v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            errors.insert(field, "a whole number of 1 or more, or empty".into());
            None
        }
    }
}

/// Parses the form into job parameters and a timeout, or field errors.
/// `host_name` is the host's restic `--host` (retention never crosses it).
pub fn parse(form: &RunForm, host_name: &str) -> Result<(JobParams, Option<u64>), Errors> {
    let mut e = Errors::new();
    if form.repo_id.trim().is_empty() {
        e.insert("repo_id", "choose a repository".into());
    }
    let timeout = match form.timeout_minutes.trim() {
        "" => None,
        t => match t.parse::<u64>() {
            Ok(m) if (1..=7 * 24 * 60).contains(&m) => Some(m * 60),
            _ => {
                e.insert(
                    "timeout_minutes",
                    "minutes between 1 and 10080 (a week), or empty for the default".into(),
                );
                None
            }
        },
    };
    let params = match form.kind.as_str() {
        "backup" => {
            let paths = lines(&form.paths);
            if paths.is_empty() {
                e.insert("paths", "at least one path to back up".into());
            }
            if let Some(p) = paths.iter().find(|p| p.contains('\0')) {
                e.insert("paths", format!("{p:?} is not a valid path"));
            }
            JobParams::Backup {
                paths,
                excludes: lines(&form.excludes),
                tags: form
                    .tags
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                one_file_system: form.one_file_system.is_some(),
                host_name: None,
            }
        }
        "forget" => {
            let retention = Retention {
                keep_last: keep(&mut e, "keep_last", &form.keep_last),
                keep_hourly: keep(&mut e, "keep_hourly", &form.keep_hourly),
                keep_daily: keep(&mut e, "keep_daily", &form.keep_daily),
                keep_weekly: keep(&mut e, "keep_weekly", &form.keep_weekly),
                keep_monthly: keep(&mut e, "keep_monthly", &form.keep_monthly),
                keep_yearly: keep(&mut e, "keep_yearly", &form.keep_yearly),
                keep_within: Some(form.keep_within.trim().to_owned()).filter(|s| !s.is_empty()),
            };
            if let Some(w) = &retention.keep_within {
                let ok = w.chars().all(|c| c.is_ascii_digit() || "ymdh".contains(c))
                    && w.chars().any(|c| c.is_ascii_digit());
                if !ok {
                    e.insert(
                        "keep_within",
                        "a restic duration such as 30d, 6m or 1y6m".into(),
                    );
                }
            }
            let any = retention.keep_last.is_some()
                || retention.keep_hourly.is_some()
                || retention.keep_daily.is_some()
                || retention.keep_weekly.is_some()
                || retention.keep_monthly.is_some()
                || retention.keep_yearly.is_some()
                || retention.keep_within.is_some();
            if !any && !e.keys().any(|k| k.starts_with("keep")) {
                e.insert(
                    "keep_last",
                    "set at least one keep rule: without one, forget would remove every snapshot"
                        .into(),
                );
            }
            JobParams::Forget {
                retention,
                host_name: host_name.to_owned(),
                prune: form.prune.is_some(),
            }
        }
        "prune" => JobParams::Prune {},
        "check" => {
            let subset = form.read_data_subset.trim();
            let subset = (!subset.is_empty()).then(|| subset.to_owned());
            if let Some(s) = &subset {
                let valid = s
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<f64>().ok())
                    .is_some_and(|p| p > 0.0 && p <= 100.0)
                    || s.split_once('/').is_some_and(|(a, b)| {
                        a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok_and(|b| b > 0)
                    })
                    || s.trim_end_matches(['K', 'M', 'G', 'T'])
                        .parse::<u64>()
                        .is_ok();
                if !valid {
                    e.insert(
                        "read_data_subset",
                        "a percentage (5%), a part (1/10) or a size (500M)".into(),
                    );
                }
            }
            JobParams::Check {
                read_data_subset: subset,
            }
        }
        "unlock" => JobParams::Unlock { remove_all: false },
        "snapshots" => JobParams::Snapshots { host_name: None },
        "stats" => JobParams::Stats {
            mode: match form.stats_mode.as_str() {
                "raw-data" => StatsMode::RawData,
                "" | "restore-size" => StatsMode::RestoreSize,
                _ => {
                    e.insert("stats_mode", "restore size or raw data".into());
                    StatsMode::RestoreSize
                }
            },
            snapshot: None,
        },
        "diff" => {
            let (from, to) = (form.from.trim(), form.to.trim());
            for (field, v) in [("from", from), ("to", to)] {
                if v.is_empty() {
                    e.insert(field, "choose a snapshot".into());
                } else if !v.chars().all(|c| c.is_ascii_hexdigit()) {
                    e.insert(field, "a snapshot id (hexadecimal)".into());
                }
            }
            if !from.is_empty() && from == to {
                e.insert("to", "choose a different snapshot than the first".into());
            }
            JobParams::Diff {
                from: from.to_owned(),
                to: to.to_owned(),
            }
        }
        other => {
            e.insert("kind", format!("unknown operation {other:?}"));
            JobParams::Unknown
        }
    };
    if needs_confirmation(&form.kind, form) && form.confirm.is_none() {
        e.insert("confirm", "tick the box to confirm".into());
    }
    if e.is_empty() {
        Ok((params, timeout))
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(kind: &str) -> RunForm {
        RunForm {
            kind: kind.into(),
            repo_id: "r1".into(),
            ..RunForm::default()
        }
    }

    #[test]
    fn backup_takes_paths_per_line_and_tags_by_comma() {
        let f = RunForm {
            paths: " /etc \n\n/srv/my data\n".into(),
            tags: "a, b,".into(),
            ..form("backup")
        };
        let (p, t) = parse(&f, "h1").unwrap();
        assert_eq!(t, None);
        match p {
            JobParams::Backup { paths, tags, .. } => {
                assert_eq!(paths, ["/etc", "/srv/my data"]);
                assert_eq!(tags, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&form("backup"), "h1")
                .unwrap_err()
                .contains_key("paths")
        );
    }

    #[test]
    fn forget_needs_a_rule_a_confirmation_and_stays_on_its_host() {
        let e = parse(
            &RunForm {
                confirm: Some("on".into()),
                ..form("forget")
            },
            "h1",
        )
        .unwrap_err();
        assert!(e["keep_last"].contains("every snapshot"));
        let f = RunForm {
            keep_daily: "7".into(),
            keep_within: "1y6m".into(),
            ..form("forget")
        };
        assert!(parse(&f, "h1").unwrap_err().contains_key("confirm"));
        let f = RunForm {
            confirm: Some("on".into()),
            ..f
        };
        match parse(&f, "h1").unwrap().0 {
            JobParams::Forget {
                host_name,
                retention,
                prune,
            } => {
                assert_eq!(host_name, "h1");
                assert_eq!(retention.keep_daily, Some(7));
                assert!(!prune);
            }
            other => panic!("{other:?}"),
        }
        let bad = RunForm {
            keep_daily: "-1".into(),
            keep_within: "soon".into(),
            confirm: Some("on".into()),
            ..form("forget")
        };
        let e = parse(&bad, "h1").unwrap_err();
        assert!(e.contains_key("keep_daily") && e.contains_key("keep_within"));
    }

    #[test]
    fn unlock_never_removes_all_locks_and_check_subsets_are_validated() {
        let f = RunForm {
            confirm: Some("on".into()),
            ..form("unlock")
        };
        assert_eq!(
            parse(&f, "h").unwrap().0,
            JobParams::Unlock { remove_all: false }
        );
        assert!(
            parse(
                &RunForm {
                    read_data_subset: "lots".into(),
                    confirm: Some("on".into()),
                    ..form("check")
                },
                "h"
            )
            .unwrap_err()
            .contains_key("read_data_subset")
        );
        assert!(
            parse(
                &RunForm {
                    read_data_subset: "5%".into(),
                    confirm: Some("on".into()),
                    ..form("check")
                },
                "h"
            )
            .is_ok()
        );
        assert!(
            parse(&form("check"), "h").is_ok(),
            "a check without read-data needs no confirmation"
        );
    }

    #[test]
    fn diff_needs_two_different_snapshot_ids_and_timeouts_are_bounded() {
        let e = parse(
            &RunForm {
                from: "abc".into(),
                to: "abc".into(),
                ..form("diff")
            },
            "h",
        )
        .unwrap_err();
        assert!(e.contains_key("to"));
        let e = parse(
            &RunForm {
                timeout_minutes: "0".into(),
                ..form("snapshots")
            },
            "h",
        )
        .unwrap_err();
        assert!(e.contains_key("timeout_minutes"));
        assert_eq!(
            parse(
                &RunForm {
                    timeout_minutes: "90".into(),
                    ..form("snapshots")
                },
                "h"
            )
            .unwrap()
            .1,
            Some(5400)
        );
        assert!(
            parse(&form("rm -rf"), "h")
                .unwrap_err()
                .contains_key("kind")
        );
    }
}
