//! A schema change under a live connection: another process (a newer
//! build of another role) adds a column while this store has statements
//! prepared; its queries keep working, and it can tell that the database
//! is now newer than its build.

use rm_store::{Store, hosts, jobs};

use crate::{backup, new_job};

#[tokio::test]
async fn a_query_prepared_before_another_process_adds_columns_still_reads_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rm.db");
    let s = Store::open(&path).await.unwrap();
    let params = backup();
    {
        let mut tx = s.write().await.unwrap();
        hosts::insert(&mut tx, "h1", "web-1", "alice", 1)
            .await
            .unwrap();
        jobs::insert(&mut tx, &new_job("j1", "h1", &params, 5))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    // one read connection, its statements prepared and cached
    let mut c = s.read().await.unwrap();
    let job = jobs::get(&mut c, "j1").await.unwrap();
    let host = hosts::get(&mut c, "h1").await.unwrap();

    // another process migrates the file: columns appear in both tables
    {
        use sqlx::Connection;
        let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "ALTER TABLE jobs ADD COLUMN added_later TEXT;
             ALTER TABLE hosts ADD COLUMN added_later INTEGER NOT NULL DEFAULT 7;",
        )
        .execute(&mut other)
        .await
        .unwrap();
        sqlx::query("INSERT INTO schema_migrations VALUES (?, 'from a newer build', 0)")
            .bind(rm_store::schema_version() + 1)
            .execute(&mut other)
            .await
            .unwrap();
        other.close().await.unwrap();
    }

    // the same connection, the same cached statements: no panic, same rows
    assert_eq!(jobs::get(&mut c, "j1").await.unwrap(), job);
    assert_eq!(hosts::get(&mut c, "h1").await.unwrap(), host);
    drop(c);
    // and the store knows it runs on a schema newer than its build
    assert_eq!(
        s.newer_schema().await.unwrap(),
        Some(rm_store::schema_version() + 1)
    );
}

#[tokio::test]
async fn a_store_of_this_build_is_not_newer_than_itself() {
    let (s, _d) = crate::store().await;
    assert_eq!(s.newer_schema().await.unwrap(), None);
}

#[tokio::test]
async fn every_column_list_names_columns_of_its_table() {
    let (s, _d) = crate::store().await;
    let mut c = s.read().await.unwrap();
    for (table, cols) in rm_store::COLUMN_LISTS {
        let sql = format!("SELECT {cols} FROM {table} LIMIT 0");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *c)
            .await
        {
            panic!("{table}: {e}");
        }
    }
}
