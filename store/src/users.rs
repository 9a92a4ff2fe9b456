//! Operator accounts (written by the web role only): name, argon2id hash,
//! role, disabled flag.

use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result};

/// An account without its password hash.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    pub password_changed_at: i64,
}

/// What to insert.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub now: i64,
}

const COLUMNS: &str = "id, username, role, disabled, created_at, password_changed_at";

pub async fn count(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(conn)
        .await?)
}

/// Inserts an account; a taken name is a unique violation.
pub async fn insert(conn: &mut SqliteConnection, u: &NewUser<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at, password_changed_at)
         VALUES (?, ?, ?, ?, 0, ?, ?)",
    )
    .bind(u.id)
    .bind(u.username)
    .bind(u.password_hash)
    .bind(u.role)
    .bind(u.now)
    .bind(u.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the first account only while there is none (first-run setup);
/// false when an account exists already.
pub async fn insert_first(conn: &mut SqliteConnection, u: &NewUser<'_>) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at, password_changed_at)
         SELECT ?, ?, ?, ?, 0, ?, ? WHERE NOT EXISTS (SELECT 1 FROM users)",
    )
    .bind(u.id)
    .bind(u.username)
    .bind(u.password_hash)
    .bind(u.role)
    .bind(u.now)
    .bind(u.now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// An account and its password hash, by name.
pub async fn by_name(
    conn: &mut SqliteConnection,
    username: &str,
) -> Result<Option<(User, String)>> {
    let row: Option<(String, String, String, bool, i64, i64, String)> = sqlx::query_as(
        "SELECT id, username, role, disabled, created_at, password_changed_at, password_hash
         FROM users WHERE username = ?",
    )
    .bind(username)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(id, username, role, disabled, created_at, changed, hash)| {
            (
                User {
                    id,
                    username,
                    role,
                    disabled,
                    created_at,
                    password_changed_at: changed,
                },
                hash,
            )
        },
    ))
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<User> {
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("user", id)
}

/// Every account, by name.
pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<User>> {
    Ok(sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users ORDER BY username"
    )))
    .fetch_all(conn)
    .await?)
}

/// Sets a new password hash and ends every session of the account.
pub async fn set_password(
    conn: &mut SqliteConnection,
    id: &str,
    password_hash: &str,
    now: i64,
) -> Result<()> {
    set_password_keeping(conn, id, password_hash, now, None).await
}

/// Sets a new password hash and ends every session of the account but
/// `keep` (the one that changed it), if given.
pub async fn set_password_keeping(
    conn: &mut SqliteConnection,
    id: &str,
    password_hash: &str,
    now: i64,
    keep: Option<&str>,
) -> Result<()> {
    let n = sqlx::query("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?")
        .bind(password_hash)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(crate::StoreError::not_found("user", id));
    }
    match keep {
        Some(keep) => crate::sessions::delete_others(conn, id, keep).await?,
        None => crate::sessions::delete_for_user(conn, id).await?,
    };
    Ok(())
}

/// Changes role and/or disabled flag; disabling ends every session.
pub async fn update(
    conn: &mut SqliteConnection,
    id: &str,
    role: Option<&str>,
    disabled: Option<bool>,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE users SET role = COALESCE(?, role), disabled = COALESCE(?, disabled) WHERE id = ?",
    )
    .bind(role)
    .bind(disabled)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(crate::StoreError::not_found("user", id));
    }
    if disabled == Some(true) {
        crate::sessions::delete_for_user(conn, id).await?;
    }
    Ok(())
}

/// Deletes an account (its sessions and tokens go with it).
pub async fn delete(conn: &mut SqliteConnection, id: &str) -> Result<()> {
    let n = sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(crate::StoreError::not_found("user", id));
    }
    Ok(())
}
