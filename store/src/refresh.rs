//! The repository refresh cadence: when a full refresh (snapshot list,
//! sizes, locks) was last queued per repository and each repository's
//! place in the period, so the periodic sweep queues one only where it is
//! due, a fleet's refreshes spread over the period.

use sqlx::SqliteConnection;

use crate::{FoundExt, Result};

/// Records that a full refresh of `repo_id` was queued at `now`.
pub async fn mark_queued(conn: &mut SqliteConnection, repo_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO repo_refresh (repo_id, queued_at) VALUES (?, ?)
         ON CONFLICT (repo_id) DO UPDATE SET queued_at = excluded.queued_at",
    )
    .bind(repo_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A repository's place in the refresh period, `0..2^20` (of `2^20`):
/// the top 20 bits of the FNV-1a hash of its id, mixed by MurmurHash3's
/// finalizer (FNV-1a alone leaves its top bits to the first characters:
/// ids that differ in their last ones, `r0001`, `r0002`, would share a
/// tenth of the period). Stored with the repository at its creation
/// (`repositories.refresh_phase`; migration 35 gave the repositories
/// before it one from their rowid).
pub fn phase_of(repo_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in repo_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    // 20 bits: always fits
    i64::try_from(h >> 44).unwrap_or(0)
}

/// The longest period [`due`] takes, in ms (about 34 years): the
/// statement's arithmetic (`refresh_phase * period`) stays an integer.
pub const MAX_PERIOD_MS: i64 = 1 << 40;

/// The statement of [`due`] (`?1` now, `?2` the period, `?3` the limit;
/// times in ms). A repository's slots are the times `phase / 2^20` of a
/// period past a multiple of the period; it is due when its latest slot
/// came half a period or more after its last refresh (never refreshed:
/// its creation). Each repository is refreshed once a period at its own
/// place in it, so a fleet added or refreshed together is refreshed spread
/// over the period after, not all at once every period. A refresh out of
/// turn (an operator's, after a prune) less than half a period before a
/// slot skips that slot: refreshes of one repository are half a period to
/// a period and a half apart, a period in the steady state. (Waiting half
/// a period after the last refresh instead of skipping the slot would
/// queue every repository of such a fleet whose slot came too soon at the
/// same moment, half a period on.)
///
/// The online hosts and their repositories are each read once (`IN`
/// lists), not per repository: with the correlated `EXISTS` form SQLite
/// planned the hosts' status index as the outer loop and read every online
/// host for every repository, 36–92 s at 19,000 (issue 14, stop 59).
pub const DUE_SQL: &str = "SELECT r.id FROM repositories r LEFT JOIN repo_refresh f ON f.repo_id = r.id
     WHERE COALESCE(f.queued_at, r.created_at)
             <= ?1 - ((?1 - r.refresh_phase * ?2 / 1048576) % ?2 + ?2) % ?2 - ?2 / 2
       AND (r.maintenance_host_id IN (SELECT id FROM hosts WHERE status = 'online')
            OR r.id IN (SELECT hr.repo_id FROM host_repositories hr JOIN hosts h ON h.id = hr.host_id
                         WHERE h.status = 'online'))
     ORDER BY COALESCE(f.queued_at, r.created_at), r.id
     LIMIT ?3";

/// At most `limit` repositories due for their periodic refresh at `now`
/// with a refresh every `period_ms` (the rule of [`DUE_SQL`]), the longest
/// unrefreshed first, of those a refresh can run for now: their
/// maintenance host or an attached host is online ([`runner`] finds one).
/// (A due repository whose hosts are all offline stays due; left in,
/// enough of them would take every place under the limit, tick after
/// tick, from repositories that could be refreshed.)
pub async fn due(
    conn: &mut SqliteConnection,
    now: i64,
    period_ms: i64,
    limit: usize,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(DUE_SQL)
        .bind(now)
        .bind(period_ms.clamp(1, MAX_PERIOD_MS))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?)
}

/// What the refresh cadence of one repository is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Cadence {
    /// Its place in the period (`repositories.refresh_phase`).
    pub phase: i64,
    /// When it was created (what a repository never refreshed counts from).
    pub created_at: i64,
    /// When its last full refresh was queued, if ever.
    pub queued_at: Option<i64>,
}

impl Cadence {
    /// When [`due`] first finds it due (ms) with a refresh every
    /// `period_ms`: its first slot half a period or more after its last
    /// refresh (never refreshed: its creation). The rule of [`DUE_SQL`] in
    /// Rust, for pages that say when; a test holds the two to each other.
    /// Past only while it waits: a due repository is queued at the
    /// sweep's next tick, unless its hosts are all offline or the tick's
    /// places are taken.
    pub fn next_due(&self, period_ms: i64) -> i64 {
        let p = period_ms.clamp(1, MAX_PERIOD_MS);
        let phase_ms = self.phase.clamp(0, (1 << 20) - 1) * p / (1 << 20);
        // the first slot (phase_ms + k·p) at or after last + p/2
        let from = self
            .queued_at
            .unwrap_or(self.created_at)
            .saturating_add(p / 2);
        let slot = phase_ms + (from - phase_ms).div_euclid(p) * p;
        if slot >= from { slot } else { slot + p }
    }
}

/// The refresh cadence of `repo_id` (`NotFound` for an unknown one).
pub async fn cadence(conn: &mut SqliteConnection, repo_id: &str) -> Result<Cadence> {
    sqlx::query_as(
        "SELECT r.refresh_phase AS phase, r.created_at, f.queued_at
           FROM repositories r LEFT JOIN repo_refresh f ON f.repo_id = r.id
          WHERE r.id = ?",
    )
    .bind(repo_id)
    .fetch_optional(conn)
    .await?
    .found("repository", repo_id)
}

/// The `worker_state` name under which the control plane says its refresh
/// period (ms) at its start, for the web role's pages: the period is the
/// control plane's setting (`--repo-refresh-hours`), not the web role's.
pub const PERIOD_STATE: &str = "controlplane.repo_refresh_period_ms";

/// Records the control plane's refresh period (ms).
pub async fn publish_period(conn: &mut SqliteConnection, period_ms: i64, now: i64) -> Result<()> {
    crate::worker_state::put(conn, PERIOD_STATE, &period_ms, now).await
}

/// The refresh period the control plane last said, if it ever did.
pub async fn period(conn: &mut SqliteConnection) -> Result<Option<i64>> {
    crate::worker_state::get(conn, PERIOD_STATE).await
}

/// When `repo_id`'s periodic refresh is next due and the period, both in
/// ms (`NotFound` for an unknown repository); `None` until a control
/// plane has said its period.
pub async fn next(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<(i64, i64)>> {
    let Some(every) = period(&mut *conn).await?.filter(|p| *p > 0) else {
        return Ok(None);
    };
    Ok(Some((cadence(conn, repo_id).await?.next_due(every), every)))
}

/// The statement of [`runner`]: the rule of [`DUE_SQL`]'s filter for one
/// repository, its maintenance host first. `+h.status` keeps the hosts'
/// status index out of the plan: with it SQLite read every online host
/// and looked each up among the repository's (5.6 ms a call on a store
/// of 18,900 online hosts, against 0.01 ms from the repository's hosts;
/// the sweep asks up to 256 times a tick).
pub const RUNNER_SQL: &str = "SELECT id FROM (
         SELECT h.id, 0 AS pick FROM repositories r JOIN hosts h ON h.id = r.maintenance_host_id
          WHERE r.id = ?1 AND +h.status = 'online'
         UNION ALL
         SELECT h.id, 1 AS pick FROM host_repositories hr JOIN hosts h ON h.id = hr.host_id
          WHERE hr.repo_id = ?1 AND +h.status = 'online')
     ORDER BY pick, id
     LIMIT 1";

/// Where a refresh of `repo_id` runs now: its maintenance host if online,
/// else the first attached host (by id) that is online; `None` when none
/// is. The same rule [`due`] applies to every repository at once (a test
/// holds the two to it): a repository is due only where this finds a host.
pub async fn runner(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(RUNNER_SQL)
        .bind(repo_id)
        .fetch_optional(conn)
        .await?)
}

/// When a full refresh of `repo_id` was last queued.
pub async fn last_queued(conn: &mut SqliteConnection, repo_id: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT queued_at FROM repo_refresh WHERE repo_id = ?")
            .bind(repo_id)
            .fetch_optional(conn)
            .await?,
    )
}
