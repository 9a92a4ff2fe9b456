//! Host tags (`host_tags`): free labels an operator puts on a host to
//! filter the fleet by. The control plane writes them (it owns hosts);
//! the web role reads them for the dashboard rows, the tag filter and the
//! host page. [`parse`] is the one place that says what a tag may be, so
//! the form, the API and the owner agree.

use std::collections::HashMap;

use sqlx::SqliteConnection;

use crate::Result;

/// Most tags on one host.
pub const MAX_PER_HOST: usize = 16;
/// Longest tag, in characters.
pub const MAX_LEN: usize = 40;

/// Checks and normalises a host's tags: trimmed, empty entries dropped,
/// duplicates removed (first spelling kept), sorted. A tag may hold any
/// printable text (markup is shown as text) except a comma, since the
/// form takes them comma-separated. The error is a sentence for the
/// operator.
pub fn parse<S: AsRef<str>>(input: &[S]) -> std::result::Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in input {
        let tag = raw.as_ref().trim();
        if tag.is_empty() {
            continue;
        }
        if tag.chars().count() > MAX_LEN {
            return Err(format!(
                "the tag {tag:?} is longer than {MAX_LEN} characters"
            ));
        }
        if tag.contains(',') {
            return Err(format!("the tag {tag:?} contains a comma"));
        }
        if tag.chars().any(char::is_control) {
            return Err(format!("the tag {tag:?} contains a control character"));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_owned());
        }
    }
    if out.len() > MAX_PER_HOST {
        return Err(format!(
            "{} tags: a host may carry at most {MAX_PER_HOST}",
            out.len()
        ));
    }
    out.sort();
    Ok(out)
}

/// Splits the form's comma-separated text, then [`parse`]s it.
pub fn parse_list(text: &str) -> std::result::Result<Vec<String>, String> {
    let parts: Vec<&str> = text.split(',').collect();
    parse(&parts)
}

/// Replaces a host's tags with `tags` (already [`parse`]d).
pub async fn set(conn: &mut SqliteConnection, host_id: &str, tags: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM host_tags WHERE host_id = ?")
        .bind(host_id)
        .execute(&mut *conn)
        .await?;
    for tag in tags {
        sqlx::query("INSERT INTO host_tags (host_id, tag) VALUES (?, ?)")
            .bind(host_id)
            .bind(tag)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// One host's tags, sorted.
pub async fn of_host(conn: &mut SqliteConnection, host_id: &str) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT tag FROM host_tags WHERE host_id = ? ORDER BY tag")
            .bind(host_id)
            .fetch_all(conn)
            .await?,
    )
}

/// The tags of several hosts in one query (a dashboard page), sorted per host.
pub async fn of_hosts(
    conn: &mut SqliteConnection,
    host_ids: &[String],
) -> Result<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if host_ids.is_empty() {
        return Ok(out);
    }
    let ids = serde_json::to_string(host_ids).unwrap_or_else(|_| "[]".into());
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT host_id, tag FROM host_tags
         WHERE host_id IN (SELECT value FROM json_each(?)) ORDER BY host_id, tag",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    for (host, tag) in rows {
        out.entry(host).or_default().push(tag);
    }
    Ok(out)
}

/// Every tag in use on a non-revoked host with its host count, by name
/// (the dashboard's tag filter); at most `limit`. Read from `tag_counts`,
/// which triggers keep current with every tag and host change (migration
/// 21), so this reads one row per tag, never `host_tags`.
pub async fn known(conn: &mut SqliteConnection, limit: i64) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT tag, hosts FROM tag_counts WHERE hosts > 0 ORDER BY tag LIMIT ?")
            .bind(limit)
            .fetch_all(conn)
            .await?,
    )
}

/// [`known`] computed from the source rows (every tag joined to its
/// host): what `tag_counts` must always equal. For checks and tests.
pub async fn recount_known(conn: &mut SqliteConnection) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT t.tag, COUNT(*) FROM host_tags t JOIN hosts h ON h.id = t.host_id
         WHERE h.status != 'revoked' GROUP BY t.tag ORDER BY t.tag",
    )
    .fetch_all(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_dedupes_sorts_and_keeps_markup_as_text() {
        let got = parse_list(" prod , db,, prod ,<b>x</b>").unwrap();
        assert_eq!(got, vec!["<b>x</b>", "db", "prod"]);
    }

    #[test]
    fn parse_refuses_long_many_and_control_characters() {
        assert!(
            parse(&["a".repeat(MAX_LEN + 1)])
                .unwrap_err()
                .contains("longer")
        );
        let many: Vec<String> = (0..=MAX_PER_HOST).map(|i| format!("t{i}")).collect();
        assert!(parse(&many).unwrap_err().contains("at most"));
        assert!(parse(&["a\nb"]).unwrap_err().contains("control"));
        assert!(parse(&["a,b"]).unwrap_err().contains("comma"));
        assert_eq!(parse::<&str>(&[]).unwrap(), Vec::<String>::new());
    }
}
