//! Schedules: cron + time zone + kind + parameters, per host and repository.

use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result};

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Schedule {
    pub id: String,
    pub host_id: String,
    pub repo_id: String,
    pub kind: String,
    pub cron: String,
    pub timezone: String,
    pub params_json: String,
    pub enabled: bool,
    pub jitter_secs: i64,
    pub timeout_secs: i64,
    pub grace_secs: i64,
    pub exec_host_id: String,
    pub config_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Schedule {
    pub fn params(&self) -> Result<rm_bus::msg::JobParams> {
        crate::from_json("schedule parameters", &self.params_json)
    }
}

/// Inserts or replaces a schedule (same id = edit).
pub async fn upsert(conn: &mut SqliteConnection, s: &Schedule) -> Result<()> {
    sqlx::query(
        "INSERT INTO schedules (id, host_id, repo_id, kind, cron, timezone, params_json, enabled, jitter_secs,
                                timeout_secs, grace_secs, exec_host_id, config_version, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET repo_id = excluded.repo_id, kind = excluded.kind, cron = excluded.cron,
             timezone = excluded.timezone, params_json = excluded.params_json, enabled = excluded.enabled,
             jitter_secs = excluded.jitter_secs, timeout_secs = excluded.timeout_secs,
             grace_secs = excluded.grace_secs, exec_host_id = excluded.exec_host_id, config_version = excluded.config_version,
             updated_at = excluded.updated_at",
    )
    .bind(&s.id)
    .bind(&s.host_id)
    .bind(&s.repo_id)
    .bind(&s.kind)
    .bind(&s.cron)
    .bind(&s.timezone)
    .bind(&s.params_json)
    .bind(s.enabled)
    .bind(s.jitter_secs)
    .bind(s.timeout_secs)
    .bind(s.grace_secs)
    .bind(&s.exec_host_id)
    .bind(s.config_version)
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Schedule> {
    sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("schedule", id)
}

pub async fn for_host(conn: &mut SqliteConnection, host_id: &str) -> Result<Vec<Schedule>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE host_id = ? ORDER BY created_at, id"
    ))
    .bind(host_id)
    .fetch_all(conn)
    .await?)
}

/// Schedules a host's agent runs (its own, plus forget/prune routed to it
/// as a repository's maintenance host).
pub async fn executed_by(conn: &mut SqliteConnection, exec_host_id: &str) -> Result<Vec<Schedule>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE exec_host_id = ? ORDER BY created_at, id"
    ))
    .bind(exec_host_id)
    .fetch_all(conn)
    .await?)
}

pub async fn for_repo(conn: &mut SqliteConnection, repo_id: &str) -> Result<Vec<Schedule>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE repo_id = ? ORDER BY created_at, id"
    ))
    .bind(repo_id)
    .fetch_all(conn)
    .await?)
}

pub async fn all_enabled(conn: &mut SqliteConnection) -> Result<Vec<Schedule>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE enabled = 1 ORDER BY host_id, id"
    ))
    .fetch_all(conn)
    .await?)
}

/// Deletes a schedule; returns the host that ran it (its executing host,
/// whose config must be pushed again).
pub async fn delete(conn: &mut SqliteConnection, id: &str) -> Result<String> {
    let host: Option<String> =
        sqlx::query_scalar("DELETE FROM schedules WHERE id = ? RETURNING exec_host_id")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    host.found("schedule", id)
}
