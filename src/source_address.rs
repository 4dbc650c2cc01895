//! Who sent a request, as far as the quota on client registration needs to
//! know: the downstream address Envoy determined. Envoy is where the trust in
//! forwarded addresses is configured (`use_remote_address`,
//! `xff_num_trusted_hops`); the filter never reads `X-Forwarded-For` itself,
//! which any client can write.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The quota key of a request's source (Envoy's `source.address`): an IPv4
/// address, or the /64 of an IPv6 address (one host usually holds a whole
/// /64). `None` when unknown.
pub fn quota_key(downstream: Option<&str>) -> Option<String> {
    let ip = parse_ip(downstream?)?;
    Some(match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    })
}

/// `ip`, `ip:port` or `[ipv6]:port`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_prefixes() {
        assert_eq!(quota_key(Some("127.0.0.2:51234")), Some("127.0.0.2".into()));
        assert_eq!(
            quota_key(Some("[2001:db8:1:2:3:4:5:6]:443")),
            Some("2001:db8:1:2::/64".into())
        );
        assert_eq!(
            quota_key(Some("[::ffff:10.0.0.1]:443")),
            Some("10.0.0.1".into())
        );
        assert_eq!(quota_key(None), None);
        assert_eq!(quota_key(Some("garbage")), None);
    }
}
