//! Host mutes (owned by the alerts role): one-off mute windows, kept after
//! they end, and recurring maintenance windows (a cron slot in a time zone
//! plus a duration). While either covers a host, its new alerts are
//! recorded but nobody is told. [`Windows`] answers "muted at t?" and
//! "muted at some point of [start, end)?" for the rule engine, the host
//! page and the compliance strip alike, so they never disagree.

use rm_cron::CronSchedule;
use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result};

/// One-off mute of a host over `[starts_at, until)`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MuteWindow {
    pub id: String,
    pub host_id: String,
    pub starts_at: i64,
    pub until: i64,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// Who ended it early (`until` is then when they did).
    pub ended_by: Option<String>,
}

/// A recurring maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MaintenanceWindow {
    pub id: String,
    pub host_id: String,
    pub cron: String,
    pub timezone: String,
    pub duration_secs: i64,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// Mutes a host from `window.starts_at` until `window.until`, ending the
/// mute that is current at `starts_at` (a new mute replaces it).
pub async fn set_mute(conn: &mut SqliteConnection, window: &MuteWindow) -> Result<()> {
    sqlx::query(
        "UPDATE mute_windows SET until = ? WHERE host_id = ? AND starts_at <= ? AND until > ?",
    )
    .bind(window.starts_at)
    .bind(&window.host_id)
    .bind(window.starts_at)
    .bind(window.starts_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO mute_windows (id, host_id, starts_at, until, reason, created_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&window.id)
    .bind(&window.host_id)
    .bind(window.starts_at)
    .bind(window.until)
    .bind(&window.reason)
    .bind(&window.created_by)
    .bind(window.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a host's current mute at `now`; false if it had none.
pub async fn clear_mute(
    conn: &mut SqliteConnection,
    host_id: &str,
    by: &str,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE mute_windows SET until = ?, ended_by = ? WHERE host_id = ? AND starts_at <= ? AND until > ?",
    )
    .bind(now)
    .bind(by)
    .bind(host_id)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The host's one-off mute current at `now`, if any.
pub async fn current_mute(
    conn: &mut SqliteConnection,
    host_id: &str,
    now: i64,
) -> Result<Option<MuteWindow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        mute_window_columns!(),
        " FROM mute_windows WHERE host_id = ? AND starts_at <= ? AND until > ?
         ORDER BY until DESC LIMIT 1"
    ))
    .bind(host_id)
    .bind(now)
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// The host's one-off mutes overlapping `[from, to)`, oldest first.
pub async fn mutes_between(
    conn: &mut SqliteConnection,
    host_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<MuteWindow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        mute_window_columns!(),
        " FROM mute_windows WHERE host_id = ? AND until > ? AND starts_at < ? ORDER BY starts_at"
    ))
    .bind(host_id)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?)
}

pub async fn add_maintenance(conn: &mut SqliteConnection, w: &MaintenanceWindow) -> Result<()> {
    sqlx::query(
        "INSERT INTO maintenance_windows (id, host_id, cron, timezone, duration_secs, reason, created_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&w.id)
    .bind(&w.host_id)
    .bind(&w.cron)
    .bind(&w.timezone)
    .bind(w.duration_secs)
    .bind(&w.reason)
    .bind(&w.created_by)
    .bind(w.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a maintenance window; `None` if there was none.
pub async fn delete_maintenance(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<MaintenanceWindow>> {
    Ok(sqlx::query_as(concat!(
        "DELETE FROM maintenance_windows WHERE id = ? RETURNING ",
        maintenance_window_columns!(),
        ""
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn get_maintenance(conn: &mut SqliteConnection, id: &str) -> Result<MaintenanceWindow> {
    sqlx::query_as(concat!(
        "SELECT ",
        maintenance_window_columns!(),
        " FROM maintenance_windows WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("maintenance window", id)
}

/// A host's maintenance windows, oldest first.
pub async fn maintenance_of(
    conn: &mut SqliteConnection,
    host_id: &str,
) -> Result<Vec<MaintenanceWindow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        maintenance_window_columns!(),
        " FROM maintenance_windows WHERE host_id = ? ORDER BY created_at, id"
    ))
    .bind(host_id)
    .fetch_all(conn)
    .await?)
}

/// Why a host is muted at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutedBy {
    /// A one-off mute.
    Mute(MuteWindow),
    /// A maintenance window's slot.
    Maintenance(MaintenanceWindow),
}

/// What mutes a host at `at` and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Muted {
    pub until: i64,
    pub by: MutedBy,
}

/// The mute and maintenance windows of one host over a span of time.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    once: Vec<MuteWindow>,
    recurring: Vec<(CronSchedule, MaintenanceWindow)>,
}

impl Windows {
    /// Loads the windows of `host_id` that can matter over `[from, to)`.
    /// A maintenance window whose cron does not parse is skipped (the
    /// alerts role refuses to store one).
    pub async fn load(
        conn: &mut SqliteConnection,
        host_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Self> {
        let once = mutes_between(&mut *conn, host_id, from, to).await?;
        let recurring = maintenance_of(conn, host_id)
            .await?
            .into_iter()
            .filter_map(|w| match CronSchedule::parse(&w.cron, &w.timezone) {
                Ok(c) => Some((c, w)),
                Err(e) => {
                    tracing::warn!(window_id = %w.id, error = %e, "maintenance window cron does not parse; ignored");
                    None
                }
            })
            .collect();
        Ok(Self { once, recurring })
    }

    /// Whether nothing mutes the host in the loaded span.
    pub fn is_empty(&self) -> bool {
        self.once.is_empty() && self.recurring.is_empty()
    }

    /// What mutes the host at `at` (the window ending last), if anything.
    pub fn at(&self, at: i64) -> Option<Muted> {
        let once = self
            .once
            .iter()
            .filter(|w| w.starts_at <= at && at < w.until)
            .map(|w| Muted {
                until: w.until,
                by: MutedBy::Mute(w.clone()),
            });
        // A window mutes only from when it was created.
        let recurring = self.recurring.iter().filter_map(|(cron, w)| {
            if at < w.created_at {
                return None;
            }
            let slot = cron.last_at_or_before_ms(at)?;
            let end = slot.saturating_add(w.duration_secs.saturating_mul(1000));
            (at < end).then(|| Muted {
                until: end,
                by: MutedBy::Maintenance(w.clone()),
            })
        });
        once.chain(recurring).max_by_key(|m| m.until)
    }

    /// Whether the host was muted at some moment of `[start, end)`.
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.once
            .iter()
            .any(|w| w.starts_at < end && start < w.until)
            || self.recurring.iter().any(|(cron, w)| {
                let from = start.max(w.created_at);
                from < end
                    && (cron.next_after_ms(from - 1).is_some_and(|s| s < end)
                        || cron.last_at_or_before_ms(from).is_some_and(|s| {
                            from < s.saturating_add(w.duration_secs.saturating_mul(1000))
                        }))
            })
    }
}

/// What mutes the host at `now`, if anything.
pub async fn muted_at(
    conn: &mut SqliteConnection,
    host_id: &str,
    now: i64,
) -> Result<Option<Muted>> {
    Ok(Windows::load(conn, host_id, now, now + 1).await?.at(now))
}

/// Whether the host is muted at `now` (a mute or a maintenance window).
pub async fn is_muted(conn: &mut SqliteConnection, host_id: &str, now: i64) -> Result<bool> {
    Ok(muted_at(conn, host_id, now).await?.is_some())
}

/// [`Windows::load`] for several hosts in two queries (a dashboard page):
/// each host's windows, hosts without any left out.
pub async fn windows_of_many(
    conn: &mut SqliteConnection,
    host_ids: &[String],
    from: i64,
    to: i64,
) -> Result<std::collections::HashMap<String, Windows>> {
    let mut out: std::collections::HashMap<String, Windows> = Default::default();
    if host_ids.is_empty() {
        return Ok(out);
    }
    let ids = serde_json::to_string(host_ids).unwrap_or_else(|_| "[]".into());
    let once: Vec<MuteWindow> = sqlx::query_as(concat!(
        "SELECT ",
        mute_window_columns!(),
        " FROM mute_windows WHERE host_id IN (SELECT value FROM json_each(?1))
           AND until > ?2 AND starts_at < ?3 ORDER BY starts_at"
    ))
    .bind(&ids)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for w in once {
        out.entry(w.host_id.clone()).or_default().once.push(w);
    }
    let recurring: Vec<MaintenanceWindow> = sqlx::query_as(concat!(
        "SELECT ",
        maintenance_window_columns!(),
        " FROM maintenance_windows WHERE host_id IN (SELECT value FROM json_each(?))
         ORDER BY created_at, id"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for w in recurring {
        match CronSchedule::parse(&w.cron, &w.timezone) {
            Ok(c) => out
                .entry(w.host_id.clone())
                .or_default()
                .recurring
                .push((c, w)),
            Err(e) => {
                tracing::warn!(window_id = %w.id, error = %e, "maintenance window cron does not parse; ignored");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maint(cron: &str, tz: &str, secs: i64) -> (CronSchedule, MaintenanceWindow) {
        (
            CronSchedule::parse(cron, tz).unwrap(),
            MaintenanceWindow {
                id: "w1".into(),
                host_id: "h1".into(),
                cron: cron.into(),
                timezone: tz.into(),
                duration_secs: secs,
                reason: None,
                created_by: "alice".into(),
                created_at: 0,
            },
        )
    }

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    #[test]
    fn a_nightly_window_mutes_inside_its_slot_only() {
        // 02:00 for one hour, Berlin (UTC+1 in winter): 01:00-02:00 UTC.
        let w = Windows {
            once: vec![],
            recurring: vec![maint("0 2 * * *", "Europe/Berlin", 3600)],
        };
        let jan = 1_704_067_200_000_i64; // 2024-01-01T00:00Z
        assert!(
            w.at(jan + H - 1).is_none(),
            "00:59:59 UTC is before the window"
        );
        let m = w.at(jan + H).expect("01:00 UTC is 02:00 in Berlin");
        assert_eq!(m.until, jan + 2 * H);
        assert!(w.at(jan + H + H / 2).is_some());
        assert!(w.at(jan + 2 * H).is_none(), "the window has ended");
        assert!(w.overlaps(jan, jan + DAY));
        assert!(!w.overlaps(jan + 2 * H, jan + 3 * H));
        assert!(w.overlaps(jan + H + 1, jan + H + 2), "inside a slot");
    }

    #[test]
    fn a_maintenance_window_mutes_nothing_before_it_was_created() {
        let jan = 1_704_067_200_000_i64; // 2024-01-01T00:00Z
        let (cron, mut w) = maint("0 1 * * *", "UTC", 3600);
        w.created_at = jan + 5 * DAY;
        let w = Windows {
            once: vec![],
            recurring: vec![(cron, w)],
        };
        assert!(w.at(jan + H).is_none() && !w.overlaps(jan, jan + DAY));
        assert!(w.at(jan + 5 * DAY + H).is_some() && w.overlaps(jan + 5 * DAY, jan + 6 * DAY));
    }

    #[test]
    fn a_one_off_mute_covers_its_span_and_the_days_it_touches() {
        let w = Windows {
            once: vec![MuteWindow {
                id: "m1".into(),
                host_id: "h1".into(),
                starts_at: 100,
                until: 200,
                reason: None,
                created_by: "alice".into(),
                created_at: 100,
                ended_by: None,
            }],
            recurring: vec![],
        };
        assert!(w.at(99).is_none());
        assert_eq!(w.at(100).map(|m| m.until), Some(200));
        assert!(w.at(200).is_none());
        assert!(w.overlaps(0, 101) && w.overlaps(199, 300));
        assert!(!w.overlaps(0, 100) && !w.overlaps(200, 300));
    }
}
