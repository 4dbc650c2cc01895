//! Redirect URI rules: registration (https or loopback) and matching (exact,
//! except that a loopback redirect may use any port, RFC 8252 7.3).

use url::Url;

use crate::config::is_loopback;
use crate::untrusted_url;

/// Why a redirect URI can't be registered, or `None` when it can. It must be
/// exactly its own serialization: it is later compared as a string and
/// written into `Location`.
pub fn registration_problem(uri: &str) -> Option<String> {
    let url = match untrusted_url::parse_exact(uri) {
        Ok(url) => url,
        Err(problem) => return Some(format!("{uri:?} {problem}")),
    };
    if url.fragment().is_some() {
        return Some(format!("{uri:?} has a fragment (RFC 6749 3.1.2)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some(format!("{uri:?} contains credentials"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => None,
        "http" if is_loopback(&url) => None,
        _ => Some(format!(
            "{uri:?} must use https, or http on a loopback address (127.0.0.1, [::1], localhost) (OAuth 2.1 section 2.3.1, RFC 8252 7.3)"
        )),
    }
}

/// True when `requested` is one of the `registered` redirect URIs: an exact
/// string match, or for loopback http URIs the same but for the port. A
/// request that is not exactly its own serialization never matches, so what
/// matched is safe to write into `Location` as it is.
pub fn matches(registered: &[String], requested: &str) -> bool {
    let Ok(req) = untrusted_url::parse_exact(requested) else {
        return false;
    };
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    if req.scheme() != "http" || !is_loopback(&req) {
        return false;
    }
    registered
        .iter()
        .filter_map(|r| Url::parse(r).ok())
        .any(|mut reg| {
            if reg.scheme() != "http" || !is_loopback(&reg) || reg.host() != req.host() {
                return false;
            }
            let _ = reg.set_port(req.port());
            reg == req
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        assert_eq!(registration_problem("https://app.example.com/cb"), None);
        assert_eq!(
            registration_problem("http://127.0.0.1:33418/callback"),
            None
        );
        assert_eq!(registration_problem("http://localhost/cb"), None);
        assert_eq!(registration_problem("http://[::1]:9/cb"), None);
        assert!(registration_problem("http://app.example.com/cb").is_some());
        assert!(registration_problem("https://app.example.com/cb#x").is_some());
        assert!(registration_problem("javascript:alert(1)").is_some());
        assert!(registration_problem("cb").is_some());
        for injected in [
            "https://app.example/cb\r\nSet-Cookie: a=b",
            "https://app.example/cb\n",
            "https://app.example/c\tb",
            "https://app.example/cb\0",
            "https://App.example/cb",
            "https://app.example",
        ] {
            assert!(registration_problem(injected).is_some(), "{injected:?}");
        }
    }

    #[test]
    fn a_requested_uri_with_control_characters_never_matches() {
        let reg = vec!["http://127.0.0.1/cb".to_string()];
        assert!(matches(&reg, "http://127.0.0.1:5555/cb"));
        assert!(!matches(
            &reg,
            "http://127.0.0.1:5555/cb\r\nSet-Cookie: a=b"
        ));
        assert!(!matches(&reg, "http://127.0.0.1:5555/c\tb"));
        assert!(!matches(&reg, "http://127.0.0.1:05555/cb"));
    }

    #[test]
    fn loopback_any_port_otherwise_exact() {
        let reg = vec![
            "http://127.0.0.1/callback".to_string(),
            "https://app.example.com/cb".to_string(),
        ];
        assert!(matches(&reg, "http://127.0.0.1:53211/callback"));
        assert!(matches(&reg, "http://127.0.0.1/callback"));
        assert!(!matches(&reg, "http://127.0.0.1:53211/other"));
        assert!(!matches(&reg, "http://localhost:53211/callback"));
        assert!(matches(&reg, "https://app.example.com/cb"));
        assert!(!matches(&reg, "https://app.example.com/cb/"));
        assert!(!matches(&reg, "https://app.example.com:8443/cb"));
        assert!(!matches(&reg, "https://app.example.com/cb?x=1"));
    }
}
