//! The client address of a request: the TCP peer, or — only when the peer
//! is a configured trusted proxy — the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy. It keys the login
//! throttle and is recorded with sessions and in the audit log.
//!
//! With no trusted proxy (the default) `X-Forwarded-For` is ignored, so a
//! client cannot choose its own address by sending the header.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Does the range hold `ip`? (An IPv4-mapped IPv6 address counts as
    /// its IPv4 address.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => masked(
                u128::from(n.to_bits()),
                u128::from(a.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => masked(n.to_bits(), a.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

fn masked(net: u128, addr: u128, width: u8, prefix: u8) -> bool {
    let shift = u32::from(width - prefix);
    if shift >= u128::BITS {
        return true;
    }
    (net >> shift) == (addr >> shift)
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let net = net.to_canonical();
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {width}"))?,
        };
        Ok(Self { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The client address given the TCP `peer`, the request's headers and the
/// trusted proxies (see the module doc). An `X-Forwarded-For` entry that
/// is not an address ends the walk at the last trusted hop.
pub fn client_ip(trusted: &[Cidr], peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    Some(client)
}

/// [`client_ip`] of a request from its `ConnectInfo` extension.
pub fn of_request(trusted: &[Cidr], ext: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    client_ip(trusted, peer, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // untrusted peer: the header is ignored
        assert_eq!(
            client_ip(&trusted, Some(ip("192.0.2.9")), &xff("198.51.100.1")),
            Some(ip("192.0.2.9"))
        );
        // trusted peer: the right-most untrusted hop, past other proxies
        assert_eq!(
            client_ip(
                &trusted,
                Some(ip("10.0.0.1")),
                &xff("1.2.3.4, 198.51.100.7, 10.0.0.2")
            ),
            Some(ip("198.51.100.7"))
        );
        // a garbage hop stops the walk at the last trusted one
        assert_eq!(
            client_ip(&trusted, Some(ip("::1")), &xff("198.51.100.7, nonsense")),
            Some(ip("::1"))
        );
        // no header: the proxy itself
        assert_eq!(
            client_ip(&trusted, Some(ip("10.1.1.1")), &HeaderMap::new()),
            Some(ip("10.1.1.1"))
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!(
            "::ffff:10.0.0.0/104"
                .parse::<Cidr>()
                .is_err_and(|e| e.contains("prefix"))
        );
    }
}
