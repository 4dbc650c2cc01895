//! URLs that come from outside the filter (client registrations, metadata
//! documents, authorization requests, the identity provider's discovery
//! document, the configuration) are parsed once, here, and only their parsed
//! form is used afterwards.
//!
//! The WHATWG URL parser the `url` crate implements silently removes TAB, CR
//! and LF anywhere in the input and trims C0 controls and spaces at its ends
//! (URL Standard, basic URL parser, steps 1-3). A string that parses is
//! therefore no proof that it is safe to write into a `Location` header: the
//! raw input may still carry `\r\nSet-Cookie: ...`. So control characters are
//! refused outright, and where a URL is compared or stored as a string (a
//! redirect URI, RFC 6749 3.1.2 and OAuth 2.1 2.3.1 "exact string
//! matching"), the input must already be in its parsed serialization.

use url::Url;

/// Why an outside URL was refused; `Display` is a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// A C0 control, DEL, or a C1 control: never part of a URL (RFC 3986 2).
    ControlCharacter,
    /// Leading or trailing whitespace, which the parser would drop.
    Whitespace,
    /// Host names are ASCII here (punycode for IDNs), and written plainly.
    NotAscii,
    NotAbsolute(String),
    /// The input is not the URL's serialization (the parser changed it).
    NotCanonical {
        canonical: String,
    },
}

impl std::fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlProblem::ControlCharacter => f.write_str("contains a control character"),
            UrlProblem::Whitespace => f.write_str("has leading or trailing whitespace"),
            UrlProblem::NotAscii => f.write_str(
                "must be ASCII with a plainly written host (punycode for international names, no percent-encoding in the host)",
            ),
            UrlProblem::NotAbsolute(why) => write!(f, "is not an absolute URL ({why})"),
            UrlProblem::NotCanonical { canonical } => write!(
                f,
                "is not in its normalised form; register exactly {canonical:?}"
            ),
        }
    }
}

/// Parses `input`, refusing control characters and surrounding whitespace;
/// the parser may still normalise it (case, default port, a path of `/`).
/// Use the returned URL, never `input`.
pub fn parse_clean(input: &str) -> Result<Url, UrlProblem> {
    if input.chars().any(char::is_control) {
        return Err(UrlProblem::ControlCharacter);
    }
    if input.trim() != input {
        return Err(UrlProblem::Whitespace);
    }
    // Also keeps the parser's IDNA mapping out of play: fed percent-decoded
    // non-ASCII beside upper case ("http://B%BB/"), idna_adapter 1.0 trips a
    // debug assertion (found by `make fuzz-coverage`).
    let authority = input
        .split_once("//")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    if !input.is_ascii() || authority.contains('%') {
        return Err(UrlProblem::NotAscii);
    }
    Url::parse(input).map_err(|e| UrlProblem::NotAbsolute(e.to_string()))
}

/// Parses `input` and requires it to be exactly its own serialization, for
/// URLs that are matched and stored as strings.
pub fn parse_exact(input: &str) -> Result<Url, UrlProblem> {
    let url = parse_clean(input)?;
    if url.as_str() != input {
        return Err(UrlProblem::NotCanonical {
            canonical: url.as_str().to_string(),
        });
    }
    Ok(url)
}

/// True when a header value is safe to hand to the host: no control
/// character but HTAB (RFC 9110 5.5: CR, LF and NUL are never part of a
/// field value, and other controls are obsolete or invalid).
pub fn is_safe_header_value(value: &str) -> bool {
    !value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_even_where_the_parser_drops_them() {
        for bad in [
            "https://app.example/cb\r\nSet-Cookie: a=b",
            "https://app.example/cb\rx",
            "https://app.example/cb\nx",
            "https://app.example/c\tb",
            "https://app.example/cb\0",
            "https://app.example/cb\x0b",
            "https://app.example/cb\r\n\r\n<html>",
            "https://app.example/cb\u{85}",
            "https://app.example/cb\u{7f}",
        ] {
            assert_eq!(
                parse_clean(bad),
                Err(UrlProblem::ControlCharacter),
                "{bad:?}"
            );
            assert!(parse_exact(bad).is_err());
        }
        assert_eq!(
            parse_clean(" https://app.example/cb"),
            Err(UrlProblem::Whitespace)
        );
        for odd in [
            "http://B%BB/",
            "https://b%c3%bccher.example/",
            "https://bücher.example/",
        ] {
            assert_eq!(parse_clean(odd), Err(UrlProblem::NotAscii), "{odd}");
        }
        // A percent-escape in the path is no problem.
        assert!(parse_clean("https://app.example/a%20b").is_ok());
    }

    #[test]
    fn exact_means_the_serialization() {
        assert!(parse_exact("https://app.example/cb").is_ok());
        assert!(parse_exact("http://127.0.0.1:33418/callback?x=1").is_ok());
        for (input, canonical) in [
            ("https://App.Example/cb", "https://app.example/cb"),
            ("https://app.example", "https://app.example/"),
            ("https://app.example:443/cb", "https://app.example/cb"),
            ("https://app.example/a b", "https://app.example/a%20b"),
            ("https://app.example\\cb", "https://app.example/cb"),
            ("https://app.example/a/../cb", "https://app.example/cb"),
        ] {
            assert_eq!(
                parse_exact(input),
                Err(UrlProblem::NotCanonical {
                    canonical: canonical.to_string()
                }),
                "{input:?}"
            );
        }
        // The parser's normalisation is fine where only the parsed form is used.
        assert_eq!(
            parse_clean("https://App.Example").map(|u| u.to_string()),
            Ok("https://app.example/".to_string())
        );
    }

    #[test]
    fn header_values() {
        assert!(is_safe_header_value("https://app.example/cb?code=x"));
        assert!(!is_safe_header_value("a\r\nb"));
        assert!(!is_safe_header_value("a\nb"));
        assert!(!is_safe_header_value("a\0b"));
        assert!(!is_safe_header_value("a\x0bb"));
        assert!(!is_safe_header_value("a\x7fb"));
        assert!(is_safe_header_value("a\tb"));
    }
}
