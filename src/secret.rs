//! Secrets in newtypes that never print and compare in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

/// Secret bytes (keys, client secrets, tokens). `Debug` and `Display` print
/// `[redacted]` so a secret can't reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text, for secrets that are text on the wire (client secrets).
    pub fn expose_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison: the time taken depends only on the lengths.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        constant_time_eq(&self.0, other)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret that is text at run time: an access, refresh or ID token, a
/// code, a PKCE verifier. Stored and sent as the plain string (serde
/// transparent), but `Debug` prints `[redacted]`, so a record holding one
/// can be logged or printed in a failed test without showing it.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: impl Into<String>) -> Self {
        SecretText(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretText {
    fn from(s: String) -> Self {
        SecretText(s)
    }
}

impl From<&str> for SecretText {
    fn from(s: &str) -> Self {
        SecretText(s.to_string())
    }
}

/// Read as `&str` where it is used (a form field, a hash's input); it
/// still never formats, having no `Display`.
impl std::ops::Deref for SecretText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn secret_text_never_prints_but_serializes_as_is() {
        let s = SecretText::from("gho_abc");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"gho_abc\"");
        let back: SecretText = serde_json::from_str("\"gho_abc\"").unwrap();
        assert_eq!(back.expose(), "gho_abc");
    }

    #[test]
    fn constant_time_comparison() {
        let s = Secret::from("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
        assert!(!s.ct_eq(b""));
    }
}
