//! `rm_store::vacuum`: a store grown a little at a time, rewritten in key
//! order, keeps every row and has each index's pages together again.

use std::time::Duration;

use super::store;

/// The stretches of consecutive pages the b-tree `name` lies in, by
/// SQLite's `dbstat` (its root page, made when the b-tree was, is one).
async fn stretches(c: &mut rm_store::Conn, name: &str) -> usize {
    let pages: Vec<i64> =
        sqlx::query_scalar("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno")
            .bind(name)
            .fetch_all(c)
            .await
            .unwrap();
    1 + pages.windows(2).filter(|w| w[1] != w[0] + 1).count()
}

#[tokio::test]
async fn vacuum_lays_each_indexs_pages_together_and_keeps_every_row() {
    let (s, dir) = store().await;
    {
        let mut tx = s.write().await.unwrap();
        for sql in [
            "CREATE TABLE day_a (host TEXT NOT NULL, at INTEGER NOT NULL, note TEXT NOT NULL)",
            "CREATE INDEX day_a_host ON day_a (host, at DESC)",
            "CREATE TABLE day_b (host TEXT NOT NULL, at INTEGER NOT NULL, note TEXT NOT NULL)",
            "CREATE INDEX day_b_host ON day_b (host, at DESC)",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    // 60 "days", each a row per host in both tables: each day's new pages
    // land at the end of the file, the two indexes' interleaved
    for day in 0..60_i64 {
        let mut tx = s.write().await.unwrap();
        for host in 0..200_i64 {
            for table in ["day_a", "day_b"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {table} (host, at, note) VALUES (?, ?, ?)"
                )))
                .bind(format!(
                    "host-{:04}-{}",
                    (host * 7919) % 200,
                    "x".repeat(40)
                ))
                .bind(day)
                .bind("n".repeat(60))
                .execute(&mut *tx)
                .await
                .unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
    let before = {
        let mut c = s.read().await.unwrap();
        stretches(&mut c, "day_a_host").await
    };
    assert!(
        before > 20,
        "grown a day at a time, the index is scattered: {before} stretches"
    );
    s.close().await;

    let path = dir.path().join("rm.db");
    let v = rm_store::vacuum::vacuum(&path, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(v.bytes_before > 0 && v.bytes_after > 0, "{v:?}");

    let s = rm_store::Store::open(&path).await.unwrap();
    let mut c = s.read().await.unwrap();
    for index in ["day_a_host", "day_b_host"] {
        assert!(
            stretches(&mut c, index).await <= 2,
            "{index}'s pages in one stretch after (and its root page)"
        );
    }
    for table in ["day_a", "day_b"] {
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *c)
                .await
                .unwrap();
        assert_eq!(rows, 60 * 200, "{table}");
    }
}

#[tokio::test]
async fn vacuum_of_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    assert!(
        rm_store::vacuum::vacuum(&path, Duration::from_secs(1))
            .await
            .is_err()
    );
    assert!(!path.exists());
}
