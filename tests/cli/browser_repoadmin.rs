//! Set-up for the repository administration steps
//! (`tests/browser/steps/45-repo-admin.mjs`): the URLs of a repository that
//! does not exist yet on the browser test's REST server — full access for
//! `restic init` through the add form, and the append-only server's URL for
//! attaching the host — and its password.

/// Adds `repoadmin` ({full_url, append_only_url, password}) to the config.
pub fn extend(
    mut config: serde_json::Value,
    (user, pass): (&str, &str),
    (full_port, ao_port): (u16, u16),
    password: &str,
) -> serde_json::Value {
    let url = |port: u16| format!("rest:http://{user}:{pass}@127.0.0.1:{port}/repo-admin");
    if let Some(o) = config.as_object_mut() {
        o.insert(
            "repoadmin".into(),
            serde_json::json!({
                "full_url": url(full_port),
                "append_only_url": url(ao_port),
                "password": password,
            }),
        );
    }
    config
}
