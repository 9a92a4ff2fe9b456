//! The settings pages' queries: audit filters and an account's own sessions.

use rm_store::audit::{self, NewEntry};
use rm_store::listing::{self, AuditFilter};
use rm_store::{sessions, users};

use super::store;

async fn entry(
    tx: &mut rm_store::Conn,
    ts: i64,
    actor: &str,
    action: &str,
    target: (&str, &str),
    address: Option<&str>,
) {
    audit::append_from(
        tx,
        &NewEntry {
            ts,
            actor,
            via: "session",
            role: "web",
            action,
            target_kind: Some(target.0),
            target_id: Some(target.1),
            detail: None,
        },
        address,
    )
    .await
    .unwrap();
}

fn actions(rows: &[audit::Entry]) -> Vec<&str> {
    rows.iter().map(|e| e.action.as_str()).collect()
}

#[tokio::test]
async fn the_audit_log_filters_by_actor_action_prefix_object_and_time_with_a_cursor() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    entry(
        &mut tx,
        100,
        "alice",
        "user.create",
        ("user", "u1"),
        Some("10.0.0.1"),
    )
    .await;
    entry(&mut tx, 200, "bob", "user.update", ("user", "u1"), None).await;
    entry(
        &mut tx,
        300,
        "alice",
        "token.create",
        ("api_token", "t1"),
        None,
    )
    .await;
    entry(&mut tx, 400, "alice", "userXcreate", ("user", "u2"), None).await;
    entry(&mut tx, 500, "alice", "host.revoke", ("host", "h1"), None).await;
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    let all = listing::audit(&mut c, &AuditFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(
        all[4].address.as_deref(),
        Some("10.0.0.1"),
        "the address is kept"
    );

    let by_alice = AuditFilter {
        actor: Some("alice"),
        ..AuditFilter::default()
    };
    let rows = listing::audit(&mut c, &by_alice, None, 10).await.unwrap();
    assert_eq!(
        actions(&rows),
        ["host.revoke", "userXcreate", "token.create", "user.create"]
    );

    // a prefix ending in '.' matches that family only; '_' or '.' are not wildcards
    let users_family = AuditFilter {
        action: Some("user."),
        ..AuditFilter::default()
    };
    let rows = listing::audit(&mut c, &users_family, None, 10)
        .await
        .unwrap();
    assert_eq!(actions(&rows), ["user.update", "user.create"]);
    let exact = AuditFilter {
        action: Some("user.create"),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&listing::audit(&mut c, &exact, None, 10).await.unwrap()),
        ["user.create"]
    );

    let object = AuditFilter {
        target_kind: Some("user"),
        target_id: Some("u1"),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&listing::audit(&mut c, &object, None, 10).await.unwrap()),
        ["user.update", "user.create"]
    );

    let window = AuditFilter {
        since: Some(200),
        until: Some(400),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&listing::audit(&mut c, &window, None, 10).await.unwrap()),
        ["token.create", "user.update"],
        "since is inclusive, until exclusive"
    );

    // pages by (ts, id) do not overlap and together are everything
    let first = listing::audit(&mut c, &by_alice, None, 2).await.unwrap();
    let last = &first[1];
    let second = listing::audit(&mut c, &by_alice, Some((last.ts, last.id)), 10)
        .await
        .unwrap();
    assert_eq!(actions(&second), ["token.create", "user.create"]);
}

#[tokio::test]
async fn an_account_lists_and_ends_only_its_own_sessions() {
    let (s, _d) = store().await;
    let mut tx = s.write().await.unwrap();
    for (id, name) in [("u1", "alice"), ("u2", "bob")] {
        users::insert(
            &mut tx,
            &users::NewUser {
                id,
                username: name,
                password_hash: "x",
                role: "admin",
                now: 1,
            },
        )
        .await
        .unwrap();
    }
    sessions::insert(&mut tx, "a1", "u1", "c", 10, 1000, Some("10.0.0.1"))
        .await
        .unwrap();
    sessions::insert(&mut tx, "a2", "u1", "c", 20, 1000, None)
        .await
        .unwrap();
    sessions::insert(&mut tx, "a3", "u1", "c", 30, 1000, None)
        .await
        .unwrap();
    sessions::insert(&mut tx, "b1", "u2", "c", 40, 1000, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = s.write().await.unwrap();
    let listed = sessions::list_for_user(&mut tx, "u1").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.id_hash.as_str())
            .collect::<Vec<_>>(),
        ["a3", "a2", "a1"],
        "most recently used first"
    );
    assert_eq!(listed[2].address.as_deref(), Some("10.0.0.1"));
    assert!(
        !sessions::delete_of_user(&mut tx, "u1", "b1").await.unwrap(),
        "someone else's session cannot be ended from your account"
    );
    assert!(sessions::delete_of_user(&mut tx, "u1", "a1").await.unwrap());
    // a password change keeps the session that made it
    users::set_password_keeping(&mut tx, "u1", "y", 50, Some("a3"))
        .await
        .unwrap();
    let left = sessions::list_for_user(&mut tx, "u1").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id_hash, "a3");
    assert_eq!(sessions::count_for_user(&mut tx, "u2").await.unwrap(), 1);
    tx.commit().await.unwrap();
}
