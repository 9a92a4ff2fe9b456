//! restic command lines per job kind. Flags take the `--flag=value` form
//! and positional arguments follow `--`, so user-supplied values can never
//! be read as flags. Secrets never appear here (they go in the
//! environment and the password file).

use rm_bus::msg::{JobParams, RestoreTarget, Retention, StatsMode};

/// Why a job's parameters cannot be turned into a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid(pub String);

fn flag(name: &str, value: &str) -> String {
    format!("--{name}={value}")
}

fn non_empty(what: &str, v: &str) -> Result<(), Invalid> {
    if v.trim().is_empty() {
        return Err(Invalid(format!("{what} must not be empty")));
    }
    if v.contains('\0') {
        return Err(Invalid(format!("{what} must not contain NUL")));
    }
    Ok(())
}

/// The `--keep-*` flags of a retention policy; at least one, or forget
/// would remove everything.
fn keep_args(r: &Retention, a: &mut Vec<String>) -> Result<(), Invalid> {
    let counts = [
        ("keep-last", r.keep_last),
        ("keep-hourly", r.keep_hourly),
        ("keep-daily", r.keep_daily),
        ("keep-weekly", r.keep_weekly),
        ("keep-monthly", r.keep_monthly),
        ("keep-yearly", r.keep_yearly),
    ];
    let mut any = false;
    for (name, v) in counts {
        // restic treats 0 as "not set" (and -1 as unlimited on 0.17+).
        if let Some(n) = v.filter(|n| *n > 0) {
            a.push(flag(name, &n.to_string()));
            any = true;
        }
    }
    if let Some(w) = r.keep_within.as_deref().filter(|w| !w.trim().is_empty()) {
        if !w.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Invalid(format!(
                "keep_within {w:?} is not a restic duration such as 1y6m"
            )));
        }
        a.push(flag("keep-within", w));
        any = true;
    }
    if !any {
        return Err(Invalid(
            "forget needs at least one keep-* retention option (restic refuses to forget everything)".into(),
        ));
    }
    Ok(())
}

/// The restic arguments for one job (without global flags such as
/// `--cache-dir`).
pub(crate) fn job_args(params: &JobParams) -> Result<Vec<String>, Invalid> {
    let mut a: Vec<String> = Vec::new();
    match params {
        JobParams::Backup {
            paths,
            excludes,
            tags,
            one_file_system,
            host_name,
        } => {
            if paths.is_empty() {
                return Err(Invalid("a backup needs at least one path".into()));
            }
            a.extend(["backup".into(), "--json".into()]);
            for e in excludes {
                non_empty("an exclude pattern", e)?;
                a.push(flag("exclude", e));
            }
            for t in tags {
                non_empty("a tag", t)?;
                a.push(flag("tag", t));
            }
            if *one_file_system {
                a.push("--one-file-system".into());
            }
            if let Some(h) = host_name {
                non_empty("the host name", h)?;
                a.push(flag("host", h));
            }
            a.push("--".into());
            for p in paths {
                non_empty("a backup path", p)?;
                a.push(p.clone());
            }
        }
        JobParams::Forget {
            retention: r,
            host_name,
            prune,
        } => {
            non_empty("forget's host name", host_name)?;
            a.extend(["forget".into(), "--json".into(), flag("host", host_name)]);
            keep_args(r, &mut a)?;
            if *prune {
                a.push("--prune".into());
            }
        }
        JobParams::ForgetPreview {
            retention: r,
            host_name,
        } => {
            non_empty("the preview's host name", host_name)?;
            // the same scope and policy as the real forget; --no-lock is
            // allowed with --dry-run, so an append-only credential can
            // preview too
            a.extend([
                "forget".into(),
                "--json".into(),
                "--dry-run".into(),
                "--no-lock".into(),
                flag("host", host_name),
            ]);
            keep_args(r, &mut a)?;
        }
        JobParams::Prune {} => a.push("prune".into()),
        JobParams::Locks {} => a.extend(["list".into(), "locks".into(), "--no-lock".into()]),
        JobParams::Check { read_data_subset } => {
            a.extend(["check".into(), "--json".into()]);
            if let Some(s) = read_data_subset.as_deref().filter(|s| !s.trim().is_empty()) {
                if s.starts_with('-') {
                    return Err(Invalid(format!("read_data_subset {s:?} is invalid")));
                }
                a.push(flag("read-data-subset", s));
            }
        }
        JobParams::Unlock { remove_all } => {
            a.push("unlock".into());
            if *remove_all {
                a.push("--remove-all".into());
            }
        }
        JobParams::Snapshots { host_name } => {
            a.extend(["snapshots".into(), "--json".into()]);
            if let Some(h) = host_name {
                non_empty("the host name", h)?;
                a.push(flag("host", h));
            }
        }
        JobParams::Stats { mode, snapshot } => {
            let mode = match mode {
                StatsMode::RestoreSize => "restore-size",
                StatsMode::RawData => "raw-data",
                StatsMode::Unknown => return Err(Invalid("unknown stats mode".into())),
            };
            a.extend(["stats".into(), "--json".into(), flag("mode", mode)]);
            if let Some(s) = snapshot {
                non_empty("the snapshot id", s)?;
                a.push("--".into());
                a.push(s.clone());
            }
        }
        JobParams::Diff { from, to } => {
            non_empty("diff's first snapshot id", from)?;
            non_empty("diff's second snapshot id", to)?;
            a.extend([
                "diff".into(),
                "--json".into(),
                "--".into(),
                from.clone(),
                to.clone(),
            ]);
        }
        JobParams::Restore {
            snapshot,
            include,
            target,
        } => {
            non_empty("the snapshot id", snapshot)?;
            let target = match target {
                RestoreTarget::Original => "/",
                RestoreTarget::Path { path } => {
                    non_empty("the restore target", path)?;
                    path.as_str()
                }
            };
            a.extend(["restore".into(), "--json".into(), flag("target", target)]);
            for i in include {
                non_empty("an include path", i)?;
                a.push(flag("include", i));
            }
            a.push("--".into());
            a.push(snapshot.clone());
        }
        JobParams::Unknown => return Err(Invalid("unknown job kind".into())),
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn backup() {
        let p = JobParams::Backup {
            paths: s(&["/data", "-weird"]),
            excludes: s(&["*.tmp"]),
            tags: s(&["daily"]),
            one_file_system: true,
            host_name: Some("web-1".into()),
        };
        assert_eq!(
            job_args(&p).unwrap(),
            s(&[
                "backup",
                "--json",
                "--exclude=*.tmp",
                "--tag=daily",
                "--one-file-system",
                "--host=web-1",
                "--",
                "/data",
                "-weird"
            ])
        );
        let empty = JobParams::Backup {
            paths: vec![],
            excludes: vec![],
            tags: vec![],
            one_file_system: false,
            host_name: None,
        };
        assert!(job_args(&empty).is_err());
    }

    #[test]
    fn forget_always_has_host_and_a_keep() {
        let r = Retention {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_within: Some("1y6m".into()),
            ..Retention::default()
        };
        let p = JobParams::Forget {
            retention: r,
            host_name: "web-1".into(),
            prune: true,
        };
        assert_eq!(
            job_args(&p).unwrap(),
            s(&[
                "forget",
                "--json",
                "--host=web-1",
                "--keep-last=3",
                "--keep-daily=7",
                "--keep-within=1y6m",
                "--prune"
            ])
        );
        let none = JobParams::Forget {
            retention: Retention::default(),
            host_name: "web-1".into(),
            prune: false,
        };
        assert!(job_args(&none).unwrap_err().0.contains("keep-*"));
        let zero = JobParams::Forget {
            retention: Retention {
                keep_last: Some(0),
                ..Retention::default()
            },
            host_name: "web-1".into(),
            prune: false,
        };
        assert!(job_args(&zero).is_err());
        let nohost = JobParams::Forget {
            retention: Retention {
                keep_last: Some(1),
                ..Retention::default()
            },
            host_name: " ".into(),
            prune: false,
        };
        assert!(job_args(&nohost).is_err());
        let bad_within = JobParams::Forget {
            retention: Retention {
                keep_within: Some("--all".into()),
                ..Retention::default()
            },
            host_name: "h".into(),
            prune: false,
        };
        assert!(job_args(&bad_within).is_err());
    }

    #[test]
    fn forget_preview_is_a_dry_run_with_the_same_scope_and_policy() {
        let r = Retention {
            keep_last: Some(2),
            keep_within: Some("7d".into()),
            ..Retention::default()
        };
        let p = JobParams::ForgetPreview {
            retention: r,
            host_name: "web-1".into(),
        };
        assert_eq!(
            job_args(&p).unwrap(),
            s(&[
                "forget",
                "--json",
                "--dry-run",
                "--no-lock",
                "--host=web-1",
                "--keep-last=2",
                "--keep-within=7d"
            ])
        );
        let none = JobParams::ForgetPreview {
            retention: Retention::default(),
            host_name: "web-1".into(),
        };
        assert!(job_args(&none).unwrap_err().0.contains("keep-*"));
        let nohost = JobParams::ForgetPreview {
            retention: Retention {
                keep_last: Some(1),
                ..Retention::default()
            },
            host_name: "".into(),
        };
        assert!(job_args(&nohost).is_err());
    }

    #[test]
    fn other_kinds() {
        assert_eq!(job_args(&JobParams::Prune {}).unwrap(), s(&["prune"]));
        assert_eq!(
            job_args(&JobParams::Check {
                read_data_subset: Some("5%".into())
            })
            .unwrap(),
            s(&["check", "--json", "--read-data-subset=5%"])
        );
        assert_eq!(
            job_args(&JobParams::Check {
                read_data_subset: None
            })
            .unwrap(),
            s(&["check", "--json"])
        );
        assert_eq!(
            job_args(&JobParams::Unlock { remove_all: true }).unwrap(),
            s(&["unlock", "--remove-all"])
        );
        assert_eq!(
            job_args(&JobParams::Unlock { remove_all: false }).unwrap(),
            s(&["unlock"])
        );
        assert_eq!(
            job_args(&JobParams::Snapshots {
                host_name: Some("h".into())
            })
            .unwrap(),
            s(&["snapshots", "--json", "--host=h"])
        );
        assert_eq!(
            job_args(&JobParams::Stats {
                mode: StatsMode::RawData,
                snapshot: Some("abc".into())
            })
            .unwrap(),
            s(&["stats", "--json", "--mode=raw-data", "--", "abc"])
        );
        assert!(
            job_args(&JobParams::Stats {
                mode: StatsMode::Unknown,
                snapshot: None
            })
            .is_err()
        );
        assert_eq!(
            job_args(&JobParams::Diff {
                from: "a".into(),
                to: "b".into()
            })
            .unwrap(),
            s(&["diff", "--json", "--", "a", "b"])
        );
        assert_eq!(
            job_args(&JobParams::Restore {
                snapshot: "abc".into(),
                include: s(&["/data/x"]),
                target: RestoreTarget::Path {
                    path: "/restore".into()
                }
            })
            .unwrap(),
            s(&[
                "restore",
                "--json",
                "--target=/restore",
                "--include=/data/x",
                "--",
                "abc"
            ])
        );
        assert_eq!(
            job_args(&JobParams::Restore {
                snapshot: "abc".into(),
                include: vec![],
                target: RestoreTarget::Original
            })
            .unwrap(),
            s(&["restore", "--json", "--target=/", "--", "abc"])
        );
        assert!(job_args(&JobParams::Unknown).is_err());
    }
}
