//! Bench-only bulk enrollment, for fleets too large to enroll one by one
//! on a busy machine: before the control plane starts, writes the hosts
//! straight into its database (the rows `host add` and `enroll` write) and
//! mints each agent's JWT with the installation's own authority (the data
//! dir's keys), with the same name, permissions and no expiry as the
//! control plane's enrollment ([`rm_controlplane`]'s `enroll`). The agent
//! keys are generated here, as an agent generates its own. Never for a
//! production installation: no tokens, no audit entries.

use std::path::Path;

use anyhow::Result;
use nkeys::{KeyPair, XKey};
use rm_bus::HostId;
use rm_bus::creds::Role;
use rm_bus_server::creds::authority::{Authority, UserSpec};

use crate::ident::Identity;

/// Adds and enrolls `count` hosts named `<prefix>-<n>` in `data_dir`'s
/// database (created and migrated if missing). The control plane must not
/// be running.
pub async fn enroll(
    data_dir: &Path,
    prefix: &str,
    start: usize,
    count: usize,
) -> Result<Vec<Identity>> {
    let authority = Authority::load_or_create(&data_dir.join("bus"), rm_bus::clock::system())?;
    let store = rm_store::Store::open(&data_dir.join("restic-manager.db")).await?;
    let now = crate::now_ms();
    let mut out = Vec::with_capacity(count);
    let mut tx = store.write().await?;
    for i in start..start + count {
        let name = format!("{prefix}-{i:05}");
        let host = HostId::generate();
        let nkey = KeyPair::new_user();
        let xkey = XKey::new();
        rm_store::hosts::insert(&mut tx, host.as_str(), &name, "sim bulk enroll", now).await?;
        let agent_version = format!("{}-sim", rm_agent::VERSION);
        rm_store::hosts::set_enrolled(
            &mut tx,
            host.as_str(),
            &rm_store::hosts::Enrollment {
                nkey: &nkey.public_key(),
                xkey: &xkey.public_key(),
                hostname: &name,
                os: "linux",
                arch: "x86_64",
                agent_version: &agent_version,
            },
            now,
        )
        .await?;
        let role = Role::Agent(host.clone());
        let jwt = authority.mint_user(&UserSpec {
            public_key: nkey.public_key(),
            name: role.name(),
            permissions: role.permissions(),
            expires: None,
        })?;
        out.push(Identity {
            host_id: host,
            jwt,
            seed: nkey.seed()?,
            xkey_seed: xkey.seed()?,
        });
    }
    tx.commit().await?;
    Ok(out)
}
