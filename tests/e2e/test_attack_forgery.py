"""Attack class 6: access-token forgery and confusion at the MCP endpoint.

What the filter must do with the bearer token on /mcp: accept only an
HS256 JWT with `typ: at+jwt`, signed with one of its keys (by `kid`), for
this route's issuer and audience, unexpired, not issued in the future, and
living no longer than access_token_ttl_seconds (exp - iat; a valid MAC is
not enough: a token minted with a longer lifetime, by a leaked key or an
older configuration, is refused), whose grant still stands. Everything else
is 401 with the RFC 6750 challenge and never reaches the MCP server. The
token only counts in one Authorization header with the Bearer scheme
(case-insensitive, RFC 9110 11.1): two headers, another scheme, a cookie or
a query parameter carry no token.

Tokens that need a valid MAC are signed here with the key the harness put
into the plugin configuration (harness.attack.forge), with the real grant
id of a signed-in user, so only the property under test is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness import leakwatch
from harness.attack import (
    SignedIn, assert_not_forwarded, b64url, b64url_json, claims_like, forge, new_test_id, now, post_h1, sign_in,
    signing_key, unsigned,
)
from harness.envoy import Envoy
from harness.http import INITIALIZE_BODY, POST_HEADERS
from harness.idp import Idp
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit, describe
from harness.www_authenticate import bearer

# HS384/HS512 forgeries use the filter's 32-byte key on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is .* bytes long")

TTL = 3600  # access_token_ttl_seconds of the session Envoy (the default)


@pytest.fixture(scope="module")
def kit(envoy: Envoy, idp: Idp, mcp_server: McpServer) -> Iterator[OAuthKit]:
    k = OAuthKit(envoy, idp, mcp_server)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def signed(kit: OAuthKit) -> SignedIn:
    return sign_in(kit)


def _post(kit: OAuthKit, headers: dict[str, str], tid: str, params: dict[str, str] | None = None) -> httpx.Response:
    return kit.http.post(kit.resource, content=INITIALIZE_BODY, params=params,
                         headers={**POST_HEADERS, "x-test-id": tid, **headers})


def _assert_401(kit: OAuthKit, r: httpx.Response | Any, tid: str, what: str, *, error: bool = True) -> None:
    status = r.status_code if isinstance(r, httpx.Response) else r.status
    text = describe(r) if isinstance(r, httpx.Response) else str(r)
    assert status == 401, f"{what}: expected 401:\n{text}"
    challenge = bearer(r.headers.get("www-authenticate") if isinstance(r, httpx.Response)
                       else r.header("www-authenticate"))
    assert challenge.params.get("resource_metadata"), f"{what}: no resource_metadata in the challenge:\n{text}"
    if error:
        assert challenge.params.get("error") == "invalid_token", f"{what}: expected error=invalid_token:\n{text}"
    assert_not_forwarded(kit.mcp_server, tid, what)


# (case, builds the token from (envoy, signed))
Forger = Callable[[Envoy, SignedIn], str]


def _header_of(s: SignedIn, **changes: Any) -> dict[str, Any]:
    h = dict(s.header)
    h.update(changes)
    return h


FORGERIES: list[tuple[str, Forger]] = [
    ("alg none, no signature", lambda e, s: unsigned(_header_of(s, alg="none"), s.claims)),
    ("alg none, signature kept", lambda e, s: unsigned(_header_of(s, alg="none"), s.claims, s.te.split(".")[2])),
    ("alg None", lambda e, s: unsigned(_header_of(s, alg="None"), s.claims)),
    ("HS256, empty signature", lambda e, s: ".".join(s.te.split(".")[:2]) + "."),
    ("HS256, wrong key", lambda e, s: forge(e, s.claims, key=secrets.token_bytes(32))),
    ("HS256, right key, unknown kid", lambda e, s: forge(e, s.claims, kid="te-unknown")),
    ("HS256, right key, empty kid", lambda e, s: forge(e, s.claims, kid="")),
    ("HS256, wrong key, kid of the right one", lambda e, s: forge(e, s.claims, key=b"k" * 32)),
    ("HS512 with the right key", lambda e, s: forge(e, s.claims, alg="HS512")),
    ("HS384 with the right key", lambda e, s: forge(e, s.claims, alg="HS384")),
    ("RS256 header, HS256 signature", lambda e, s: unsigned(_header_of(s, alg="RS256"), s.claims,
                                                           s.te.split(".")[2])),
    ("typ JWT", lambda e, s: forge(e, s.claims, typ="JWT")),
    ("no typ", lambda e, s: forge(e, s.claims, typ=None)),
    ("embedded jwk of the attacker", lambda e, s: forge(e, s.claims, key=b"a" * 32, extra_header={
        "jwk": {"kty": "oct", "k": b64url(b"a" * 32)}})),
    ("claims changed, signature kept", lambda e, s: ".".join(
        [s.te.split(".")[0], b64url_json(claims_like(s, sub="admin")), s.te.split(".")[2]])),
    ("expired", lambda e, s: forge(e, claims_like(s, iat=now() - 100, exp=now() - 5))),
    ("issued in the future", lambda e, s: forge(e, claims_like(s, iat=now() + 3600, exp=now() + 3660))),
    ("exp - iat > ttl", lambda e, s: forge(e, claims_like(s, iat=now(), exp=now() + 2 * TTL))),
    ("exp - iat = ttl + 60", lambda e, s: forge(e, claims_like(s, iat=now() - 30, exp=now() - 30 + TTL + 60))),
    ("exp in the year 9999", lambda e, s: forge(e, claims_like(s, exp=253402300799))),
    ("backdated iat, far exp", lambda e, s: forge(e, claims_like(s, iat=now() - 100 * TTL, exp=now() + 100 * TTL))),
    ("no iat", lambda e, s: forge(e, claims_like(s, iat=None))),
    ("another route's audience", lambda e, s: forge(e, claims_like(s, aud=f"http://localhost:{e.listen_port}/mcp"))),
    ("another issuer", lambda e, s: forge(e, claims_like(s, iss="https://evil.example"))),
    ("aud as a list", lambda e, s: forge(e, claims_like(s, aud=[s.claims["aud"]]))),
    ("unknown grant", lambda e, s: forge(e, claims_like(s, gid=secrets.token_urlsafe(16)))),
    ("duplicate aud (another route's first)", lambda e, s: _duplicate_aud(e, s)),
]


def _duplicate_aud(e: Envoy, s: SignedIn) -> str:
    """A payload with "aud" twice, correctly MACed: a parser that takes the
    last one sees this route, one that takes the first sees another."""
    kid, key = signing_key(e)
    claims = dict(s.claims)
    ours = claims.pop("aud")
    payload = json.dumps(claims)[:-1] + f', "aud": "http://localhost:{e.listen_port}/mcp", "aud": "{ours}"}}'
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{b64url(payload)}"
    token = f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"
    leakwatch.note_filter_token(token, "a forged token")
    return token


@pytest.mark.parametrize(("case", "make"), FORGERIES, ids=[c[0] for c in FORGERIES])
def test_forged_token_is_refused(kit: OAuthKit, envoy: Envoy, signed: SignedIn, case: str, make: Forger) -> None:
    """401 invalid_token, not forwarded; the real TE still works afterwards."""
    token = make(envoy, signed)
    tid = new_test_id()
    _assert_401(kit, _post(kit, {"Authorization": f"Bearer {token}"}, tid), tid, case)


def test_the_real_te_works(kit: OAuthKit, signed: SignedIn, test_id: str) -> None:
    """Control: the TE itself is accepted and does not reach the MCP server."""
    kit.assert_accepted(signed.te, test_id)


def test_a_token_of_exactly_the_ttl_is_accepted(kit: OAuthKit, envoy: Envoy, signed: SignedIn, test_id: str) -> None:
    """Control for the lifetime check: exp - iat == ttl, with the right key and
    a standing grant, is a token the filter could have issued: accepted."""
    t = now()
    kit.assert_accepted(forge(envoy, claims_like(signed, iat=t, exp=t + TTL)), test_id)


def test_token_of_a_revoked_grant_is_refused(kit: OAuthKit) -> None:
    fresh = sign_in(kit)
    assert kit.revoke(fresh.client, fresh.refresh_token).status_code == 200
    tid = new_test_id()
    _assert_401(kit, _post(kit, {"Authorization": f"Bearer {fresh.te}"}, tid), tid, "revoked grant")


def test_te_is_refused_on_the_other_route(kit: OAuthKit, signed: SignedIn) -> None:
    """The route localhost:P (same listener, same keys): the TE's audience is not its own."""
    tid = new_test_id()
    r = _post(kit, {"Authorization": f"Bearer {signed.te}", "Host": f"localhost:{kit.envoy.listen_port}"}, tid)
    _assert_401(kit, r, tid, "TE on the other route")


GARBAGE = [
    ("garbage", "garbage"),
    ("three dots", "..."),
    ("a.b.c", "a.b.c"),
    ("base64 junk", base64.b64encode(secrets.token_bytes(48)).decode()),
    ("JSON instead of a JWT", '{"alg":"none"}'),
    ("8 KiB", "A" * 8192),
    ("TE with 8 KiB appended", None),
    ("TE with a suffix", None),
]


@pytest.mark.parametrize(("case", "token"), GARBAGE, ids=[c[0] for c in GARBAGE])
def test_garbage_token_is_refused(kit: OAuthKit, signed: SignedIn, case: str, token: str | None) -> None:
    if case == "TE with 8 KiB appended":
        token = signed.te + "A" * 8192
    elif case == "TE with a suffix":
        token = signed.te + ".x"
    tid = new_test_id()
    _assert_401(kit, _post(kit, {"Authorization": f"Bearer {token}"}, tid), tid, case)


def test_huge_authorization_header_is_refused(kit: OAuthKit, signed: SignedIn) -> None:
    """Past Envoy's header limit (60 KiB): Envoy's 431, or the filter's 401; never forwarded."""
    tid = new_test_id()
    r = _post(kit, {"Authorization": f"Bearer {signed.te}{'A' * 70_000}"}, tid)
    assert r.status_code in (401, 431), describe(r)
    assert_not_forwarded(kit.mcp_server, tid, "huge header")


@pytest.mark.parametrize("second", ["the same TE", "garbage"])
def test_two_authorization_headers_are_refused(kit: OAuthKit, signed: SignedIn, second: str) -> None:
    """Two Authorization headers (raw HTTP/1.1): which one counts is ambiguous: 401."""
    tid = new_test_id()
    other = signed.te if second == "the same TE" else "garbage"
    r = post_h1(kit.envoy, f"127.0.0.1:{kit.envoy.listen_port}", signed.te, tid, INITIALIZE_BODY.encode(),
                extra=[("Authorization", f"Bearer {other}")])
    _assert_401(kit, r, tid, f"two Authorization headers ({second})")


def test_two_tokens_in_one_header_are_refused(kit: OAuthKit, signed: SignedIn) -> None:
    tid = new_test_id()
    r = _post(kit, {"Authorization": f"Bearer {signed.te}, Bearer {signed.te}"}, tid)
    _assert_401(kit, r, tid, "two tokens in one header")


def test_lowercase_bearer_scheme_is_the_bearer_scheme(kit: OAuthKit, signed: SignedIn) -> None:
    """The auth scheme is case-insensitive (RFC 9110 11.1): accepted, and the TE is not forwarded."""
    tid = new_test_id()
    r = _post(kit, {"Authorization": f"bearer {signed.te}"}, tid)
    assert r.status_code == 200, describe(r)
    [req] = kit.mcp_server.saw_test_id(tid)
    assert req["authorization"] is None, req


@pytest.mark.parametrize("scheme", ["Basic", "Token", "DPoP", "MAC"])
def test_other_schemes_carry_no_token(kit: OAuthKit, signed: SignedIn, scheme: str) -> None:
    """Authorization: <other scheme> <TE>: no bearer token (the challenge
    without error=, RFC 6750 3.1), never forwarded."""
    tid = new_test_id()
    r = _post(kit, {"Authorization": f"{scheme} {signed.te}"}, tid)
    _assert_401(kit, r, tid, f"{scheme} scheme", error=False)


@pytest.mark.parametrize("name", ["access_token", "mcpof_session", "token"])
def test_te_in_a_cookie_is_no_token(kit: OAuthKit, signed: SignedIn, name: str) -> None:
    tid = new_test_id()
    r = _post(kit, {"Cookie": f"{name}={signed.te}"}, tid)
    _assert_401(kit, r, tid, f"TE in cookie {name}", error=False)


def test_te_in_the_query_is_no_token(kit: OAuthKit, signed: SignedIn) -> None:
    """RFC 6750 2.3's query form is not accepted (OAuth 2.1 forbids it)."""
    tid = new_test_id()
    r = _post(kit, {}, tid, params={"access_token": signed.te})
    _assert_401(kit, r, tid, "TE in the query", error=False)


def test_te_in_the_body_is_no_token(kit: OAuthKit, signed: SignedIn) -> None:
    """RFC 6750 2.2's form-body form is not accepted on the MCP endpoint."""
    tid = new_test_id()
    r = kit.http.post(kit.resource, content=f"access_token={signed.te}",
                      headers={"Content-Type": "application/x-www-form-urlencoded", "x-test-id": tid})
    _assert_401(kit, r, tid, "TE in a form body", error=False)
