//! The nats-server configuration that trusts the authority's keys
//! (operator mode, `full` resolver), for users who run their own cluster.

use std::path::Path;

use anyhow::Result;

use super::authority::Authority;

/// Renders the `operator`, `system_account`, `resolver` and
/// `resolver_preload` blocks. Append `listen`, `cluster`, `tls` as needed.
/// `resolver_dir` is where nats-server keeps account JWT updates.
pub fn render(authority: &Authority, resolver_dir: &Path) -> Result<String> {
    let operator = authority.operator_jwt()?;
    let account = authority.account_jwt()?;
    let system = authority.system_account_jwt()?;
    let dir = resolver_dir.display().to_string();
    // Quote with JSON string rules, which nats' config parser shares.
    let dir = serde_json::to_string(&dir)?;
    Ok(format!(
        "# restic-manager: decentralized auth (operator mode)\n\
         operator: \"{operator}\"\n\
         system_account: \"{sys_pub}\"\n\
         resolver: {{\n  type: full\n  dir: {dir}\n  allow_delete: false\n  interval: \"2m\"\n}}\n\
         resolver_preload: {{\n  {acc_pub}: \"{account}\"\n  {sys_pub}: \"{system}\"\n}}\n",
        sys_pub = authority.system_account_public_key(),
        acc_pub = authority.account_public_key(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_key() {
        let a = Authority::generate(crate::clock::system());
        let text = render(&a, Path::new("/var/lib/nats/jwt")).unwrap();
        assert!(text.contains(&a.account_public_key()));
        assert!(text.contains(&format!(
            "system_account: \"{}\"",
            a.system_account_public_key()
        )));
        assert!(text.contains("type: full"));
        assert!(text.contains("dir: \"/var/lib/nats/jwt\""));
    }
}
