//! The JSON API under `/api/v1`: reads come from SQLite through `rm_store`;
//! every change outside the web role's own tables is a service request to
//! the owning role ([`crate::svc`]) carrying the caller's identity.
//! Errors are [`ApiError`]s; lists paginate by an opaque `cursor`.
//!
//! One module per resource; the routes and their minimum roles are in
//! `routes::table`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use rm_bus::subject::{SvcRole, Verb};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

pub mod account;
pub mod alerts;
pub mod cron;
pub mod host_names;
pub mod hosts;
pub mod jobs;
pub mod logs;
pub mod rejected;
pub mod repo_admin;
pub mod repos;
pub mod retention;
pub mod schedules;
pub mod snapshots;
pub mod tokens;
pub mod users;

/// Largest page a list returns.
pub const MAX_LIMIT: i64 = 500;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;

/// The field a serde error is about, when it says (`missing field `x``,
/// `unknown variant`, `invalid type ... at` a known key).
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    let name = &message[start..start + len];
    (message.starts_with("missing field") || message.starts_with("unknown field"))
        .then(|| name.to_owned())
}

/// A JSON body whose errors are API errors naming the field.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid", format!("reading the body: {e}")))?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON body into `T`, naming the field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = format!("malformed JSON body: {e}");
        match field_of(&e.to_string()) {
            Some(field) => ApiError::invalid(&field, message),
            None => ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid", message),
        }
    })
}

/// Query parameters whose errors are API errors.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q).map(Self).map_err(|e| {
            let message = format!("bad query parameters: {e}");
            match field_of(&e.to_string()) {
                Some(field) => ApiError::invalid(&field, message),
                None => ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid", message),
            }
        })
    }
}

/// A page of a list: `next` is the cursor of the following page, if any.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Cursor and limit of a list request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    /// The decoded cursor: `(timestamp, id)`.
    pub fn cursor(&self) -> Result<Option<(i64, String)>, ApiError> {
        let Some(text) = self.cursor_text()? else {
            return Ok(None);
        };
        let (ts, id) = text.split_once(':').ok_or_else(bad_cursor)?;
        Ok(Some((ts.parse().map_err(|_| bad_cursor())?, id.to_owned())))
    }

    /// The decoded cursor as the text it was made of ([`cursor_of_text`]):
    /// for lists that walk by something other than time.
    pub fn cursor_text(&self) -> Result<Option<String>, ApiError> {
        let Some(c) = &self.cursor else {
            return Ok(None);
        };
        let raw = data_encoding::BASE64URL_NOPAD
            .decode(c.as_bytes())
            .map_err(|_| bad_cursor())?;
        String::from_utf8(raw).map(Some).map_err(|_| bad_cursor())
    }
}

/// The answer to a cursor that does not decode.
pub fn bad_cursor() -> ApiError {
    ApiError::invalid("cursor", "not a cursor this server handed out")
}

/// The cursor after a row with `(ts, id)`.
pub fn cursor_of(ts: i64, id: &str) -> String {
    cursor_of_text(&format!("{ts}:{id}"))
}

/// The cursor made of `text` (read back by [`PageQuery::cursor_text`]).
pub fn cursor_of_text(text: &str) -> String {
    data_encoding::BASE64URL_NOPAD.encode(text.as_bytes())
}

/// A page from rows fetched with `limit + 1` (the extra row says there is more).
pub fn page<R, T>(
    rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> (i64, String),
    view: impl Fn(R) -> T,
) -> Page<T> {
    page_by(
        rows,
        limit,
        |r| {
            let (ts, id) = key(r);
            cursor_of(ts, &id)
        },
        view,
    )
}

/// [`page`] with the cursor made by `cursor` from the page's last row.
pub fn page_by<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    cursor: impl Fn(&R) -> String,
    view: impl Fn(R) -> T,
) -> Page<T> {
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more { rows.last().map(&cursor) } else { None };
    Page {
        items: rows.into_iter().map(view).collect(),
        next,
    }
}

/// A service request as the caller.
pub async fn ask<B: Serialize, R: DeserializeOwned>(
    state: &AppState,
    p: &Principal,
    role: SvcRole,
    verb: Verb,
    body: B,
) -> Result<R, ApiError> {
    Ok(crate::svc::call(&state.bus, role, verb, p.actor(), body, state.svc_timeout).await?)
}

/// Parses a JSON column for display (`null` if corrupt).
pub fn json_col(s: Option<&str>) -> serde_json::Value {
    s.and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Appends to the audit log (the web role's own writes).
pub async fn audit(
    state: &AppState,
    p: &Principal,
    action: &str,
    target_kind: &str,
    target_id: &str,
    detail: Option<serde_json::Value>,
) {
    let entry = rm_store::audit::NewEntry {
        ts: state.now(),
        actor: &p.name,
        via: match p.via {
            crate::auth::Via::Session => "session",
            crate::auth::Via::Token => "api_token",
        },
        role: "web",
        action,
        target_kind: Some(target_kind),
        target_id: Some(target_id),
        detail,
    };
    let result = async {
        let mut tx = state.store.write().await?;
        rm_store::audit::append_from(&mut tx, &entry, p.address.as_deref()).await?;
        tx.commit().await.map_err(rm_store::StoreError::from)
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, action, "audit entry not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_a_field_error() {
        let q = PageQuery {
            cursor: Some(cursor_of(42, "job_1")),
            limit: None,
        };
        assert_eq!(q.cursor().unwrap(), Some((42, "job_1".to_owned())));
        let bad = PageQuery {
            cursor: Some("!!".into()),
            limit: Some(0),
        };
        assert_eq!(bad.cursor().unwrap_err().field.as_deref(), Some("cursor"));
        assert_eq!(bad.limit().unwrap_err().field.as_deref(), Some("limit"));
    }

    #[test]
    fn serde_errors_name_their_field() {
        let e = parse_json::<rm_cp_api::HostAdd>(b"{}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        assert_eq!(e.status, 400);
    }
}
