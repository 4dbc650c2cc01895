"""Attack class 4: control characters (and non-canonical URLs) in every field
that ends up in a header or a page.

What the filter must do:
  - dynamic registration (POST /.oauth/register): a redirect URI with a
    control character (CR, LF, TAB, NUL, VT, DEL, C1), a CRLF CRLF followed
    by a body, or whose parsed serialization differs from the input
    (upper-case host or scheme, no path slash, a space, a backslash, a
    default port spelled out, dot segments, a leading zero in the port,
    surrounding whitespace, non-ASCII) is refused with 400
    {"error": "invalid_redirect_uri"}: the URI is later compared as a string
    and written into Location, so it must be exactly its own serialization;
    client_uri and client_name likewise (400 invalid_client_metadata or
    invalid_redirect_uri);
  - percent-encoded CR LF is not a control character: refused, or kept
    percent-encoded all the way into the Location the client gets;
  - /.oauth/authorize: a requested redirect_uri with control characters
    (registered http://127.0.0.1/cb, requested
    "http://127.0.0.1:5555/cb\\r\\nSet-Cookie: ...") gets a 400 error page,
    never a redirect, signed in or not;
  - `state` is returned percent-encoded in Location, whatever it holds;
  - HTML in client_name is escaped on the consent page.
No answer may carry an injected Set-Cookie or a split header: the leak
watch (harness/leakwatch.py) checks every answer of this module for the
marker these payloads use, and for bare CR/LF in raw header blocks.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.attack import MARK, assert_error_json
from harness.browser import query
from harness.http import media_type
from harness.oauth import Client, OAuthKit, describe, pkce_pair

INJECT = f"Set-Cookie: {MARK}=1"

# Redirect URIs a registration must refuse with invalid_redirect_uri.
BAD_REDIRECT_URIS = [
    ("CRLF header injection", f"https://app.example/cb\r\n{INJECT}"),
    ("CR", "https://app.example/cb\r"),
    ("LF", "https://app.example/cb\n"),
    ("LF in the middle", f"https://app.example/c\nb"),
    ("TAB", "https://app.example/c\tb"),
    ("NUL", "https://app.example/cb\x00"),
    ("VT", "https://app.example/cb\x0b"),
    ("DEL", "https://app.example/cb\x7f"),
    ("C1 control NEL", "https://app.example/cb\x85"),
    ("CRLF CRLF and a body", f"https://app.example/cb\r\n\r\n<html>{MARK}</html>"),
    ("loopback with an injected Location", "http://127.0.0.1/cb\r\nLocation: https://evil.example/"),
    ("CRLF in the host", f"https://app.exa\r\nmple/cb"),
    ("percent-encoded CRLF in the host", "https://app.example%0d%0a/cb"),
    # Parsed serialization differs from the input.
    ("upper-case host", "https://APP.example/cb"),
    ("upper-case scheme", "HTTPS://app.example/cb"),
    ("no path slash", "https://app.example"),
    ("space in the path", "https://app.example/c b"),
    ("backslash", "https://app.example\\cb"),
    ("default port spelled out", "https://app.example:443/cb"),
    ("dot segments", "https://app.example/a/../cb"),
    ("leading-zero port", "http://127.0.0.1:05555/cb"),
    ("leading space", " https://app.example/cb"),
    ("trailing space", "https://app.example/cb "),
    ("non-ASCII path", "https://app.example/caf\u00e9"),
    ("line separator U+2028", "https://app.example/cb\u2028"),
    ("host without slashes", "https:app.example/cb"),
    ("three slashes", "https:///app.example/cb"),
]


def _register(oauth: OAuthKit, **overrides: Any):
    metadata = oauth.client_metadata()
    metadata.update(overrides)
    return oauth.register(metadata)


def _no_injected_header(r) -> None:
    for name, value in r.headers.multi_items():
        assert MARK not in name.lower() and not (name.lower() == "set-cookie" and MARK in value), describe(r)


@pytest.mark.parametrize(("case", "uri"), BAD_REDIRECT_URIS, ids=[c[0] for c in BAD_REDIRECT_URIS])
def test_registration_refuses_redirect_uri(oauth: OAuthKit, case: str, uri: str) -> None:
    """400 invalid_redirect_uri; no client, no Set-Cookie."""
    r = _register(oauth, redirect_uris=[uri])
    assert_error_json(r, 400, "invalid_redirect_uri")
    assert "client_id" not in r.json(), describe(r)
    assert "set-cookie" not in r.headers, describe(r)


def test_registration_refuses_a_bad_uri_among_good_ones(oauth: OAuthKit) -> None:
    """One bad redirect URI among good ones spoils the registration."""
    r = _register(oauth, redirect_uris=["https://app.example/ok", f"https://app.example/cb\r\n{INJECT}"])
    assert_error_json(r, 400, "invalid_redirect_uri")


@pytest.mark.parametrize("value", [None, 42, ["https://app.example/cb"], {"uri": "https://app.example/cb"}],
                         ids=["null", "number", "nested list", "object"])
def test_registration_refuses_redirect_uris_that_are_not_strings(oauth: OAuthKit, value: Any) -> None:
    r = _register(oauth, redirect_uris=[value])
    assert_error_json(r, 400, ("invalid_redirect_uri", "invalid_client_metadata"))


BAD_CLIENT_URIS = [
    ("CRLF", f"https://app.example/\r\n{INJECT}"),
    ("TAB", "https://app.example/\t"),
    ("javascript", "javascript:alert(1)"),
    ("data", "data:text/html,<script>alert(1)</script>"),
    ("upper-case host", "https://APP.example/"),
    ("no path slash", "https://app.example"),
]


@pytest.mark.parametrize(("case", "uri"), BAD_CLIENT_URIS, ids=[c[0] for c in BAD_CLIENT_URIS])
def test_registration_refuses_client_uri(oauth: OAuthKit, case: str, uri: str) -> None:
    r = _register(oauth, client_uri=uri)
    assert_error_json(r, 400, ("invalid_client_metadata", "invalid_redirect_uri"))
    assert "set-cookie" not in r.headers, describe(r)


@pytest.mark.parametrize("name", [f"Evil\r\n{INJECT}", "Evil\x00", "Evil\x1b[31m"], ids=["CRLF", "NUL", "ESC"])
def test_registration_refuses_client_name_with_control_characters(oauth: OAuthKit, name: str) -> None:
    r = _register(oauth, client_name=name)
    assert_error_json(r, 400, "invalid_client_metadata")


def test_percent_encoded_crlf_stays_encoded_to_the_redirect(oauth: OAuthKit) -> None:
    """A redirect URI with %0d%0a in its path is valid URL syntax: refused, or
    registered and then kept percent-encoded in the Location the client
    gets (never decoded into a header break)."""
    uri = f"https://app.example/cb%0d%0a{MARK}:%201"
    r = _register(oauth, redirect_uris=[uri])
    if r.status_code == 400:
        assert_error_json(r, 400, "invalid_redirect_uri")
        return
    assert r.status_code == 201, describe(r)
    client = Client(client_id=r.json()["client_id"], redirect_uri=uri)
    auth = oauth.authorize(client)
    location = auth.final.headers["location"]
    assert location.startswith(uri + "?"), f"the redirect URI was changed on its way to Location: {location!r}"
    _no_injected_header(auth.final)
    assert auth.params.get("code"), auth.params


def test_html_in_client_name_is_escaped_on_the_consent_page(oauth: OAuthKit) -> None:
    name = f"<script>{MARK}()</script><img src=x onerror=alert(1)>"
    client = oauth.register_client(name=name)
    auth = oauth.authorize(client, decision=None)
    page = auth.consent_page
    assert page is not None, auth.browser.trail()
    assert f"<script>{MARK}" not in page.text and "<img src=x" not in page.text, "client_name is not escaped"
    assert "&lt;script&gt;" in page.text, "the escaped client_name should be shown"


# --- /.oauth/authorize with a redirect_uri the client did not register exactly ---------------

REQUESTED = [
    ("CRLF Set-Cookie", f"http://127.0.0.1:5555/cb\r\n{INJECT}"),
    ("LF", "http://127.0.0.1:5555/cb\n"),
    ("CR", "http://127.0.0.1:5555/cb\r"),
    ("TAB", "http://127.0.0.1:5555/c\tb"),
    ("NUL", "http://127.0.0.1:5555/cb\x00"),
    ("CRLF CRLF body", f"http://127.0.0.1:5555/cb\r\n\r\n<html>{MARK}</html>"),
    ("leading space", " http://127.0.0.1:5555/cb"),
    ("leading-zero port", "http://127.0.0.1:05555/cb"),
]


def _error_page(r, what: str) -> None:
    assert r.status_code == 400, f"{what}: expected a 400 error page:\n{describe(r)}"
    assert "location" not in r.headers, f"{what}: must not redirect:\n{describe(r)}"
    assert media_type(r.headers.get("content-type")) == "text/html", describe(r)
    _no_injected_header(r)


@pytest.mark.parametrize(("case", "requested"), REQUESTED, ids=[c[0] for c in REQUESTED])
def test_authorize_refuses_requested_redirect_uri(oauth: OAuthKit, case: str, requested: str) -> None:
    """Registered http://127.0.0.1/cb (loopback: any port); the requested
    variant with control characters is no match: 400 page, no redirect."""
    client = oauth.register_client(redirect_uri="http://127.0.0.1/cb")
    _, challenge = pkce_pair()
    url = oauth.authorize_url(client, challenge=challenge, state="s", resource=oauth.resource, redirect_uri=requested)
    _error_page(oauth.browser().request("GET", url), case)


def test_authorize_refuses_crlf_redirect_uri_for_a_signed_in_browser(oauth: OAuthKit) -> None:
    """The same from a browser with a session (it would go straight to the
    consent page): still the 400 page, no redirect."""
    client = oauth.register_client(redirect_uri="http://127.0.0.1/cb")
    first = oauth.authorize(client)
    assert first.params.get("code"), first.params
    _, challenge = pkce_pair()
    url = oauth.authorize_url(client, challenge=challenge, state="s", resource=oauth.resource,
                              redirect_uri=f"http://127.0.0.1:5555/cb\r\n{INJECT}")
    _error_page(first.browser.request("GET", url), "signed-in browser")


def test_authorize_control_redirect_uri_never_redirects_anywhere(oauth: OAuthKit) -> None:
    """Followed as far as it goes (sign-in, consent): no hop redirects to a
    Location with the injected text, and none sets the marker cookie."""
    client = oauth.register_client(redirect_uri="http://127.0.0.1/cb")
    _, challenge = pkce_pair()
    evil = f"http://127.0.0.1:5555/cb\r\n{INJECT}"
    url = oauth.authorize_url(client, challenge=challenge, state="s", resource=oauth.resource, redirect_uri=evil)
    browser = oauth.browser()
    try:
        oauth.drive(browser, url, "http://127.0.0.1:5555/cb", stop_at_error=True)
    except AssertionError:
        pass  # stopped somewhere: what matters is what each hop answered
    for hop in browser.history:
        _no_injected_header(hop.response)
        assert MARK not in (hop.location or ""), f"a redirect carries the injected text: {hop}"


# --- state ------------------------------------------------------------------------------

STATES = [
    ("CRLF Set-Cookie", f"abc\r\n{INJECT}"),
    ("ampersand and a code", "abc&code=attacker-code&iss=https://evil.example"),
    ("fragment", "abc#frag"),
    ("NUL and spaces", "a b\x00c"),
]


@pytest.mark.parametrize(("case", "state"), STATES, ids=[c[0] for c in STATES])
def test_state_comes_back_percent_encoded(oauth: OAuthKit, case: str, state: str) -> None:
    """The whole flow with a hostile state: the redirect back carries it
    percent-encoded, once, unchanged; one code; no raw CR/LF; no injected header."""
    client = oauth.register_client()
    _, challenge = pkce_pair()
    url = oauth.authorize_url(client, challenge=challenge, state=state, resource=oauth.resource)
    final, _ = oauth.drive(oauth.browser(), url, client.redirect_uri)
    location = final.headers["location"]
    assert not any(c in location for c in "\r\n\x00 #"), f"state not encoded in Location: {location!r}"
    params = query(location)
    assert params.get("state") == state, f"state changed on the way: {params}"
    assert location.count("code=") == 1 and params["code"] != "attacker-code", location
    assert location.count("iss=") == 1 and params.get("iss") == oauth.issuer, location
    _no_injected_header(final)


def test_state_in_an_error_redirect_is_percent_encoded(oauth: OAuthKit) -> None:
    """An error sent back to the client (response_type=token) with a CRLF state."""
    client = oauth.register_client()
    _, challenge = pkce_pair()
    state = f"abc\r\n{INJECT}"
    url = oauth.authorize_url(client, challenge=challenge, state=state, resource=oauth.resource, response_type="token")
    browser = oauth.browser()
    final, _ = oauth.drive(browser, url, client.redirect_uri)
    location = final.headers["location"]
    assert "\r" not in location and "\n" not in location, repr(location)
    params = query(location)
    assert params.get("error") == "unsupported_response_type" and params.get("state") == state, params
    _no_injected_header(final)
