//! Set-up for the repository steps (`tests/browser/steps/40-repositories.mjs`):
//! the full-access URL of the browser test's REST repository and its
//! password, so the steps can add it again as an existing repository
//! through the add form (once with a wrong password, which must be named
//! as the reason, once with the right one).

/// Adds what the repository steps need to the browser test's config.
pub fn extend(
    mut config: serde_json::Value,
    rest_url: String,
    password: &str,
) -> serde_json::Value {
    if let Some(o) = config.as_object_mut() {
        o.insert("rest_url".into(), rest_url.into());
        o.insert("repo_password".into(), password.into());
    }
    config
}
