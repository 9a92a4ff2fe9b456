//! The one cron evaluation module of restic-manager: parses a five-field
//! cron expression with an IANA time zone and answers "when is the next run
//! after T" and "when was the last slot at or before T", DST-correct. The
//! agent's scheduler, the alerts stale-schedule rule and the UI preview all
//! call this, so they can never disagree.
//!
//! Built on `croner` (its jiff backend, no chrono) for matching, which
//! implements the Open Cron Pattern Specification's daylight-saving rules the
//! way Vixie cron behaves: a fixed-time job whose wall-clock time falls in a
//! spring-forward gap runs at the first instant after the gap; one whose time
//! happens twice in a fall-back overlap runs once; interval jobs (`*/15`)
//! keep running through both. `jiff` supplies the time zone database: the
//! system's zoneinfo on Unix, a bundled copy on Windows.
//!
//! Times are Unix milliseconds, matching `rm_bus::clock::Clock`.

use std::fmt;
use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Why an expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Expression { expr: String, reason: String },
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// The IANA name of this machine's time zone (`TZ`, else
/// `/etc/localtime`), or `UTC` when it has none.
pub fn system_zone_name() -> String {
    TimeZone::system()
        .iana_name()
        .map_or_else(|| "UTC".to_owned(), str::to_owned)
}

/// A parsed cron expression bound to a time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    tz_name: String,
    cron: Cron,
    tz: TimeZone,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expr", &self.expr)
            .field("tz", &self.tz_name)
            .finish()
    }
}

/// Bound on how far searches look: a pattern such as `0 0 30 2 *` never
/// matches; croner reports that as an error, which we map to `None`.
impl CronSchedule {
    /// Parses a standard five-field expression (minute hour day-of-month
    /// month day-of-week; names like `MON`/`JAN` and nicknames like
    /// `@daily` accepted) in the IANA zone `tz` (`UTC`, `Europe/Berlin`).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, CronError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| CronError::Expression {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;
        let tz_zone = TimeZone::get(tz).map_err(|_| CronError::TimeZone(tz.to_owned()))?;
        Ok(Self {
            expr: expr.to_owned(),
            tz_name: tz.to_owned(),
            cron,
            tz: tz_zone,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> &str {
        &self.tz_name
    }

    /// The first run strictly after `after_ms`, or `None` if the pattern
    /// never matches again.
    pub fn next_after_ms(&self, after_ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(after_ms)
            .ok()?
            .to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The latest run at or before `at_ms`, or `None` if there is none.
    pub fn last_at_or_before_ms(&self, at_ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(at_ms)
            .ok()?
            .to_zoned(self.tz.clone());
        let prev = self.cron.find_previous_occurrence(&start, true).ok()?;
        Some(prev.timestamp().as_millisecond())
    }

    /// The next `n` runs strictly after `after_ms` (UI preview).
    pub fn upcoming_ms(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut t = after_ms;
        while out.len() < n {
            match self.next_after_ms(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// `ms` as an RFC 3339 time in this schedule's zone (for logs and UI).
    pub fn format_ms(&self, ms: i64) -> String {
        match Timestamp::from_millisecond(ms) {
            Ok(ts) => ts
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => ms.to_string(),
        }
    }
}

impl FromStr for CronSchedule {
    type Err = CronError;

    /// `"<expr>"` in UTC, or `"<expr> @ <zone>"`.
    fn from_str(s: &str) -> Result<Self, CronError> {
        match s.rsplit_once(" @ ") {
            Some((expr, tz)) => Self::parse(expr.trim(), tz.trim()),
            None => Self::parse(s, "UTC"),
        }
    }
}

#[cfg(test)]
mod tests;
