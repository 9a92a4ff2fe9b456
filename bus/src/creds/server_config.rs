//! The nats-server configuration that trusts the authority's keys
//! (operator mode, `full` resolver), for users who run their own servers:
//! one server, a node of a cluster (routes) or a leaf node at a remote
//! site (remotes to the hub for the application and system accounts).
//! With [`Tls`], clients are served over TLS and routes and leaf node
//! connections are mutual TLS: both ends present a certificate issued by
//! the installation's CA (`authority bus-cert`) and verify the other's.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::authority::Authority;

/// Where one server listens and which servers it links to; what is unset
/// is left out of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// `server_name`: unique per server of a cluster.
    pub server_name: Option<String>,
    /// Clients (roles, agents): `HOST:PORT`.
    pub listen: Option<String>,
    /// The monitoring endpoint (`/varz`, `/connz`, `/routez`): `HOST:PORT`.
    pub http: Option<String>,
    pub cluster: Option<Cluster>,
    /// Accept leaf node connections here: `HOST:PORT`.
    pub leafnodes_listen: Option<String>,
    /// Be a leaf node of these hub servers.
    pub leaf: Option<LeafRemote>,
    /// This server's certificate: clients, routes and leaf connections
    /// use TLS.
    pub tls: Option<Tls>,
}

/// The files of a server's TLS blocks.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain (`authority bus-cert --cert-out`).
    pub cert: PathBuf,
    /// Its private key (`--key-out`).
    pub key: PathBuf,
    /// The installation's CA certificate (`DATA_DIR/ca/ca-cert.pem`):
    /// route and leaf peers must present a certificate it issued.
    pub ca: PathBuf,
}

/// Seconds a TLS handshake may take (nats-server's default of 2 s is
/// short for a loaded machine).
const TLS_TIMEOUT_SECS: u32 = 5;

/// The `authorization` block giving clients `timeout` (fractional
/// seconds) from accept to a valid CONNECT, the TLS handshake included.
/// [`render_layout`] writes it with [`crate::server::CLIENT_AUTH_TIMEOUT`]:
/// nats-server's default is 2 s without TLS and one more than the TLS
/// timeout with it, and a node taking the reconnects of a restarted
/// node's agents on a busy machine ran past 2 s for thousands of them,
/// each one cut off trying again after a longer pause (docs/benchmarks.md,
/// stop 36).
pub fn auth_timeout_block(timeout: std::time::Duration) -> String {
    format!(
        "authorization {{\n  timeout: {}\n}}\n",
        timeout.as_secs_f64()
    )
}

impl Tls {
    /// A `tls { … }` block at `indent`: `ca_file` is what a connecting
    /// end verifies the server with; `peer` also makes a listener ask the
    /// connecting end for a certificate from the CA (`verify: true`).
    fn block(&self, indent: &str, peer: bool) -> Result<String> {
        let mut out = format!(
            "{indent}tls {{\n{indent}  cert_file: {}\n{indent}  key_file: {}\n{indent}  ca_file: {}\n{indent}  timeout: {TLS_TIMEOUT_SECS}\n",
            quote(&self.cert.display().to_string())?,
            quote(&self.key.display().to_string())?,
            quote(&self.ca.display().to_string())?,
        );
        if peer {
            out.push_str(&format!("{indent}  verify: true\n"));
        }
        out.push_str(&format!("{indent}}}\n"));
        Ok(out)
    }
}

/// The `cluster` block of one node.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    /// Where this node accepts routes: `HOST:PORT`.
    pub listen: String,
    /// Route URLs (`nats://HOST:PORT`) of the other nodes; listing this
    /// node's own is harmless, so every node can share one list.
    pub routes: Vec<String>,
}

/// A leaf node's connections to its hub: one for the application account,
/// one for the system account (so account updates, revocations among
/// them, reach the leaf).
#[derive(Debug, Clone)]
pub struct LeafRemote {
    /// The hub's leaf node URLs (`nats-leaf://HOST:7422`).
    pub urls: Vec<String>,
    /// `.creds` of the application account's leaf node user
    /// (`authority creds --role leafnode`).
    pub creds: PathBuf,
    /// `.creds` of a system account user (`authority creds --role system`).
    pub system_creds: PathBuf,
}

/// Quotes with JSON string rules, which nats' config parser shares.
fn quote(s: &str) -> Result<String> {
    Ok(serde_json::to_string(s)?)
}

fn quote_list(items: &[String]) -> Result<String> {
    let items = items.iter().map(|s| quote(s)).collect::<Result<Vec<_>>>()?;
    Ok(format!("[{}]", items.join(", ")))
}

/// Renders the `operator`, `system_account`, `resolver` and
/// `resolver_preload` blocks. Append `listen`, `cluster`, `tls` as needed.
/// `resolver_dir` is where nats-server keeps account JWT updates.
pub fn render(authority: &Authority, resolver_dir: &Path) -> Result<String> {
    render_layout(authority, resolver_dir, &Layout::default())
}

/// [`render`] plus the blocks `layout` asks for.
pub fn render_layout(
    authority: &Authority,
    resolver_dir: &Path,
    layout: &Layout,
) -> Result<String> {
    let operator = authority.operator_jwt()?;
    let account = authority.account_jwt()?;
    let system = authority.system_account_jwt()?;
    let sys_pub = authority.system_account_public_key();
    let acc_pub = authority.account_public_key();
    let dir = quote(&resolver_dir.display().to_string())?;
    let mut out = String::new();
    if let Some(name) = &layout.server_name {
        out.push_str(&format!("server_name: {}\n", quote(name)?));
    }
    if let Some(listen) = &layout.listen {
        out.push_str(&format!("listen: {}\n", quote(listen)?));
    }
    if let Some(http) = &layout.http {
        out.push_str(&format!("http: {}\n", quote(http)?));
    }
    if let Some(tls) = &layout.tls {
        // clients (roles, agents) verify the server; they authenticate
        // with their JWT, not a certificate
        out.push_str("# clients: TLS from the installation's CA\n");
        out.push_str(&tls.block("", false)?);
    }
    out.push_str("# restic-manager: decentralized auth (operator mode)\n");
    out.push_str(&auth_timeout_block(crate::server::CLIENT_AUTH_TIMEOUT));
    out.push_str(&format!(
        "operator: \"{operator}\"\n\
         system_account: \"{sys_pub}\"\n\
         resolver: {{\n  type: full\n  dir: {dir}\n  allow_delete: false\n  interval: \"2m\"\n}}\n\
         resolver_preload: {{\n  {acc_pub}: \"{account}\"\n  {sys_pub}: \"{system}\"\n}}\n",
    ));
    // routes and leaf connections: mutual TLS, each end's certificate
    // from the installation's CA (the peers' authentication)
    let peer_tls = |indent: &str, listener: bool| -> Result<String> {
        layout
            .tls
            .as_ref()
            .map_or(Ok(String::new()), |t| t.block(indent, listener))
    };
    if let Some(c) = &layout.cluster {
        out.push_str(&format!(
            "cluster {{\n  name: {}\n  listen: {}\n  routes: {}\n{}}}\n",
            quote(&c.name)?,
            quote(&c.listen)?,
            quote_list(&c.routes)?,
            peer_tls("  ", true)?,
        ));
    }
    if let Some(listen) = &layout.leafnodes_listen {
        out.push_str(&format!(
            "leafnodes {{\n  listen: {}\n{}}}\n",
            quote(listen)?,
            peer_tls("  ", true)?,
        ));
    }
    if let Some(leaf) = &layout.leaf {
        let urls = quote_list(&leaf.urls)?;
        let mut remotes = String::new();
        for (account, creds) in [(&acc_pub, &leaf.creds), (&sys_pub, &leaf.system_creds)] {
            remotes.push_str(&format!(
                "    {{\n      urls: {urls}\n      account: \"{account}\"\n      credentials: {}\n{}    }}\n",
                quote(&creds.display().to_string())?,
                peer_tls("      ", false)?,
            ));
        }
        out.push_str(&format!("leafnodes {{\n  remotes: [\n{remotes}  ]\n}}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config's keys and structure: every quoted string blanked, so a
    /// word looked for cannot be found by chance inside a JWT's base64.
    fn unquoted(text: &str) -> String {
        text.split('"').step_by(2).collect::<Vec<_>>().join("\"\"")
    }

    #[test]
    fn unquoted_blanks_strings_and_keeps_keys() {
        let text = "operator: \"eyJtlsX\"\ntls {\n  cert_file: \"/a\"\n}\n";
        assert_eq!(
            unquoted(text),
            "operator: \"\"\ntls {\n  cert_file: \"\"\n}\n"
        );
        assert!(!unquoted("jwt: \"abctlsdef\"").contains("tls"));
    }

    #[test]
    fn names_every_key() {
        let a = Authority::generate(rm_bus::clock::system());
        let text = render(&a, Path::new("/var/lib/nats/jwt")).unwrap();
        assert!(text.contains(&a.account_public_key()));
        assert!(text.contains(&format!(
            "system_account: \"{}\"",
            a.system_account_public_key()
        )));
        assert!(text.contains("type: full"));
        assert!(text.contains("dir: \"/var/lib/nats/jwt\""));
        // clients get as long to authenticate as on the embedded bus
        assert!(
            text.contains("authorization {\n  timeout: 10\n}\n"),
            "{text}"
        );
        assert!(!unquoted(&text).contains("cluster"), "{text}");
    }

    #[test]
    fn a_cluster_node_and_a_leaf_get_their_blocks() {
        let a = Authority::generate(rm_bus::clock::system());
        let node = Layout {
            server_name: Some("nats-a".into()),
            listen: Some("0.0.0.0:4222".into()),
            http: Some("127.0.0.1:8222".into()),
            cluster: Some(Cluster {
                name: "rm".into(),
                listen: "0.0.0.0:6222".into(),
                routes: vec!["nats://nats-b:6222".into(), "nats://nats-c:6222".into()],
            }),
            leafnodes_listen: Some("0.0.0.0:7422".into()),
            leaf: None,
            tls: None,
        };
        let text = render_layout(&a, Path::new("/var/lib/nats/jwt"), &node).unwrap();
        for want in [
            "server_name: \"nats-a\"",
            "listen: \"0.0.0.0:4222\"",
            "http: \"127.0.0.1:8222\"",
            "name: \"rm\"",
            "routes: [\"nats://nats-b:6222\", \"nats://nats-c:6222\"]",
            "leafnodes {\n  listen: \"0.0.0.0:7422\"",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        let leaf = Layout {
            leaf: Some(LeafRemote {
                urls: vec!["nats-leaf://hub:7422".into()],
                creds: "/etc/nats/leaf.creds".into(),
                system_creds: "/etc/nats/system.creds".into(),
            }),
            ..Layout::default()
        };
        let text = render_layout(&a, Path::new("/var/lib/nats/jwt"), &leaf).unwrap();
        assert!(text.contains(&format!(
            "account: \"{}\"\n      credentials: \"/etc/nats/leaf.creds\"",
            a.account_public_key()
        )));
        assert!(text.contains(&format!(
            "account: \"{}\"\n      credentials: \"/etc/nats/system.creds\"",
            a.system_account_public_key()
        )));
        assert!(!unquoted(&text).contains("tls"), "{text}");
    }

    #[test]
    fn with_a_certificate_clients_get_tls_and_routes_and_leaf_connections_mutual_tls() {
        let a = Authority::generate(rm_bus::clock::system());
        let tls = Tls {
            cert: "/etc/nats/tls/cert.pem".into(),
            key: "/etc/nats/tls/key.pem".into(),
            ca: "/etc/nats/tls/ca.pem".into(),
        };
        let node = Layout {
            listen: Some("0.0.0.0:4222".into()),
            cluster: Some(Cluster {
                name: "rm".into(),
                listen: "0.0.0.0:6222".into(),
                routes: vec!["nats://nats-b:6222".into()],
            }),
            leafnodes_listen: Some("0.0.0.0:7422".into()),
            tls: Some(tls.clone()),
            ..Layout::default()
        };
        let text = render_layout(&a, Path::new("/var/lib/nats/jwt"), &node).unwrap();
        assert!(
            text.contains("tls {\n  cert_file: \"/etc/nats/tls/cert.pem\"\n  key_file: \"/etc/nats/tls/key.pem\""),
            "{text}"
        );
        // one block for clients (no client certificate asked), one each
        // for routes and leaf connections (verify: true)
        assert_eq!(text.matches("cert_file").count(), 3, "{text}");
        assert_eq!(text.matches("verify: true").count(), 2, "{text}");
        let leaf = Layout {
            leaf: Some(LeafRemote {
                urls: vec!["nats-leaf://hub:7422".into()],
                creds: "/etc/nats/leaf.creds".into(),
                system_creds: "/etc/nats/system.creds".into(),
            }),
            tls: Some(tls),
            ..Layout::default()
        };
        let text = render_layout(&a, Path::new("/var/lib/nats/jwt"), &leaf).unwrap();
        // clients, and each of the two remotes
        assert_eq!(text.matches("cert_file").count(), 3, "{text}");
        assert_eq!(text.matches("ca_file: \"/etc/nats/tls/ca.pem\"").count(), 3);
    }
}
