//! Who sent a request, as far as the quota on client registration needs to
//! know: Envoy's downstream address, or, behind a configured number of
//! trusted proxies, the address the outermost of them saw. A forwarded
//! address is never believed without that configuration: any client can
//! send `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The quota key of a request's source: an IPv4 address, or the /64 of an
/// IPv6 address (one host usually holds a whole /64). `None` when unknown.
pub fn quota_key(
    downstream: Option<&str>,
    forwarded_for: Option<&str>,
    trusted_hops: usize,
) -> Option<String> {
    let ip = match trusted_hops {
        0 => parse_ip(downstream?),
        n => {
            // Each trusted proxy appended the address it saw (RFC 7239 5.2
            // for Forwarded; X-Forwarded-For by convention): the client is
            // the n-th from the right. Fewer entries: a proxy was bypassed.
            let entries: Vec<&str> = forwarded_for
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            match entries.len().checked_sub(n) {
                Some(i) => parse_ip(entries[i]),
                None => parse_ip(downstream?),
            }
        }
    }?;
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
    fn the_downstream_address_unless_proxies_are_trusted() {
        assert_eq!(
            quota_key(Some("127.0.0.2:51234"), Some("9.9.9.9"), 0),
            Some("127.0.0.2".into())
        );
        assert_eq!(
            quota_key(Some("[2001:db8:1:2:3:4:5:6]:443"), None, 0),
            Some("2001:db8:1:2::/64".into())
        );
        assert_eq!(
            quota_key(Some("[::ffff:10.0.0.1]:443"), None, 0),
            Some("10.0.0.1".into())
        );
        assert_eq!(quota_key(None, None, 0), None);
        assert_eq!(quota_key(Some("garbage"), None, 0), None);
        // One trusted proxy: the rightmost entry is what it saw.
        assert_eq!(
            quota_key(Some("10.0.0.5:1"), Some("6.6.6.6, 1.2.3.4"), 1),
            Some("1.2.3.4".into())
        );
        assert_eq!(
            quota_key(Some("10.0.0.5:1"), Some("6.6.6.6, 1.2.3.4"), 2),
            Some("6.6.6.6".into())
        );
        // Fewer entries than trusted proxies: the downstream address.
        assert_eq!(
            quota_key(Some("10.0.0.5:1"), Some("1.2.3.4"), 2),
            Some("10.0.0.5".into())
        );
    }
}
