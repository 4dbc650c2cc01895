//! The few HTML pages the filter serves: the consent page and error pages.

use crate::reply::Reply;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.4rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem}dt{font-weight:600}\
form{display:inline-block;margin:1rem 1rem 0 0}button{font-size:1rem;padding:.5rem 1.2rem}.note{color:#666;font-size:.9rem}";

/// Headers every page carries: no framing (clickjacking), no caching, no referrer leak.
/// No CSP `form-action`: Chromium and Safari apply it to the redirects that
/// follow a form POST too (w3c/webappsec-csp#8), which would stop the consent
/// form's redirect to the client's (checked) redirect URI.
fn page(status: u32, title: &str, body: &str) -> Reply {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    );
    Reply::new(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store")
        .with_body(html.into_bytes())
}

/// An error shown to the person in the browser, when redirecting to the client is not safe.
pub fn error(status: u32, title: &str, message: &str) -> Reply {
    page(
        status,
        title,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(message)),
    )
}

pub struct ConsentView<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    pub client_verified: bool,
    pub redirect_host: &'a str,
    pub route_name: &'a str,
    pub resource: &'a str,
    pub scopes: &'a str,
    pub user: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    pub action: &'a str,
}

/// The consent page. The first form approves, so an automated client that
/// submits the first form as served approves; the second denies.
pub fn consent(v: &ConsentView<'_>) -> Reply {
    let verified = if v.client_verified {
        "its identity was verified from its client metadata document"
    } else {
        "it registered itself; its name is not verified"
    };
    let hidden = format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(v.request),
        escape(v.csrf)
    );
    let body = format!(
        "<h1>Allow {client} to use {route}?</h1>\
<p>Signed in as <strong>{user}</strong>.</p>\
<dl><dt>Application</dt><dd>{client} <span class=\"note\">({client_id}; {verified})</span></dd>\
<dt>Sends you back to</dt><dd>{redirect}</dd>\
<dt>MCP server</dt><dd>{route} <span class=\"note\">({resource})</span></dd>\
<dt>Access</dt><dd>{scopes}</dd></dl>\
<form method=\"post\" action=\"{action}\">{hidden}<button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button></form>\
<form method=\"post\" action=\"{action}\">{hidden}<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        client = escape(v.client_name),
        client_id = escape(v.client_id),
        verified = verified,
        redirect = escape(v.redirect_host),
        route = escape(v.route_name),
        resource = escape(v.resource),
        scopes = escape(v.scopes),
        user = escape(v.user),
        action = escape(v.action),
        hidden = hidden,
    );
    page(200, "Authorize access", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn consent_page_is_framing_proof_and_approves_first() {
        let r = consent(&ConsentView {
            client_name: "<script>",
            client_id: "c",
            client_verified: false,
            redirect_host: "127.0.0.1",
            route_name: "demo",
            resource: "http://127.0.0.1:10000/mcp",
            scopes: "mcp",
            user: "alice@company.com",
            request: "r1",
            csrf: "t1",
            action: "/.oauth/consent",
        });
        assert_eq!(r.header_value("x-frame-options"), Some("DENY"));
        assert!(
            r.header_value("content-security-policy")
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let html = String::from_utf8(r.body).unwrap();
        assert!(!html.contains("<script>"));
        let approve = html.find("value=\"approve\"").unwrap();
        let deny = html.find("value=\"deny\"").unwrap();
        assert!(approve < deny);
        assert!(html.contains("name=\"csrf\" value=\"t1\""));
    }
}
