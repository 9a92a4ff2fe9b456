//! The `backup_anomaly` judgement: is a successful backup far from its
//! host's usual? Three figures from restic's backup summary are compared
//! with the same figures of the host's previous successful backups to the
//! same repository, with robust statistics (median and MAD, so one odd
//! backup in the history does not move the usual):
//!
//! - data added (`data_added`) far above the usual: a ransomware symptom
//!   (everything rewritten, encrypted data does not deduplicate);
//! - files changed (`files_new + files_changed`) far above the usual: the
//!   same symptom, seen in file counts;
//! - total size (`total_bytes_processed`) far below the usual: an
//!   exclusion mistake or a vanished mount.
//!
//! "Far" is both relative (beyond `median ± mads × 1.4826 × MAD`, and at
//! least `growth_factor` times the median, or below `(1 − drop_fraction) ×
//! median`) and absolute (a floor in bytes or files), so a host whose
//! backups add almost nothing is not flagged for adding a little. Quiet
//! until `min_history` earlier backups are known. Pure: the rule engine
//! reads the history and raises or resolves.

use serde_json::Value;

/// Thresholds (configuration; see `docs/alerts.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// How many earlier successful backups make the usual.
    pub history: usize,
    /// Quiet until this many earlier backups are known.
    pub min_history: usize,
    /// How many (scaled) MADs away from the median is "far".
    pub mads: f64,
    /// Growth figures must also be at least this many times the median.
    pub growth_factor: f64,
    /// The total size must also have dropped by at least this fraction.
    pub drop_fraction: f64,
    /// Data added below this is never unusual (bytes).
    pub min_added_bytes: i64,
    /// Changed files below this are never unusual.
    pub min_changed_files: i64,
    /// A total-size drop smaller than this is never unusual (bytes).
    pub min_drop_bytes: i64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            history: 20,
            min_history: 5,
            mads: 6.0,
            growth_factor: 4.0,
            drop_fraction: 0.5,
            min_added_bytes: 256 << 20,
            min_changed_files: 1000,
            min_drop_bytes: 256 << 20,
        }
    }
}

/// A backup's figures, from its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    pub added_bytes: Option<i64>,
    pub changed_files: Option<i64>,
    pub total_bytes: Option<i64>,
}

impl Figures {
    /// Reads restic's backup summary (`data_added`, `files_new`,
    /// `files_changed`, `total_bytes_processed`).
    pub fn from_summary(summary: &Value) -> Self {
        let get = |k: &str| summary.get(k).and_then(Value::as_i64);
        Self {
            added_bytes: get("data_added"),
            changed_files: match (get("files_new"), get("files_changed")) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            },
            total_bytes: get("total_bytes_processed"),
        }
    }
}

/// Which figure was unusual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Added,
    Changed,
    TotalDrop,
}

/// What was unusual, with the figure and the usual range.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub figure: Figure,
    pub value: i64,
    pub median: i64,
    /// The lowest and highest usual value in the history (outliers left out).
    pub range: (i64, i64),
    /// How many earlier backups made the usual.
    pub history: usize,
}

impl Finding {
    /// One sentence for the alert.
    pub fn message(&self, repo: &str) -> String {
        let (what, fmt): (&str, fn(i64) -> String) = match self.figure {
            Figure::Added => ("added", bytes),
            Figure::Changed => ("changed", files),
            Figure::TotalDrop => ("backed up a total of", bytes),
        };
        let direction = match self.figure {
            Figure::TotalDrop => "far below",
            _ => "far above",
        };
        let hint = match self.figure {
            Figure::TotalDrop => "an exclusion mistake or a missing mount?",
            _ => "mass changes such as ransomware encrypting files?",
        };
        format!(
            "backup to {repo} {what} {}, {direction} this host's usual {} (range {}–{} over the last {} backups): {hint}",
            fmt(self.value),
            fmt(self.median),
            fmt(self.range.0),
            fmt(self.range.1),
            self.history,
        )
    }
}

fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn files(n: i64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// The median of a sorted, non-empty slice.
fn median(sorted: &[i64]) -> f64 {
    let n = sorted.len();
    #[allow(clippy::cast_precision_loss)]
    if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0
    }
}

/// Median, scaled MAD (≈ σ for normal data), and the usual range: the
/// lowest and highest value within `mads` scaled MADs of the median (an
/// earlier outlier is not part of the usual).
fn stats(values: &[i64], mads: f64) -> Option<(f64, f64, i64, i64)> {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return None;
    }
    let m = median(&v);
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let mut dev: Vec<i64> = v.iter().map(|&x| (x as f64 - m).abs() as i64).collect();
    dev.sort_unstable();
    let mad = 1.4826 * median(&dev);
    #[allow(clippy::cast_precision_loss)]
    let usual = v.iter().filter(|&&x| (x as f64 - m).abs() <= mads * mad);
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (
        usual.clone().min().copied().unwrap_or(m.round() as i64),
        usual.max().copied().unwrap_or(m.round() as i64),
    );
    Some((m, mad, lo, hi))
}

/// Judges `latest` against `history` (earlier successful backups, any
/// order). `None`: usual, or not enough history to tell.
pub fn judge(latest: &Figures, history: &[Figures], cfg: &AnomalyConfig) -> Option<Finding> {
    let pick =
        |f: fn(&Figures) -> Option<i64>| -> Vec<i64> { history.iter().filter_map(f).collect() };
    let checks: [(Figure, Option<i64>, Vec<i64>); 3] = [
        (Figure::Added, latest.added_bytes, pick(|f| f.added_bytes)),
        (
            Figure::Changed,
            latest.changed_files,
            pick(|f| f.changed_files),
        ),
        (
            Figure::TotalDrop,
            latest.total_bytes,
            pick(|f| f.total_bytes),
        ),
    ];
    for (figure, value, past) in checks {
        let Some(value) = value else { continue };
        if past.len() < cfg.min_history.max(1) {
            continue;
        }
        let Some((m, mad, lo, hi)) = stats(&past, cfg.mads) else {
            continue;
        };
        #[allow(clippy::cast_precision_loss)]
        let x = value as f64;
        let unusual = match figure {
            Figure::Added | Figure::Changed => {
                let floor = if figure == Figure::Added {
                    cfg.min_added_bytes
                } else {
                    cfg.min_changed_files
                };
                value >= floor && x > m + cfg.mads * mad && x >= m * cfg.growth_factor
            }
            Figure::TotalDrop => {
                #[allow(clippy::cast_precision_loss)]
                let dropped = m - x >= cfg.min_drop_bytes as f64;
                dropped && x < m - cfg.mads * mad && x <= m * (1.0 - cfg.drop_fraction)
            }
        };
        if unusual {
            #[allow(clippy::cast_possible_truncation)]
            return Some(Finding {
                figure,
                value,
                median: m.round() as i64,
                range: (lo, hi),
                history: past.len(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1 << 20;

    fn cfg() -> AnomalyConfig {
        AnomalyConfig {
            min_added_bytes: 10 * MIB,
            min_changed_files: 100,
            min_drop_bytes: 10 * MIB,
            ..AnomalyConfig::default()
        }
    }

    fn backup(added_mib: i64, changed: i64, total_mib: i64) -> Figures {
        Figures {
            added_bytes: Some(added_mib * MIB),
            changed_files: Some(changed),
            total_bytes: Some(total_mib * MIB),
        }
    }

    /// Ten ordinary nights: 18–22 MiB added, 180–220 files, ~10 GiB.
    fn usual() -> Vec<Figures> {
        (0..10)
            .map(|i| backup(18 + i % 5, 180 + (i % 5) * 10, 10_240 + i))
            .collect()
    }

    #[test]
    fn quiet_without_enough_history() {
        let huge = backup(5_000, 50_000, 10_240);
        assert_eq!(judge(&huge, &[], &cfg()), None, "no history at all");
        assert_eq!(
            judge(&huge, &usual()[..4], &cfg()),
            None,
            "four earlier backups are fewer than min_history (5)"
        );
        assert!(judge(&huge, &usual()[..5], &cfg()).is_some());
    }

    #[test]
    fn a_tenfold_jump_in_added_data_fires_naming_the_figure_and_the_range() {
        let f = judge(&backup(200, 200, 10_250), &usual(), &cfg()).expect("10x the usual");
        assert_eq!(f.figure, Figure::Added);
        assert_eq!(f.value, 200 * MIB);
        assert_eq!(f.median, 20 * MIB);
        assert_eq!(f.range, (18 * MIB, 22 * MIB));
        let msg = f.message("offsite");
        assert!(
            msg.contains("added 200.0 MiB")
                && msg.contains("usual 20.0 MiB")
                && msg.contains("18.0 MiB–22.0 MiB")
                && msg.contains("last 10 backups"),
            "{msg}"
        );
    }

    #[test]
    fn a_tenfold_jump_in_changed_files_fires() {
        let f = judge(&backup(20, 2_000, 10_250), &usual(), &cfg()).expect("10x files");
        assert_eq!(f.figure, Figure::Changed);
        assert!(f.message("r").contains("changed 2000 files"));
    }

    #[test]
    fn a_sharp_drop_in_total_size_fires() {
        let f = judge(&backup(20, 200, 3_000), &usual(), &cfg()).expect("size fell by 70 %");
        assert_eq!(f.figure, Figure::TotalDrop);
        assert!(f.message("r").contains("far below"), "{}", f.message("r"));
    }

    #[test]
    fn ordinary_variation_and_small_absolute_jumps_stay_quiet() {
        for latest in [
            backup(22, 220, 10_300), // within the range
            backup(35, 300, 9_000),  // somewhat more, somewhat less
        ] {
            assert_eq!(judge(&latest, &usual(), &cfg()), None, "{latest:?}");
        }
        // A host that adds ~0 bytes a night: 5 MiB is 1000x, but under the floor.
        let idle: Vec<Figures> = (0..10).map(|_| backup(0, 1, 100)).collect();
        assert_eq!(judge(&backup(5, 50, 100), &idle, &cfg()), None);
    }

    #[test]
    fn one_odd_backup_in_the_history_does_not_move_the_usual() {
        let mut history = usual();
        history.push(backup(2_000, 200, 10_240)); // last week's anomaly
        let f = judge(&backup(200, 200, 10_240), &history, &cfg()).expect("still unusual");
        assert_eq!(
            f.range,
            (18 * MIB, 22 * MIB),
            "the outlier is not part of the usual range"
        );
        assert_eq!(judge(&backup(21, 200, 10_240), &history, &cfg()), None);
    }

    #[test]
    fn figures_are_read_from_restic_summaries() {
        let s = serde_json::json!({"message_type": "summary", "files_new": 3, "files_changed": 4,
            "data_added": 1234, "total_bytes_processed": 99});
        assert_eq!(
            Figures::from_summary(&s),
            Figures {
                added_bytes: Some(1234),
                changed_files: Some(7),
                total_bytes: Some(99)
            }
        );
        assert_eq!(
            Figures::from_summary(&serde_json::json!({})),
            Figures::default()
        );
    }
}
