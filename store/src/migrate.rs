//! Embedded schema migrations, applied in order at open.
//!
//! Each migration runs once, inside one transaction, and is recorded in
//! `schema_migrations`. A database newer than this build is refused rather
//! than guessed at.

use sqlx::{AssertSqlSafe, SqlitePool};

use crate::{Result, StoreError};

/// (version, name, SQL) in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "alerts", include_str!("../migrations/0002_alerts.sql")),
    (
        3,
        "hardening",
        include_str!("../migrations/0003_hardening.sql"),
    ),
    (4, "web", include_str!("../migrations/0004_web.sql")),
    (5, "chunks", include_str!("../migrations/0005_chunks.sql")),
    (
        6,
        "deadlines",
        include_str!("../migrations/0006_deadlines.sql"),
    ),
    (7, "writer", include_str!("../migrations/0007_writer.sql")),
    (
        8,
        "security",
        include_str!("../migrations/0008_security.sql"),
    ),
    (
        11,
        "fleet_scale",
        include_str!("../migrations/0011_fleet_scale.sql"),
    ),
    (12, "mutes", include_str!("../migrations/0012_mutes.sql")),
    (13, "admin", include_str!("../migrations/0013_admin.sql")),
    (
        14,
        "controlplane_backup",
        include_str!("../migrations/0014_controlplane_backup.sql"),
    ),
    (
        15,
        "repo_refresh",
        include_str!("../migrations/0015_repo_refresh.sql"),
    ),
    (
        19,
        "fleet_ui",
        include_str!("../migrations/0019_fleet_ui.sql"),
    ),
    (
        21,
        "fleet_counts",
        include_str!("../migrations/0021_fleet_counts.sql"),
    ),
    (
        24,
        "cpbackup_time",
        include_str!("../migrations/0024_cpbackup_time.sql"),
    ),
    (
        25,
        "host_stats",
        include_str!("../migrations/0025_host_stats.sql"),
    ),
    (
        26,
        "alert_keys",
        include_str!("../migrations/0026_alert_keys.sql"),
    ),
    (
        27,
        "active_jobs",
        include_str!("../migrations/0027_active_jobs.sql"),
    ),
    (
        28,
        "hosts_status_index",
        include_str!("../migrations/0028_hosts_status_index.sql"),
    ),
    (
        29,
        "hosts_status_covering",
        include_str!("../migrations/0029_hosts_status_covering.sql"),
    ),
    (
        30,
        "snapshots_listed",
        include_str!("../migrations/0030_snapshots_listed.sql"),
    ),
    (
        31,
        "hosts_config_unconfirmed",
        include_str!("../migrations/0031_hosts_config_unconfirmed.sql"),
    ),
    (
        32,
        "repositories_name_url",
        include_str!("../migrations/0032_repositories_name_url.sql"),
    ),
    (
        33,
        "schedules_host_id",
        include_str!("../migrations/0033_schedules_host_id.sql"),
    ),
    (
        34,
        "snapshots_narrow_indexes",
        include_str!("../migrations/0034_snapshots_narrow_indexes.sql"),
    ),
    (
        35,
        "repositories_refresh_phase",
        include_str!("../migrations/0035_repositories_refresh_phase.sql"),
    ),
];

/// How many migrations this build embeds (versions may have gaps: each
/// change reserves its own number).
pub fn count() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// The schema version this build creates: the last embedded migration.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

pub(crate) async fn apply(pool: &SqlitePool) -> Result<()> {
    apply_through(pool, i64::MAX).await
}

/// Applies the migrations not applied yet, up to version `last`.
async fn apply_through(pool: &SqlitePool, last: i64) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(pool)
            .await?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Conflict(format!(
            "database schema version {current} is newer than this build supports ({latest}); upgrade restic-manager"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current && m.0 <= last) {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        // Another process may have applied it while we waited for the lock.
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, unixepoch() * 1000)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database file migrated through `version` only.
    async fn store_through(version: i64) -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("rm.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(opts).await.unwrap();
        apply_through(&pool, version).await.unwrap();
        (dir, pool)
    }

    /// A store from before migration 30: one repository listed in full
    /// (a health row with a snapshot count, as a listing or a backup wrote
    /// it then), one only measured (sizes, never listed).
    #[tokio::test]
    async fn an_upgraded_store_knows_which_repositories_were_listed_from_their_counted_health_rows()
    {
        let (_dir, pool) = store_through(29).await;
        for (repo, count, size) in [("listed", Some(3), None), ("measured", None, Some(9))] {
            sqlx::query(
                "INSERT INTO repositories (id, name, url_display, secrets_enc, created_at, created_by)
                 VALUES (?1, ?1, 'rest:https://x.invalid/', x'00', 1, 'test')",
            )
            .bind(repo)
            .execute(&pool)
            .await
            .unwrap();
            for ts in [100, 200] {
                sqlx::query(
                    "INSERT INTO repo_health (repo_id, ts, snapshot_count, raw_size) VALUES (?, ?, ?, ?)",
                )
                .bind(repo)
                .bind(ts)
                .bind(count)
                .bind(size)
                .execute(&pool)
                .await
                .unwrap();
            }
        }
        apply(&pool).await.unwrap();
        let listed: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT id, snapshots_listed_at FROM repositories ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            listed,
            vec![("listed".into(), Some(200)), ("measured".into(), None)]
        );
    }

    /// A store from before migration 35: a fleet of repositories added in
    /// order gets places in the refresh period spread evenly over it.
    #[tokio::test]
    async fn an_upgraded_stores_repositories_get_refresh_phases_spread_over_the_period() {
        let (_dir, pool) = store_through(34).await;
        for i in 0..1_000 {
            sqlx::query(
                "INSERT INTO repositories (id, name, url_display, secrets_enc, created_at, created_by)
                 VALUES (?1, ?1, 'rest:https://x.invalid/', x'00', 1, 'test')",
            )
            .bind(format!("r{i:04}"))
            .execute(&pool)
            .await
            .unwrap();
        }
        apply(&pool).await.unwrap();
        let phases: Vec<i64> = sqlx::query_scalar("SELECT refresh_phase FROM repositories")
            .fetch_all(&pool)
            .await
            .unwrap();
        let distinct: std::collections::HashSet<_> = phases.iter().collect();
        assert_eq!(distinct.len(), 1_000);
        let mut tenths = [0usize; 10];
        for p in &phases {
            assert!((0..1 << 20).contains(p), "{p}");
            tenths[usize::try_from((p * 10) >> 20).unwrap()] += 1;
        }
        assert!(tenths.iter().all(|n| (95..=105).contains(n)), "{tenths:?}");
    }
}
