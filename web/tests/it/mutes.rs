//! The mute and maintenance-window forms on the host, alert and alerts
//! pages: a refused form comes back on the page it was sent from, with the
//! field named and what the operator typed kept.

use rm_web::auth::Role;

use crate::harness::{H, T0};
use crate::settings::{get, post};

/// A host `h1` ("web-1") with one open alert `a1`.
async fn host_with_alert(h: &H) {
    let mut tx = h.state.store.write().await.unwrap();
    rm_store::hosts::insert(&mut tx, "h1", "web-1", "t", 1)
        .await
        .unwrap();
    rm_store::alerts::raise(
        &mut tx,
        &rm_store::alerts::NewAlert {
            id: "a1",
            host_id: "h1",
            kind: "backup_failed",
            subject: "",
            severity: "critical",
            message: "backup failed",
            job_id: None,
            cause: "",
            now: T0 - 1000,
            notified: false,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_refused_mute_comes_back_on_its_page_with_the_field_named_and_the_input_kept() {
    let h = H::new().await;
    host_with_alert(&h).await;
    h.user("olga", Role::Operator).await;
    let s = h.login("olga").await;
    for (back, page_mark) in [
        ("/hosts/h1%23mutes", "Maintenance windows"),
        ("/alerts/a1", "Deliveries"),
        ("/alerts%3Fstate%3Dopen%26host%3Dh1", "Not acknowledged"),
    ] {
        let (status, page) = post(
            &h,
            &s,
            "/alerts/mute",
            &format!("host=h1&for_mins=60&until=next+tuesday&reason=kernel+patch&back={back}"),
        )
        .await;
        assert_eq!(status, 422, "{back}: {page}");
        assert!(page.contains(page_mark), "{back}: the page it came from");
        assert!(
            page.contains(r#"id="until-error""#) && page.contains("is not a date and time"),
            "{back}: the field is named: {page}"
        );
        assert!(
            page.contains(r#"value="next tuesday""#) && page.contains(r#"value="kernel patch""#),
            "{back}: the input is kept"
        );
        assert!(
            page.contains(r#"aria-invalid="true""#),
            "{back}: the field is marked"
        );
    }
    // A duration out of range keeps the reason and names the duration.
    let (status, page) = post(
        &h,
        &s,
        "/alerts/mute",
        "host=h1&for_mins=0&reason=kept&back=/hosts/h1",
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains(r#"id="for_mins-error""#) && page.contains(r#"value="kept""#));
    let (_, host_page) = get(&h, &s, "/hosts/h1").await;
    assert!(
        !host_page.contains("kernel patch") && !host_page.contains("-error\""),
        "a fresh page shows an empty form"
    );
}

#[tokio::test]
async fn a_refused_maintenance_window_comes_back_on_the_host_page_with_the_input_kept() {
    let h = H::new().await;
    host_with_alert(&h).await;
    h.user("olga", Role::Operator).await;
    let s = h.login("olga").await;
    let (status, page) = post(
        &h,
        &s,
        "/hosts/h1/maintenance",
        "cron=0+25+*+*+*&timezone=Europe%2FBerlin&duration_mins=90&reason=nightly+reboot",
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("Maintenance windows"), "the host page");
    assert!(
        page.contains(r#"id="cron-error""#),
        "the cron is named: {page}"
    );
    for kept in [
        r#"value="0 25 * * *""#,
        r#"value="Europe/Berlin""#,
        r#"value="90""#,
        r#"value="nightly reboot""#,
    ] {
        assert!(page.contains(kept), "{kept} kept");
    }
    let (status, page) = post(
        &h,
        &s,
        "/hosts/h1/maintenance",
        "cron=0+2+*+*+*&timezone=Mars%2FOlympus&duration_mins=90",
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains(r#"id="timezone-error""#), "{page}");
    assert!(page.contains(r#"value="Mars/Olympus""#));
    let (status, page) = post(
        &h,
        &s,
        "/hosts/h1/maintenance",
        "cron=0+2+*+*+*&timezone=UTC&duration_mins=2000",
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains(r#"id="duration_mins-error""#), "{page}");
    assert!(page.contains(r#"value="2000""#));
}

#[tokio::test]
async fn a_mute_until_a_time_is_read_in_the_browsers_zone_and_stored_in_utc() {
    let mut h = H::new().await;
    h.with_alerts().await;
    host_with_alert(&h).await;
    h.user("olga", Role::Operator).await;
    let s = h.login("olga").await;
    // T0 is 2027-01-15T08:00Z; 18:30 in Tokyo (UTC+9) that day is 09:30Z.
    let (status, page) = post(
        &h,
        &s,
        "/alerts/mute",
        "host=h1&for_mins=60&until=2027-01-15T18%3A30&tz=Asia%2FTokyo&back=/hosts/h1",
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let want = jiff::civil::date(2027, 1, 15)
        .at(9, 30, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_millisecond();
    let mut c = h.state.store.read().await.unwrap();
    let muted = rm_store::mutes::muted_at(&mut c, "h1", T0)
        .await
        .unwrap()
        .expect("muted");
    assert_eq!(muted.until, want, "stored as the UTC instant");
    drop(c);
    let (_, page) = get(&h, &s, "/hosts/h1").await;
    assert!(
        page.contains(r#"<time datetime="2027-01-15T09:30:00Z" data-local>"#),
        "shown as a time the script puts in the browser's zone: {page}"
    );
    assert!(
        page.contains(r#"name="tz""#) && page.contains("data-browser-tz"),
        "the form carries the zone the script fills in"
    );
}

#[tokio::test]
async fn muting_a_host_reaches_the_dashboard_as_an_event_and_its_row_says_muted() {
    let mut h = H::new().await;
    h.with_alerts().await;
    host_with_alert(&h).await;
    h.user("olga", Role::Operator).await;
    let s = h.login("olga").await;
    let (_, row) = get(&h, &s, "/fragments/fleet?ids=h1").await;
    assert!(row.contains("id=\"host-h1\""), "{row}");
    assert!(!row.contains("data-field=\"muted\""), "not muted yet");
    tokio::spawn(rm_web::events::pump(h.state.clone()));
    let mut events = h.state.events.subscribe();
    // The pump subscribes asynchronously: mute until its event arrives.
    let event = 'found: loop {
        let (status, _) = post(&h, &s, "/alerts/mute", "host=h1&for_mins=60&back=/hosts/h1").await;
        assert_eq!(status, 303);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
            let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            if e.name == "alert" && data["type"] == "mutes" {
                break 'found data;
            }
        }
    };
    assert_eq!(
        event["host_id"], "h1",
        "the dashboard script refreshes this host's row"
    );
    let (_, row) = get(&h, &s, "/fragments/fleet?ids=h1").await;
    assert!(
        row.contains("data-field=\"muted\""),
        "the row says muted: {row}"
    );
}
