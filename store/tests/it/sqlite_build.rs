//! The bundled SQLite is built with the options this workspace sets
//! (`.cargo/config.toml`), whoever builds it.

use rm_store::Store;

#[tokio::test]
async fn the_bundled_sqlite_keeps_no_memory_statistics_per_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("rm.db")).await.unwrap();
    let mut c = s.read().await.unwrap();
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(&mut *c)
        .await
        .unwrap();
    // with it on (SQLite's default), every allocation takes a global mutex
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
    drop(c);
    s.close().await;
}
