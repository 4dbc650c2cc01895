"""Attack class 8: redirect-URI tricks.

What the filter must do:
  - registration accepts only https redirect URIs, or http on a loopback
    address (127.0.0.1, [::1], localhost); never javascript:, data:, file:,
    custom schemes, plain http elsewhere, a fragment, credentials, or a
    relative URI: 400 invalid_redirect_uri;
  - /authorize sends the browser back only to a registered redirect URI,
    compared as an exact string, except that a loopback http URI may use
    any port (RFC 8252 7.3); prefixes, suffixes, dot segments, another port
    on a non-loopback host, userinfo, a fragment, another scheme, another
    host spelling, another loopback name (localhost vs 127.0.0.1): a 400
    page shown to the person, never a redirect (RFC 6749 4.1.2.1), and no
    sign-in started.
"""

from __future__ import annotations

import pytest

from harness.attack import assert_error_json
from harness.http import media_type
from harness.oauth import OAuthKit, describe, pkce_pair

REGISTERED = "https://app.example.com/callback"
LOOPBACK = "http://127.0.0.1/callback"

REFUSED_REGISTRATIONS = [
    ("http, not loopback", "http://app.example.com/cb"),
    ("javascript", "javascript:alert(document.cookie)"),
    ("javascript disguised", "javascript://app.example.com/%0Aalert(1)"),
    ("data", "data:text/html,<script>alert(1)</script>"),
    ("file", "file:///etc/passwd"),
    ("custom scheme", "com.example.app:/callback"),
    ("custom scheme with authority", "myapp://callback"),
    ("fragment", "https://app.example.com/cb#frag"),
    ("empty fragment", "https://app.example.com/cb#"),
    ("credentials", "https://user:pass@app.example.com/cb"),
    ("user only", "https://user@app.example.com/cb"),
    ("relative", "/callback"),
    ("scheme-relative", "//app.example.com/cb"),
    ("no host", "https:///cb"),
    ("http on a name that starts like localhost", "http://localhost.evil.example/cb"),
    ("http on a name that starts like 127.0.0.1", "http://127.0.0.1.evil.example/cb"),
    ("http on a private address", "http://192.168.1.10/cb"),
    ("ftp", "ftp://app.example.com/cb"),
    ("ws", "ws://127.0.0.1/cb"),
]


@pytest.mark.parametrize(("case", "uri"), REFUSED_REGISTRATIONS, ids=[c[0] for c in REFUSED_REGISTRATIONS])
def test_registration_refuses(oauth: OAuthKit, case: str, uri: str) -> None:
    metadata = oauth.client_metadata()
    metadata["redirect_uris"] = [uri]
    r = oauth.register(metadata)
    assert_error_json(r, 400, "invalid_redirect_uri")


@pytest.mark.parametrize("uri", [REGISTERED, LOOPBACK, "http://[::1]/cb", "http://localhost:8080/cb",
                                 "https://app.example.com/cb?x=1"])
def test_registration_accepts(oauth: OAuthKit, uri: str) -> None:
    """Control: https anywhere, http on loopback, a query."""
    metadata = oauth.client_metadata()
    metadata["redirect_uris"] = [uri]
    r = oauth.register(metadata)
    assert r.status_code == 201 and r.json()["redirect_uris"] == [uri], describe(r)


def _authorize(oauth: OAuthKit, registered: str, requested: str):
    client = oauth.register_client(redirect_uri=registered)
    _, challenge = pkce_pair()
    url = oauth.authorize_url(client, challenge=challenge, state="s", resource=oauth.resource, redirect_uri=requested)
    return oauth.browser().request("GET", url)


MISMATCHES = [
    ("prefix of it", REGISTERED, "https://app.example.com/call"),
    ("longer path", REGISTERED, "https://app.example.com/callback/extra"),
    ("suffix", REGISTERED, "https://app.example.com/callbackx"),
    ("trailing slash", REGISTERED, "https://app.example.com/callback/"),
    ("dot segments out", REGISTERED, "https://app.example.com/callback/../evil"),
    ("dot segments back in", REGISTERED, "https://app.example.com/evil/../callback"),
    ("encoded dot segments", REGISTERED, "https://app.example.com/evil/%2e%2e/callback"),
    ("percent-encoded letter", REGISTERED, "https://app.example.com/%63allback"),
    ("query added", REGISTERED, "https://app.example.com/callback?next=https://evil.example"),
    ("fragment added", REGISTERED, "https://app.example.com/callback#x"),
    ("other port", REGISTERED, "https://app.example.com:8443/callback"),
    ("default port spelled out", REGISTERED, "https://app.example.com:443/callback"),
    ("host suffix", REGISTERED, "https://app.example.com.evil.example/callback"),
    ("sub-domain", REGISTERED, "https://evil.app.example.com/callback"),
    ("userinfo with the real host first", REGISTERED, "https://app.example.com@evil.example/callback"),
    ("userinfo with the real host last", REGISTERED, "https://evil.example@app.example.com/callback"),
    ("backslash trick", REGISTERED, "https://app.example.com\\@evil.example/callback"),
    ("http instead of https", REGISTERED, "http://app.example.com/callback"),
    ("upper-case host", REGISTERED, "https://APP.example.com/callback"),
    ("trailing dot on the host", REGISTERED, "https://app.example.com./callback"),
    ("javascript", REGISTERED, "javascript:alert(1)"),
    ("another site", REGISTERED, "https://evil.example/callback"),
    ("localhost for 127.0.0.1", LOOPBACK, "http://localhost:5555/callback"),
    ("[::1] for 127.0.0.1", LOOPBACK, "http://[::1]:5555/callback"),
    ("127.0.0.2 for 127.0.0.1", LOOPBACK, "http://127.0.0.2:5555/callback"),
    ("https on loopback", LOOPBACK, "https://127.0.0.1:5555/callback"),
    ("loopback, other path", LOOPBACK, "http://127.0.0.1:5555/other"),
    ("loopback, dot segments", LOOPBACK, "http://127.0.0.1:5555/callback/../other"),
    ("loopback, userinfo", LOOPBACK, "http://evil.example@127.0.0.1:5555/callback"),
    ("loopback, numeric IPv4 spelling", LOOPBACK, "http://2130706433:5555/callback"),
    ("loopback, fragment", LOOPBACK, "http://127.0.0.1:5555/callback#x"),
]


@pytest.mark.parametrize(("case", "registered", "requested"), MISMATCHES, ids=[c[0] for c in MISMATCHES])
def test_authorize_refuses_a_redirect_uri_not_registered(oauth: OAuthKit, case: str, registered: str,
                                                          requested: str) -> None:
    r = _authorize(oauth, registered, requested)
    assert r.status_code == 400, f"{case}: expected the 400 page:\n{describe(r)}"
    assert "location" not in r.headers, f"{case}: must not redirect anywhere:\n{describe(r)}"
    assert media_type(r.headers.get("content-type")) == "text/html", describe(r)
    assert "set-cookie" not in r.headers, f"{case}: no sign-in may start:\n{describe(r)}"


@pytest.mark.parametrize(("registered", "requested"), [
    (REGISTERED, REGISTERED),
    (LOOPBACK, "http://127.0.0.1:5555/callback"),
    (LOOPBACK, LOOPBACK),
    ("http://[::1]/cb", "http://[::1]:6000/cb"),
], ids=["exact", "loopback other port", "loopback same", "IPv6 loopback other port"])
def test_authorize_accepts(oauth: OAuthKit, registered: str, requested: str) -> None:
    """Control: these start the sign-in (a redirect to the identity provider)."""
    r = _authorize(oauth, registered, requested)
    assert r.status_code in (302, 303), describe(r)
    assert r.headers["location"].startswith(oauth.idp.issuer), describe(r)


def test_without_redirect_uri_and_two_registered_is_refused(oauth: OAuthKit) -> None:
    metadata = oauth.client_metadata()
    metadata["redirect_uris"] = ["https://app.example.com/one", "https://app.example.com/two"]
    r = oauth.register(metadata)
    assert r.status_code == 201, describe(r)
    client_id = r.json()["client_id"]
    _, challenge = pkce_pair()
    page = oauth.browser().request(
        "GET", f"{oauth.issuer}/.oauth/authorize?response_type=code&client_id={client_id}&state=s"
               f"&code_challenge={challenge}&code_challenge_method=S256")
    assert page.status_code == 400 and "location" not in page.headers, describe(page)
