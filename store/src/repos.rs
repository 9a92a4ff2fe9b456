//! Repositories and the hosts' credentials for them.

use sqlx::{FromRow, SqliteConnection};

use crate::{FoundExt, Result, StoreError};

/// Kind of credential a host holds for a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Can add data, cannot delete (REST server in append-only mode).
    AppendOnly,
    Full,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AppendOnly => "append_only",
            Self::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "append_only" => Ok(Self::AppendOnly),
            "full" => Ok(Self::Full),
            other => Err(StoreError::Corrupt {
                what: "credential access",
                detail: other.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Repo {
    pub id: String,
    pub name: String,
    pub url_display: String,
    pub secrets_enc: Vec<u8>,
    pub maintenance_host_id: Option<String>,
    pub restic_repo_id: Option<String>,
    pub status: String,
    pub status_detail: Option<String>,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct HostRepo {
    pub host_id: String,
    pub repo_id: String,
    pub access: String,
    pub secrets_enc: Vec<u8>,
    pub created_at: i64,
}

impl HostRepo {
    pub fn access(&self) -> Result<Access> {
        Access::parse(&self.access)
    }
}

pub struct NewRepo<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub url_display: &'a str,
    pub secrets_enc: &'a [u8],
    pub created_by: &'a str,
    pub now: i64,
}

pub async fn insert(conn: &mut SqliteConnection, r: &NewRepo<'_>) -> Result<()> {
    let res = sqlx::query(
        "INSERT INTO repositories (id, name, url_display, secrets_enc, created_at, created_by, refresh_phase)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id)
    .bind(r.name)
    .bind(r.url_display)
    .bind(r.secrets_enc)
    .bind(r.now)
    .bind(r.created_by)
    .bind(crate::refresh::phase_of(r.id))
    .execute(conn)
    .await;
    match res.map_err(StoreError::from) {
        Err(e) if e.is_unique_violation() => Err(StoreError::Conflict(format!(
            "a repository named {:?} already exists",
            r.name
        ))),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Repo> {
    sqlx::query_as(concat!(
        "SELECT ",
        repo_columns!(),
        " FROM repositories WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .found("repository", id)
}

/// The repository whose id or name is `key` (an id wins over another
/// repository's equal name): forms that take either, as the host fields
/// take a host's name or id.
pub async fn by_name_or_id(conn: &mut SqliteConnection, key: &str) -> Result<Repo> {
    sqlx::query_as(concat!(
        "SELECT ",
        repo_columns!(),
        " FROM repositories WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"
    ))
    .bind(key)
    .fetch_optional(conn)
    .await?
    .found("repository", key)
}

pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<Repo>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        repo_columns!(),
        " FROM repositories ORDER BY name"
    ))
    .fetch_all(conn)
    .await?)
}

/// A repository as the list shows it: no secrets, its hosts counted.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub url_display: String,
    pub maintenance_host_id: Option<String>,
    pub restic_repo_id: Option<String>,
    pub status: String,
    pub status_detail: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    /// Hosts attached, and how many of them append-only.
    pub hosts: i64,
    pub append_only_hosts: i64,
}

/// One page of repositories by name whose name or URL contains `text`
/// (case-insensitive; empty: every one), and how many match. Both read
/// the `(name, url_display, id)` index, not the wide rows; the hosts are
/// counted for the page's rows only.
pub async fn page(
    conn: &mut SqliteConnection,
    text: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Listed>, i64)> {
    let like = crate::fleet::like_pattern(Some(text));
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM repositories
          WHERE ?1 IS NULL OR name LIKE ?1 ESCAPE '\\' OR url_display LIKE ?1 ESCAPE '\\'",
    )
    .bind(like.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    let rows = listed(conn, like.as_deref(), None, limit, offset).await?;
    Ok((rows, total))
}

/// At most `limit` repositories by name after the one named `after`
/// (`None`: from the first) whose name or URL contains `text`: a page of
/// the API's list, which walks by name (names are unique) instead of
/// counting rows to skip.
pub async fn after(
    conn: &mut SqliteConnection,
    text: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Listed>> {
    let like = crate::fleet::like_pattern(Some(text));
    listed(conn, like.as_deref(), after, limit, 0).await
}

/// The statement of [`listed`], with `$after` the condition on `?2`:
/// two statements rather than `?2 IS NULL OR name > ?2`, which the
/// planner cannot seek with (it would walk the index from the first name
/// to the cursor on every page).
macro_rules! listed_sql {
    ($after:literal) => {
        concat!(
            "SELECT r.id, r.name, r.url_display, r.maintenance_host_id, r.restic_repo_id, r.status,
                    r.status_detail, r.created_at, r.created_by,
                    (SELECT count(*) FROM host_repositories WHERE repo_id = r.id) AS hosts,
                    (SELECT count(*) FROM host_repositories
                      WHERE repo_id = r.id AND access = 'append_only') AS append_only_hosts
               FROM (SELECT id FROM repositories
                      WHERE (?1 IS NULL OR name LIKE ?1 ESCAPE '\\' OR url_display LIKE ?1 ESCAPE '\\')
                        AND ",
            $after,
            "
                      ORDER BY name LIMIT ?3 OFFSET ?4) p
               JOIN repositories r ON r.id = p.id
              ORDER BY r.name"
        )
    };
}

/// The rows of [`page`] and [`after`]: the page picked from the covering
/// index (migration 32), then only its rows read from the table.
async fn listed(
    conn: &mut SqliteConnection,
    like: Option<&str>,
    after: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Listed>> {
    let q = match after {
        Some(_) => sqlx::query_as(listed_sql!("name > ?2")),
        None => sqlx::query_as(listed_sql!("?2 IS NULL")),
    };
    Ok(q.bind(like)
        .bind(after)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?)
}

/// One repository as the lists show it, its hosts counted (the API's
/// `get`): the list's own statement, narrowed to the id.
pub async fn listed_one(conn: &mut SqliteConnection, id: &str) -> Result<Listed> {
    sqlx::query_as(listed_sql!("id = ?2"))
        .bind(None::<&str>)
        .bind(id)
        .bind(1_i64)
        .bind(0_i64)
        .fetch_optional(conn)
        .await?
        .found("repository", id)
}

/// These repositories (unknown ids left out), by name: a page that shows
/// a few reads those, not every repository with its secrets.
pub async fn of_ids(conn: &mut SqliteConnection, ids: &[&str]) -> Result<Vec<Repo>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        repo_columns!(),
        " FROM repositories WHERE id IN (SELECT value FROM json_each(?)) ORDER BY name"
    ))
    .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
    .fetch_all(conn)
    .await?)
}

/// `(id, name)` of these repositories (unknown ids left out).
pub async fn names_of(conn: &mut SqliteConnection, ids: &[&str]) -> Result<Vec<(String, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        "SELECT id, name FROM repositories WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
    .fetch_all(conn)
    .await?)
}

pub async fn set_status(
    conn: &mut SqliteConnection,
    id: &str,
    status: &str,
    detail: Option<&str>,
    restic_repo_id: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE repositories SET status = ?, status_detail = ?, restic_repo_id = COALESCE(?, restic_repo_id) WHERE id = ?",
    )
    .bind(status)
    .bind(detail)
    .bind(restic_repo_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets (or clears) the maintenance host. It must hold a full credential.
pub async fn set_maintenance_host(
    conn: &mut SqliteConnection,
    repo_id: &str,
    host_id: Option<&str>,
) -> Result<()> {
    if let Some(h) = host_id {
        let cred = credential(&mut *conn, h, repo_id).await?;
        if cred.access()? != Access::Full {
            return Err(StoreError::Conflict(format!(
                "host {h} holds an append-only credential for this repository; the maintenance host needs full access"
            )));
        }
    }
    let n = sqlx::query("UPDATE repositories SET maintenance_host_id = ? WHERE id = ?")
        .bind(host_id)
        .bind(repo_id)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found("repository", repo_id));
    }
    Ok(())
}

/// Attaches a host to a repository, replacing an earlier credential.
pub async fn attach(
    conn: &mut SqliteConnection,
    host_id: &str,
    repo_id: &str,
    access: Access,
    secrets_enc: &[u8],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO host_repositories (host_id, repo_id, access, secrets_enc, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (host_id, repo_id) DO UPDATE SET access = excluded.access, secrets_enc = excluded.secrets_enc",
    )
    .bind(host_id)
    .bind(repo_id)
    .bind(access.as_str())
    .bind(secrets_enc)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn credential(
    conn: &mut SqliteConnection,
    host_id: &str,
    repo_id: &str,
) -> Result<HostRepo> {
    sqlx::query_as(concat!(
        "SELECT ",
        host_repo_columns!(),
        " FROM host_repositories WHERE host_id = ? AND repo_id = ?"
    ))
    .bind(host_id)
    .bind(repo_id)
    .fetch_optional(conn)
    .await?
    .found("credential", &format!("{host_id}/{repo_id}"))
}

pub async fn credentials_of_host(
    conn: &mut SqliteConnection,
    host_id: &str,
) -> Result<Vec<HostRepo>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        host_repo_columns!(),
        " FROM host_repositories WHERE host_id = ? ORDER BY repo_id"
    ))
    .bind(host_id)
    .fetch_all(conn)
    .await?)
}

pub async fn hosts_of_repo(conn: &mut SqliteConnection, repo_id: &str) -> Result<Vec<HostRepo>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        host_repo_columns!(),
        " FROM host_repositories WHERE repo_id = ? ORDER BY host_id"
    ))
    .bind(repo_id)
    .fetch_all(conn)
    .await?)
}

/// Renames a repository and/or replaces its full-access secrets (and the
/// URL shown for them). `None` keeps a value.
pub async fn update(
    conn: &mut SqliteConnection,
    id: &str,
    name: Option<&str>,
    secrets: Option<(&str, &[u8])>,
) -> Result<()> {
    let (url_display, secrets_enc) = secrets.unzip();
    let res = sqlx::query(
        "UPDATE repositories SET name = COALESCE(?, name), url_display = COALESCE(?, url_display),
                secrets_enc = COALESCE(?, secrets_enc) WHERE id = ?",
    )
    .bind(name)
    .bind(url_display)
    .bind(secrets_enc)
    .bind(id)
    .execute(conn)
    .await;
    match res.map_err(StoreError::from) {
        Err(e) if e.is_unique_violation() => Err(StoreError::Conflict(format!(
            "a repository named {:?} already exists",
            name.unwrap_or_default()
        ))),
        Err(e) => Err(e),
        Ok(r) if r.rows_affected() == 0 => Err(StoreError::not_found("repository", id)),
        Ok(_) => Ok(()),
    }
}

/// Replaces a host's stored credential (same access).
pub async fn set_credential_secrets(
    conn: &mut SqliteConnection,
    host_id: &str,
    repo_id: &str,
    secrets_enc: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE host_repositories SET secrets_enc = ? WHERE host_id = ? AND repo_id = ?")
        .bind(secrets_enc)
        .bind(host_id)
        .bind(repo_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes a host's credential for a repository.
pub async fn detach(conn: &mut SqliteConnection, host_id: &str, repo_id: &str) -> Result<()> {
    let n = sqlx::query("DELETE FROM host_repositories WHERE host_id = ? AND repo_id = ?")
        .bind(host_id)
        .bind(repo_id)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found(
            "credential",
            format!("{host_id}/{repo_id}"),
        ));
    }
    Ok(())
}

/// Deletes the repository record. Its credentials, schedules, cached
/// snapshots and health rows go with it (foreign keys); its jobs stay with
/// `repo_id` cleared. Nothing in the repository itself is touched.
pub async fn delete(conn: &mut SqliteConnection, id: &str) -> Result<()> {
    let n = sqlx::query("DELETE FROM repositories WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found("repository", id));
    }
    Ok(())
}
