//! Repository update, detach and delete over the API, through the real
//! control plane: refusals name the field or the obstacle, and a viewer
//! changes nothing.

use rm_web::auth::Role;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn repositories_are_renamed_detached_and_deleted_over_the_api_and_refusals_name_the_field_or_obstacle()
 {
    let mut h = H::new().await;
    h.with_controlplane().await;
    let op = h.token(Role::Operator).await;
    let viewer = h.token(Role::Viewer).await;
    let add = |name: &'static str| json!({"name": name, "secrets": {"url": format!("rest:http://u:p@127.0.0.1:1/{name}"), "password": "pw"}});
    let (status, added) = h
        .api(&op, "POST", "/api/v1/repos", Some(add("offsite")))
        .await;
    assert_eq!(status, 201, "{added}");
    let repo = added["repo_id"].as_str().unwrap().to_owned();
    let (status, _) = h
        .api(&op, "POST", "/api/v1/repos", Some(add("other")))
        .await;
    assert_eq!(status, 201);
    let (_, host) = h
        .api(&op, "POST", "/api/v1/hosts", Some(json!({"name": "web-1"})))
        .await;
    let host = host["host_id"].as_str().unwrap().to_owned();
    let (status, _) = h
        .api(
            &op,
            "POST",
            &format!("/api/v1/repos/{repo}/attach"),
            Some(json!({"host_id": host, "access": "full"})),
        )
        .await;
    assert_eq!(status, 204);
    let path = format!("/api/v1/repos/{repo}");

    // a viewer may not
    let (status, _) = h
        .api(&viewer, "PATCH", &path, Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 403);
    let (status, _) = h.api(&viewer, "DELETE", &path, None).await;
    assert_eq!(status, 403);

    // bad input names the field
    for (body, field) in [
        (json!({"name": "  "}), "name"),
        (json!({}), "name"),
        (json!({"url": ""}), "url"),
        (json!({"password": ""}), "password"),
    ] {
        let (status, err) = h.api(&op, "PATCH", &path, Some(body.clone())).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{body} → {err}"
        );
    }
    // a taken name
    let (status, err) = h
        .api(&op, "PATCH", &path, Some(json!({"name": "other"})))
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "name_taken");
    assert_eq!(err["error"]["field"], "name");
    assert_eq!(name_of(&h, &viewer, &path).await, "offsite");

    // renamed
    let (status, done) = h
        .api(&op, "PATCH", &path, Some(json!({"name": "offsite-b"})))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(name_of(&h, &viewer, &path).await, "offsite-b");

    // a new password needs a host that can open the repository: web-1 has
    // not enrolled, so it is refused with the reason and nothing changes
    let (status, err) = h
        .api(
            &op,
            "PATCH",
            &path,
            Some(json!({"name": "offsite-c", "password": "new"})),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not enrolled"),
        "{err}"
    );
    assert_eq!(name_of(&h, &viewer, &path).await, "offsite-b");

    // delete while web-1 is attached: refused, naming it
    let (status, err) = h.api(&op, "DELETE", &path, None).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "hosts_attached");
    assert_eq!(err["error"]["field"], "detach_hosts");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("web-1"),
        "{err}"
    );

    // detach, then delete
    let detach = format!("{path}/hosts/{host}");
    let (status, err) = h.api(&op, "DELETE", &detach, None).await;
    assert_eq!(status, 204, "{err}");
    let (status, err) = h.api(&op, "DELETE", &detach, None).await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = h.api(&op, "DELETE", &path, None).await;
    assert_eq!(status, 204, "{err}");
    let (status, _) = h.api(&viewer, "GET", &path, None).await;
    assert_eq!(status, 404);
    let (status, _) = h.api(&op, "DELETE", &path, None).await;
    assert_eq!(status, 404);

    // the owner audited each change as the operator
    let mut c = h.state.store.read().await.unwrap();
    let audit = rm_store::audit::recent(&mut c, 50).await.unwrap();
    for action in ["repo.update", "repo.detach", "repo.delete"] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor.starts_with("tok-operator")),
            "{action}: {audit:?}"
        );
    }
}

async fn name_of(h: &H, token: &str, path: &str) -> serde_json::Value {
    h.api(token, "GET", path, None).await.1["name"].clone()
}
