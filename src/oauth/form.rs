//! `application/x-www-form-urlencoded` parameters, as OAuth reads them.

use std::collections::BTreeMap;

use super::error::OAuthError;

/// Request parameters. RFC 6749 3.1: "Request and response parameters MUST
/// NOT be included more than once", and empty values count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(input) {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "the parameter `{k}` is given more than once (RFC 6749 3.1)"
                )));
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| {
            OAuthError::invalid_request(format!("the parameter `{name}` is required"))
        })
    }
}

/// Builds `url?k=v&...`, appending to an existing query.
pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", out.finish())
}

/// One form-encoded component (RFC 6749 Appendix B).
pub fn encode_component(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Encodes a form body.
pub fn encode(params: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        out.append_pair(k, v);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_repeats() {
        let p = Params::parse(b"grant_type=authorization_code&code=a%2Bb&empty=").unwrap();
        assert_eq!(p.get("code"), Some("a+b"));
        assert_eq!(p.get("empty"), None);
        assert!(Params::parse(b"code=a&code=b").is_err());
        assert_eq!(p.require("nope").unwrap_err().code, "invalid_request");
    }

    #[test]
    fn query_building() {
        assert_eq!(
            with_query("https://c/cb", &[("code", "a b"), ("state", "x&y")]),
            "https://c/cb?code=a+b&state=x%26y"
        );
        assert_eq!(
            with_query("https://c/cb?k=1", &[("code", "z")]),
            "https://c/cb?k=1&code=z"
        );
    }
}
