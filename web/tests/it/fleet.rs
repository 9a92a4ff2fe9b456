//! The fleet at scale (scale branch): host tags go through the control
//! plane (the owner of hosts), are audited, filter the dashboard and its
//! JSON twin, and are shown as text.

use axum::body::Body;
use axum::http::header;
use rm_web::auth::Role;
use serde_json::json;

use crate::harness::*;

async fn add_host(h: &H, token: &str, name: &str) -> String {
    let (status, added) = h
        .api(token, "POST", "/api/v1/hosts", Some(json!({"name": name})))
        .await;
    assert_eq!(status, 201, "{added}");
    added["host_id"].as_str().unwrap().to_owned()
}

/// Seeds `hosts` hosts (with their jobs and snapshots) ending now.
async fn seed_fleet(h: &H, hosts: usize) {
    seed_fleet_of(h, hosts, rm_store::seed::Spec::default()).await;
}

/// Seeds `hosts` hosts ending now, with `spec`'s jobs and snapshots.
async fn seed_fleet_of(h: &H, hosts: usize, spec: rm_store::seed::Spec) {
    let spec = rm_store::seed::Spec {
        hosts,
        now_ms: h.state.now(),
        ..spec
    };
    rm_store::seed::fleet(&h.state.store, &spec).await.unwrap();
}

/// Posts the form `body` (its CSRF token added) to `path` as `s`; the
/// status and the page.
async fn post_form(h: &H, s: &Session, path: &str, body: &str) -> (u16, String) {
    let body = format!("_csrf={}&{body}", s.csrf);
    let resp = h
        .send(
            form(req("POST", path), &body)
                .header(header::COOKIE, s.header())
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    (resp.status().as_u16(), text(resp).await)
}

#[tokio::test]
async fn host_tags_are_saved_by_the_owner_audited_and_filter_the_fleet() {
    let mut h = H::new().await;
    h.with_controlplane().await;
    let op = h.token(Role::Operator).await;
    let viewer = h.token(Role::Viewer).await;
    let a = add_host(&h, &op, "db-1").await;
    let b = add_host(&h, &op, "web-1").await;
    let _c = add_host(&h, &op, "web-2").await;

    let (status, saved) = h
        .api(
            &op,
            "PUT",
            &format!("/api/v1/hosts/{a}/tags"),
            Some(json!({"tags": [" prod ", "<b>db</b>", "prod"]})),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["tags"], json!(["<b>db</b>", "prod"]));
    let (status, _) = h
        .api(
            &op,
            "PUT",
            &format!("/api/v1/hosts/{b}/tags"),
            Some(json!({"tags": ["dev"]})),
        )
        .await;
    assert_eq!(status, 200);

    // the JSON twin filters by tag, and every row carries its tags
    let (status, page) = h.api(&viewer, "GET", "/api/v1/hosts?tag=prod", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1);
    assert_eq!(page["hosts"][0]["id"], a.as_str());
    assert_eq!(page["hosts"][0]["tags"], json!(["<b>db</b>", "prod"]));
    assert_eq!(
        page["tags"],
        json!([{"tag": "<b>db</b>", "hosts": 1}, {"tag": "dev", "hosts": 1}, {"tag": "prod", "hosts": 1}])
    );
    let (_, all) = h.api(&viewer, "GET", "/api/v1/hosts", None).await;
    assert_eq!(all["total"], 3);
    let (_, one) = h
        .api(&viewer, "GET", &format!("/api/v1/hosts/{a}"), None)
        .await;
    assert_eq!(one["tags"], json!(["<b>db</b>", "prod"]));

    // bad tags: a field error, nothing changed; a viewer may not tag
    for bad in [json!(["a,b"]), json!(["x".repeat(41)]), json!(["a\u{7}"])] {
        let (status, err) = h
            .api(
                &op,
                "PUT",
                &format!("/api/v1/hosts/{a}/tags"),
                Some(json!({ "tags": bad })),
            )
            .await;
        assert_eq!(
            (status, err["error"]["field"].clone()),
            (400, json!("tags")),
            "{err}"
        );
    }
    let (status, _) = h
        .api(
            &viewer,
            "PUT",
            &format!("/api/v1/hosts/{a}/tags"),
            Some(json!({"tags": []})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = h
        .api(
            &op,
            "PUT",
            "/api/v1/hosts/nope/tags",
            Some(json!({"tags": ["x"]})),
        )
        .await;
    assert_eq!(status, 404);
    let (_, one) = h
        .api(&viewer, "GET", &format!("/api/v1/hosts/{a}"), None)
        .await;
    assert_eq!(one["tags"], json!(["<b>db</b>", "prod"]));

    // the owner audited who changed what
    let mut c = h.state.store.read().await.unwrap();
    let audit = rm_store::audit::recent(&mut c, 20).await.unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.action == "host.tags").count(),
        2,
        "{audit:?}"
    );
    drop(c);

    // the dashboard page: filtered rows, tags as text, the filter kept
    h.user("ann", Role::Operator).await;
    let s = h.login("ann").await;
    let resp = h
        .send(
            req("GET", "/?tag=%3Cb%3Edb%3C%2Fb%3E")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let html = text(resp).await;
    assert!(html.contains(">db-1</a>"), "the tagged host is listed");
    assert!(!html.contains(">web-1</a>"), "an untagged host is not");
    assert!(
        html.contains(">&#60;b&#62;db&#60;/b&#62;</a>"),
        "the tag is text"
    );
    assert!(!html.contains("<b>db</b>"), "never markup");

    // the host page's form: a refused list is shown again as typed
    let tags = format!("/hosts/{b}/tags");
    let (status, html) = post_form(&h, &s, &tags, &format!("tags=ok%2C+{}", "y".repeat(41))).await;
    assert_eq!(status, 422);
    assert!(html.contains("longer than 40 characters"), "{html}");
    assert!(html.contains(&format!("value=\"ok, {}\"", "y".repeat(41))));
    let (status, _) = post_form(&h, &s, &tags, "tags=dev%2C+site-a").await;
    assert_eq!(status, 303);
    let (_, one) = h
        .api(&viewer, "GET", &format!("/api/v1/hosts/{b}"), None)
        .await;
    assert_eq!(one["tags"], json!(["dev", "site-a"]));
}

/// The `<tr id="host-ID" ...>...</tr>` of a host in a page.
fn row_of<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let start = html.find(&format!("<tr id=\"host-{id}\""))?;
    let end = html[start..].find("</tr>")? + start + "</tr>".len();
    Some(&html[start..end])
}

#[tokio::test]
async fn the_live_fragment_renders_only_the_named_rows_exactly_as_the_page_does() {
    let h = H::new().await;
    seed_fleet(&h, 30).await;
    h.user("vic", Role::Viewer).await;
    let s = h.login("vic").await;
    let get = |path: String| {
        let cookie = s.header();
        let h = &h;
        async move {
            let resp = h
                .send(
                    req("GET", &path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(resp.status(), 200, "{path}");
            text(resp).await
        }
    };
    let page = get("/?sort=name".into()).await;
    let ids: Vec<String> = page
        .match_indices("<tr id=\"host-")
        .map(|(i, _)| {
            let rest = &page[i + "<tr id=\"host-".len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect();
    assert!(ids.len() >= 20, "{ids:?}");
    let (a, b) = (&ids[3], &ids[11]);
    let have = ids.join(",");
    let frag = get(format!(
        "/fragments/fleet?sort=name&ids={a},{b},nope&have={have}"
    ))
    .await;
    assert_eq!(frag.matches("<tr id=\"host-").count(), 2, "{frag}");
    assert_eq!(row_of(&frag, a), row_of(&page, a), "same row as the page");
    assert_eq!(row_of(&frag, b), row_of(&page, b));
    assert!(row_of(&frag, &ids[0]).is_none(), "no other row");
    assert_eq!(order_of(&frag), ids, "the page's ids in the page's order");
    assert!(frag.contains("id=\"counters\""), "the counters come along");
    assert!(frag.contains("id=\"fleet-pager\""), "and the pager");
    let frag = get(format!("/fragments/fleet?state=ok&have={have}")).await;
    assert!(frag.contains("href=\"/?state=ok\" aria-current=\"true\""));
    // nothing named, everything shown: the counters and the order alone
    let frag = get(format!("/fragments/fleet?sort=name&have={have}")).await;
    assert_eq!(frag.matches("<tr id=\"host-").count(), 0);
    assert!(frag.contains("id=\"counters\""));
    // a bad filter is a field error
    let resp = h
        .send(
            req("GET", "/fragments/fleet?sort=size")
                .header(header::COOKIE, s.header())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 400);
}

/// The ids of `data-order="..."` in a fleet fragment.
fn order_of(html: &str) -> Vec<String> {
    let start = html.find("data-order=\"").expect("a data-order") + "data-order=\"".len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_live_fragment_drops_a_host_that_left_the_filter_and_brings_one_that_entered() {
    let mut h = H::new().await;
    h.with_controlplane().await;
    let op = h.token(Role::Operator).await;
    let a = add_host(&h, &op, "db-1").await;
    let b = add_host(&h, &op, "web-1").await;
    let tag = |id: String, tags: serde_json::Value| {
        let (h, op) = (&h, &op);
        async move {
            let (status, body) = h
                .api(
                    op,
                    "PUT",
                    &format!("/api/v1/hosts/{id}/tags"),
                    Some(json!({ "tags": tags })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    tag(a.clone(), json!(["prod"])).await;
    h.user("vic", Role::Viewer).await;
    let s = h.login("vic").await;
    let get = |path: String| {
        let cookie = s.header();
        let h = &h;
        async move {
            let resp = h
                .send(
                    req("GET", &path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(resp.status(), 200, "{path}");
            text(resp).await
        }
    };
    let page = get("/?tag=prod".into()).await;
    assert!(row_of(&page, &a).is_some() && row_of(&page, &b).is_none());

    // a leaves the filter, b enters it: the page showing a asks after a
    tag(a.clone(), json!([])).await;
    tag(b.clone(), json!(["prod"])).await;
    let frag = get(format!("/fragments/fleet?tag=prod&ids={a}&have={a}")).await;
    assert_eq!(order_of(&frag), vec![b.clone()], "{frag}");
    assert!(
        row_of(&frag, &a).is_none(),
        "the row that left is not rendered"
    );
    let row = row_of(&frag, &b).expect("the row that entered is rendered");
    assert_eq!(Some(row), row_of(&get("/?tag=prod".into()).await, &b));
    assert!(frag.contains("1–1 of 1 hosts"), "the pager follows");

    // a new host inside the filter comes, in the page's sort; one shown
    // and not named is not rendered again
    let c = add_host(&h, &op, "app-0").await;
    tag(c.clone(), json!(["prod"])).await;
    let frag = get(format!("/fragments/fleet?tag=prod&sort=name&have={b}")).await;
    assert_eq!(order_of(&frag), vec![c.clone(), b.clone()]);
    assert!(row_of(&frag, &c).is_some() && row_of(&frag, &b).is_none());

    // nobody left in the filter: an empty order and the empty note shown
    tag(b.clone(), json!([])).await;
    tag(c.clone(), json!([])).await;
    let frag = get(format!("/fragments/fleet?tag=prod&have={b},{c}")).await;
    assert!(order_of(&frag).is_empty());
    assert!(
        frag.contains("<p class=\"empty\" id=\"fleet-empty\" data-swap>"),
        "{frag}"
    );
}

#[tokio::test]
async fn host_filters_take_a_name_and_pages_load_only_the_listed_hosts_names() {
    let h = H::new().await;
    seed_fleet(&h, 30).await;
    h.user("vic", Role::Viewer).await;
    let s = h.login("vic").await;
    let get = |path: String| {
        let cookie = s.header();
        let h = &h;
        async move {
            let resp = h
                .send(
                    req("GET", &path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            (resp.status().as_u16(), text(resp).await)
        }
    };
    // the jobs list filtered by a host's name: only its jobs, the name shown
    let (status, html) = get("/jobs?host=host-00007".into()).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("href=\"/hosts/seed-h000007\""),
        "its jobs are listed"
    );
    assert!(
        !html.contains("seed-h000008") && !html.contains("host-00008"),
        "no other host's name is loaded into the page"
    );
    assert!(
        html.contains("value=\"host-00007\""),
        "the filter shows the name"
    );
    // by id, the same list
    let (_, by_id) = get("/jobs?host=seed-h000007".into()).await;
    assert!(by_id.contains("value=\"host-00007\""));

    // the alerts page names only the hosts of the alerts it lists
    let mut conn = h.state.store.read().await.unwrap();
    let alerted: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT h.name FROM alerts a JOIN hosts h ON h.id = a.host_id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    drop(conn);
    let (status, html) = get("/alerts?state=all".into()).await;
    assert_eq!(status, 200);
    for i in 0..30 {
        let name = format!("host-{i:05}");
        assert!(
            !html.contains(&format!(">{name}<")) || alerted.contains(&name),
            "{name} has no alert and is not in the page"
        );
    }

    // the suggestions: by name, page by page
    let (status, body) = get("/api/v1/host-names?q=host-0001&limit=4".into()).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{page}");
    assert!(
        names.windows(2).all(|w| w[0] < w[1]) && names.iter().all(|n| n.starts_with("host-0001"))
    );
    let next = page["next"].as_str().expect("more than four match");
    let (_, body) = get(format!(
        "/api/v1/host-names?q=host-0001&limit=4&cursor={next}"
    ))
    .await;
    let more: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first_of_next = more["items"][0]["name"].as_str().unwrap();
    assert!(first_of_next > names[3], "the next page follows: {more}");
    for (bad, field) in [("limit=0", "limit"), ("cursor=%25%25", "cursor")] {
        let (status, body) = get(format!("/api/v1/host-names?{bad}")).await;
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_snapshots_api_pages_newest_first_by_cursor_with_a_total_of_one_host_or_all() {
    let h = H::new().await;
    seed_fleet_of(
        &h,
        3,
        rm_store::seed::Spec {
            jobs_per_host: 12,
            snapshots_per_host: 7,
            ..rm_store::seed::Spec::default()
        },
    )
    .await;
    let viewer = h.token(Role::Viewer).await;
    let mut conn = h.state.store.read().await.unwrap();
    let (host, restic_host): (String, String) = sqlx::query_as(
        "SELECT h.id, h.restic_host FROM hosts h
         WHERE (SELECT COUNT(*) FROM snapshots s WHERE s.hostname = h.restic_host) > 3
         ORDER BY h.id LIMIT 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let of_host: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM snapshots WHERE repo_id = 'seed-repo-0000' AND hostname = ?",
    )
    .bind(&restic_host)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let of_repo: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE repo_id = 'seed-repo-0000'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    drop(conn);
    assert!(of_repo > of_host && of_host > 3, "{of_repo} {of_host}");

    // walk every page of one host, then of the whole repository, 3 at a time
    for (query, expected, hostname) in [
        (
            format!("repo=seed-repo-0000&host={host}"),
            of_host,
            Some(restic_host.as_str()),
        ),
        ("repo=seed-repo-0000".to_owned(), of_repo, None),
    ] {
        let mut seen: Vec<(i64, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/snapshots?{query}&limit=3&cursor={c}"),
                None => format!("/api/v1/snapshots?{query}&limit=3"),
            };
            let (status, page) = h.api(&viewer, "GET", &path, None).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["total"], expected, "{query}: the total of every page");
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 3);
            for s in items {
                if let Some(hn) = hostname {
                    assert_eq!(s["hostname"], hn);
                }
                seen.push((
                    s["time"].as_i64().unwrap(),
                    s["snapshot_id"].as_str().unwrap().to_owned(),
                ));
            }
            match page["next"].as_str() {
                Some(n) => cursor = Some(n.to_owned()),
                None => break,
            }
        }
        assert_eq!(
            i64::try_from(seen.len()).unwrap(),
            expected,
            "{query}: every snapshot once"
        );
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "{query}: newest first, no repeats"
        );
    }

    // bad paging input is a field error
    for (path, field) in [
        ("/api/v1/snapshots?repo=seed-repo-0000&limit=0", "limit"),
        ("/api/v1/snapshots?repo=seed-repo-0000&limit=501", "limit"),
        (
            "/api/v1/snapshots?repo=seed-repo-0000&cursor=nope",
            "cursor",
        ),
        ("/api/v1/snapshots", "repo"),
    ] {
        let (status, err) = h.api(&viewer, "GET", path, None).await;
        assert_eq!(
            (status, err["error"]["field"].clone()),
            (400, json!(field)),
            "{path}: {err}"
        );
    }
}

#[tokio::test]
async fn the_restore_wizard_pages_its_host_list_and_checks_a_typed_host_name() {
    let h = H::new().await;
    seed_fleet_of(
        &h,
        60,
        rm_store::seed::Spec {
            jobs_per_host: 3,
            snapshots_per_host: 1,
            ..rm_store::seed::Spec::default()
        },
    )
    .await;
    h.user("olga", Role::Operator).await;
    let s = h.login("olga").await;
    let get = |path: String| {
        let cookie = s.header();
        let h = &h;
        async move {
            let resp = h
                .send(
                    req("GET", &path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            (resp.status().as_u16(), text(resp).await)
        }
    };
    let listed = |html: &str| html.matches("<li><a href=\"/restore?host=").count();
    // the seed revokes a few hosts: they are never offered
    let mut c = h.state.store.read().await.unwrap();
    let current: usize =
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM hosts WHERE status != 'revoked'")
            .fetch_one(&mut *c)
            .await
            .unwrap()
            .try_into()
            .unwrap();
    let matching: usize = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM hosts WHERE status != 'revoked' AND name LIKE 'host-0001%'",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap()
    .try_into()
    .unwrap();
    let (id, name): (String, String) = sqlx::query_as(
        "SELECT id, name FROM hosts WHERE status != 'revoked'
           AND id IN (SELECT host_id FROM host_repositories) ORDER BY name LIMIT 1 OFFSET 7",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    drop(c);
    assert!(current > 50 && matching > 1);

    // the host step: a search box and the first 50 names, then the rest
    let (status, html) = get("/restore".into()).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"host\" name=\"host\" value=\"\""),
        "a search box"
    );
    assert!(
        html.contains("data-host-search"),
        "fed by the host-names API"
    );
    assert_eq!(listed(&html), 50, "one page of names, not the fleet");
    let more = html
        .split("href=\"")
        .filter_map(|p| p.split('"').next())
        .find(|p| p.contains("hosts_after="))
        .expect("a link to the next page")
        .replace("&amp;", "&");
    let (_, rest) = get(more).await;
    assert_eq!(listed(&rest), current - 50, "the others");
    assert!(!rest.contains(">host-00000<"), "not the first page again");
    assert!(!rest.contains("rel=\"next\""), "no page after the last");

    // a typed name or id leads to that host's repositories
    for typed in [&name, &id] {
        let (status, html) = get(format!("/restore?host={typed}")).await;
        assert_eq!(status, 200, "{typed}");
        assert!(html.contains("Which repository?"), "{typed}");
        assert!(
            html.contains(&format!(
                "href=\"/restore?host={id}&#38;repo=seed-repo-0000\""
            )),
            "{typed}: its repository is offered"
        );
    }

    // a name that names no host: the field's error, the input kept, and the
    // hosts whose name contains it listed
    let (status, html) = get("/restore?host=host-0001".into()).await;
    assert_eq!(status, 422);
    assert!(
        html.contains("id=\"host-error\">no host is named"),
        "{html}"
    );
    assert!(html.contains("value=\"host-0001\""), "the input is kept");
    assert_eq!(
        listed(&html),
        matching,
        "the current hosts host-00010 to host-00019"
    );

    // the target host: typed by name; an unknown one is refused with the
    // input kept, and no job is made
    let jobs_before: i64 = {
        let mut c = h.state.store.read().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(&mut *c)
            .await
            .unwrap()
    };
    let (status, html) = post_form(
        &h,
        &s,
        "/restore",
        &format!(
            "host={id}&repo=seed-repo-0000&snapshot=s1&sel=%2Fa&target=path&target_path=%2Ftmp%2Fr&target_host=no-such-host"
        ),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        html.contains("id=\"target_host-error\">no current host is named"),
        "{html}"
    );
    assert!(html.contains("name=\"target_host\" value=\"no-such-host\""));
    let mut c = h.state.store.read().await.unwrap();
    let jobs_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(jobs_before, jobs_after, "nothing was started");
}

#[tokio::test]
async fn the_repositories_list_pages_by_name_filters_by_name_or_url_and_pickers_list_no_fleet() {
    let h = H::new().await;
    seed_fleet_of(
        &h,
        120,
        rm_store::seed::Spec {
            jobs_per_host: 1,
            snapshots_per_host: 1,
            hosts_per_repo: 1,
            ..Default::default()
        },
    )
    .await;
    h.user("ops", Role::Operator).await;
    let s = h.login("ops").await;
    let get = |path: &str| {
        let req = req("GET", path)
            .header(header::COOKIE, s.header())
            .body(Body::empty())
            .unwrap();
        let h = &h;
        async move {
            let resp = h.send(req).await;
            (resp.status().as_u16(), text(resp).await)
        }
    };
    let listed = |html: &str| -> Vec<String> {
        html.split("<tr id=\"repo-")
            .skip(1)
            .map(|row| row.split('"').next().unwrap().to_owned())
            .collect()
    };
    let ids = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|r| format!("seed-repo-{r:04}")).collect()
    };

    // a page of 50 by name, the count of all, a link to the next
    let (status, html) = get("/repositories").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&html), ids(0..50));
    assert!(html.contains("1–50 of 120 repositories"), "{html}");
    assert!(html.contains("href=\"/repositories?page=2\" rel=\"next\""));
    assert!(!html.contains("rel=\"prev\""));
    assert!(
        html.contains("1 <span class=\"muted\">(1 append-only)</span>"),
        "each repository's hosts are counted"
    );
    // the last page
    let (_, html) = get("/repositories?page=3").await;
    assert_eq!(listed(&html), ids(100..120));
    assert!(html.contains("101–120 of 120 repositories"));
    assert!(
        html.contains("href=\"/repositories?page=2\" rel=\"prev\"")
            && !html.contains("rel=\"next\"")
    );
    // past the last page: said, with a way back
    let (status, html) = get("/repositories?page=9").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("There is no page 9: 120 repositories fill 3."),
        "{html}"
    );
    // by name, the filter kept in the pager's links
    let (_, html) = get("/repositories?q=REPO-001").await;
    assert_eq!(
        listed(&html),
        ids(10..20),
        "case-insensitive, part of the name"
    );
    assert!(html.contains("1–10 of 10 repositories") && html.contains("value=\"REPO-001\""));
    // past the last page of a filter: the same, the filter kept
    let (_, html) = get("/repositories?q=repo-001&page=2").await;
    assert!(
        html.contains("There is no page 2: 10 repositories fill 1.")
            && html.contains("href=\"/repositories?q=repo-001\">First page"),
        "{html}"
    );
    // by URL
    let (_, html) = get("/repositories?q=backup-7.example").await;
    assert_eq!(listed(&html), ids(7..8));
    // LIKE's wildcards are text
    let (_, html) = get("/repositories?q=%25").await;
    assert!(listed(&html).is_empty());
    assert!(
        html.contains("No repository's name or URL contains “%”."),
        "{html}"
    );
    // too long a filter is refused with the reason
    let (status, html) = get(&format!("/repositories?q={}", "x".repeat(201))).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("longer than 200 characters"));

    // the host pickers (attach, add through a host) suggest at most 20
    // enrolled names, not the fleet
    for path in ["/repositories/seed-repo-0000", "/repositories/new"] {
        let (status, html) = get(path).await;
        assert_eq!(status, 200, "{path}");
        let list = html
            .split("<datalist id=\"host-names\">")
            .nth(1)
            .and_then(|l| l.split("</datalist>").next())
            .unwrap_or_else(|| panic!("{path} has a host picker"));
        assert_eq!(list.matches("<option").count(), 20, "{path}: {list}");
    }
    // a host that is not there: refused at the field, what was typed kept
    let (status, html) = post_form(
        &h,
        &s,
        "/repositories/seed-repo-0000/attach",
        "host_id=no-such-host&access=full",
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        html.contains("id=\"attach-host-error\">no host has the name or id “no-such-host”"),
        "{html}"
    );
    assert!(html.contains("name=\"host_id\" value=\"no-such-host\""));
    let (status, html) = post_form(
        &h,
        &s,
        "/repositories/new",
        "name=n&mode=verify&host_id=nobody&url=rest%3Ahttps%3A%2F%2Fx%2Fr&password=p",
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        html.contains("no host has the name or id “nobody”"),
        "{html}"
    );
    assert!(html.contains("name=\"host_id\" value=\"nobody\""));
}

/// Walks `path` (which has a query already) page by page with `limit`;
/// the pages' items.
async fn walk(h: &H, token: &str, path: &str, limit: usize) -> Vec<Vec<serde_json::Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{path}&limit={limit}"),
            Some(c) => format!("{path}&limit={limit}&cursor={c}"),
        };
        let (status, page) = h.api(token, "GET", &url, None).await;
        assert_eq!(status, 200, "{url}: {page}");
        let items = page["items"].as_array().unwrap().clone();
        assert!(items.len() <= limit, "{url}: at most the limit");
        pages.push(items);
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages.len() < 100, "the walk ends");
    }
    pages
}

#[tokio::test]
async fn the_repositories_and_schedules_apis_walk_by_cursor_filter_and_refuse_bad_paging() {
    let h = H::new().await;
    seed_fleet_of(
        &h,
        120,
        rm_store::seed::Spec {
            jobs_per_host: 1,
            snapshots_per_host: 1,
            hosts_per_repo: 1,
            ..Default::default()
        },
    )
    .await;
    let viewer = h.token(Role::Viewer).await;
    let field = |v: &[serde_json::Value], k: &str| -> Vec<String> {
        v.iter()
            .map(|r| r[k].as_str().unwrap().to_owned())
            .collect()
    };

    // repositories: 120 by name in pages of 50, 50, 20; the last has no next
    let pages = walk(&h, &viewer, "/api/v1/repos?q=", 50).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
    let all: Vec<serde_json::Value> = pages.concat();
    let names = field(&all, "name");
    let want: Vec<String> = (0..120).map(|r| format!("repo-{r:04}")).collect();
    assert_eq!(names, want, "every repository once, by name");
    let first = &all[0];
    assert_eq!(first["id"], "seed-repo-0000");
    assert_eq!(first["url"], "rest:https://backup-0.example.internal/fleet");
    assert_eq!(
        (
            first["host_count"].as_i64(),
            first["append_only_host_count"].as_i64()
        ),
        (Some(1), Some(1)),
        "each with its hosts counted: {first}"
    );
    assert!(
        first["hosts"].is_null(),
        "the attached hosts are in get only"
    );
    // the default page is 50
    let (_, page) = h.api(&viewer, "GET", "/api/v1/repos", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    // a filter on the name (case-insensitive) and one on the URL, walked
    let pages = walk(&h, &viewer, "/api/v1/repos?q=REPO-001", 4).await;
    assert_eq!(
        field(&pages.concat(), "name"),
        (10..20).map(|r| format!("repo-{r:04}")).collect::<Vec<_>>()
    );
    assert_eq!(pages.len(), 3, "10 in pages of 4");
    let pages = walk(&h, &viewer, "/api/v1/repos?q=backup-7.", 50).await;
    assert_eq!(field(&pages.concat(), "name"), ["repo-0007"]);
    let pages = walk(&h, &viewer, "/api/v1/repos?q=nothing-like-it", 50).await;
    assert_eq!(pages, [Vec::<serde_json::Value>::new()]);
    // one repository: its hosts listed and counted
    let (status, one) = h
        .api(&viewer, "GET", "/api/v1/repos/seed-repo-0003", None)
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["hosts"][0]["host_id"], "seed-h000003");
    assert_eq!(one["hosts"][0]["access"], "append_only");
    assert_eq!(
        (
            one["host_count"].as_i64(),
            one["append_only_host_count"].as_i64()
        ),
        (Some(1), Some(1))
    );

    // schedules: one per host, by host, in pages; of one host
    let want: Vec<(String, String)> = {
        let mut c = h.state.store.read().await.unwrap();
        sqlx::query_as("SELECT host_id, id FROM schedules ORDER BY host_id, id")
            .fetch_all(&mut *c)
            .await
            .unwrap()
    };
    assert!(want.len() > 100, "the seed made a schedule for most hosts");
    let pages = walk(&h, &viewer, "/api/v1/schedules?", 50).await;
    assert_eq!(pages.len(), want.len().div_ceil(50));
    let all = pages.concat();
    let got: Vec<(String, String)> = field(&all, "host_id")
        .into_iter()
        .zip(field(&all, "id"))
        .collect();
    assert_eq!(got, want, "every schedule once, by host and id");
    let pages = walk(&h, &viewer, "/api/v1/schedules?host=seed-h000042", 50).await;
    assert_eq!(field(&pages.concat(), "id"), ["seed-s000042"]);

    // bad paging is refused, naming the parameter
    let long = "x".repeat(201);
    for (path, want) in [
        ("/api/v1/repos?limit=0", "limit"),
        ("/api/v1/repos?limit=501", "limit"),
        ("/api/v1/repos?cursor=%21%21", "cursor"),
        (&format!("/api/v1/repos?q={long}"), "q"),
        ("/api/v1/schedules?limit=0", "limit"),
        ("/api/v1/schedules?cursor=%21%21", "cursor"),
        // a cursor of another list's making (one part, not host and id)
        ("/api/v1/schedules?cursor=cmVwby0wMDA1", "cursor"),
    ] {
        let (status, err) = h.api(&viewer, "GET", path, None).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(want)),
            "{path}: {err}"
        );
    }
}

/// A repository's page and its API twin say when its periodic full
/// refresh is next due (each repository at its own time in the control
/// plane's period), and when one is due but no host of it is online.
#[tokio::test]
async fn a_repositorys_page_and_api_say_when_its_next_periodic_refresh_falls() {
    let h = H::new().await;
    seed_fleet_of(
        &h,
        1,
        rm_store::seed::Spec {
            jobs_per_host: 0,
            snapshots_per_host: 0,
            hosts_per_repo: 1,
            ..Default::default()
        },
    )
    .await;
    let repo = "seed-repo-0000";
    let viewer = h.token(Role::Viewer).await;
    h.user("ops", Role::Operator).await;
    let s = h.login("ops").await;
    let page = || async {
        let req = req("GET", &format!("/repositories/{repo}"))
            .header(header::COOKIE, s.header())
            .body(Body::empty())
            .unwrap();
        let resp = h.send(req).await;
        assert_eq!(resp.status(), 200);
        let html = text(resp).await;
        html.split("id=\"next-refresh\">")
            .nth(1)
            .and_then(|p| p.split("</p>").next())
            .map(str::to_owned)
    };
    let api_next = || async {
        let (status, v) = h
            .api(&viewer, "GET", &format!("/api/v1/repos/{repo}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v["next_refresh_at"].as_i64()
    };
    // no control plane has said its period yet: nothing is said
    assert_eq!(page().await, None);
    assert_eq!(api_next().await, None);

    // a period of 6 h, the last refresh an hour ago, its host online
    let now = h.state.now();
    let hour = 3_600_000;
    let set = |last: i64, status: &'static str| {
        let store = h.state.store.clone();
        async move {
            let mut tx = store.write().await.unwrap();
            rm_store::refresh::publish_period(&mut tx, 6 * hour, 0)
                .await
                .unwrap();
            rm_store::refresh::mark_queued(&mut tx, repo, last)
                .await
                .unwrap();
            sqlx::query("UPDATE hosts SET status = ?")
                .bind(status)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    set(now - hour, "online").await;
    let want = {
        let mut c = h.state.store.read().await.unwrap();
        rm_store::refresh::cadence(&mut c, repo)
            .await
            .unwrap()
            .next_due(6 * hour)
    };
    assert!((now + 2 * hour..now + 8 * hour).contains(&want), "{want}");
    assert_eq!(api_next().await, Some(want));
    let said = page().await.expect("the page says when");
    assert!(
        said.starts_with("Next periodic refresh <time")
            && said.contains(&format!("datetime=\"{}\"", rm_web::ui::fmt::iso(want)))
            && said.ends_with(" Every 6 h, at this repository's own time in the period."),
        "{said}"
    );

    // long overdue, its only host offline: due, and waiting for the host
    set(now - 48 * hour, "offline").await;
    let said = page().await.expect("the page says when");
    assert!(
        said.starts_with("Periodic refresh due: waits for one of its hosts to come online."),
        "{said}"
    );
    // its host back: the sweep's next tick
    set(now - 48 * hour, "online").await;
    let said = page().await.expect("the page says when");
    assert!(
        said.starts_with("Periodic refresh due: queued at the control plane's next sweep."),
        "{said}"
    );
}
