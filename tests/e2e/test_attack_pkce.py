"""Attack class 7: PKCE and authorization-code misuse.

What the filter must do:
  - /authorize: PKCE S256 is required: a missing challenge, the plain
    method, another method name, a challenge that is not 43 base64url
    characters, or a repeated parameter is refused (back to the client
    with error=invalid_request, or a 400 page when the request can't even
    be read), before any sign-in;
  - /token: the code is redeemed once, by the client it was issued to,
    with its redirect_uri and resource, with the verifier whose S256 is
    the challenge, before it expires; a wrong verifier, another client,
    another redirect_uri or resource, another origin's token endpoint, an
    expired code: invalid_grant (or invalid_target / invalid_request), and
    no token;
  - a code used twice revokes the tokens issued from its first use
    (RFC 6749 4.1.2): the TE gets 401 and the refresh token invalid_grant.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from harness.attack import b64url
from harness.browser import query
from harness.envoy import Envoy
from harness.idp import Idp
from harness.mcp_server import McpServer
from harness.oauth import OAuthKit, describe, oauth_error, pkce_pair


def _authorize_answer(oauth: OAuthKit, **params: str | None) -> dict[str, str] | int:
    """GET /authorize with the given PKCE parameters (None leaves one out):
    the query of the redirect back to the client, or the status of a page."""
    client = oauth.register_client()
    base = {"response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
            "state": "st", "resource": oauth.resource, "scope": "mcp"}
    base.update({k: v for k, v in params.items() if v is not None})
    for k in [k for k, v in params.items() if v is None]:
        base.pop(k, None)
    r = oauth.browser().request("GET", f"{oauth.issuer}/.oauth/authorize?{urlencode(base)}")
    location = r.headers.get("location", "")
    if r.status_code in (302, 303) and location.startswith(client.redirect_uri):
        return query(location)
    return r.status_code


_, CHALLENGE = pkce_pair()

BAD_PKCE = [
    ("no challenge", {"code_challenge": None, "code_challenge_method": "S256"}),
    ("no challenge, no method", {"code_challenge": None, "code_challenge_method": None}),
    ("plain", {"code_challenge": "a" * 43, "code_challenge_method": "plain"}),
    ("method s256 (lower case)", {"code_challenge": CHALLENGE, "code_challenge_method": "s256"}),
    ("method SHA256", {"code_challenge": CHALLENGE, "code_challenge_method": "SHA256"}),
    ("no method", {"code_challenge": CHALLENGE, "code_challenge_method": None}),
    ("42 characters", {"code_challenge": CHALLENGE[:42], "code_challenge_method": "S256"}),
    ("44 characters", {"code_challenge": CHALLENGE + "A", "code_challenge_method": "S256"}),
    ("padded with =", {"code_challenge": CHALLENGE[:42] + "=", "code_challenge_method": "S256"}),
    ("standard base64 alphabet", {"code_challenge": "+/" + CHALLENGE[2:], "code_challenge_method": "S256"}),
    ("128 characters (a verifier, not a challenge)", {"code_challenge": "a" * 128, "code_challenge_method": "S256"}),
]


@pytest.mark.parametrize(("case", "params"), BAD_PKCE, ids=[c[0] for c in BAD_PKCE])
def test_authorize_refuses_bad_pkce(oauth: OAuthKit, case: str, params: dict[str, str | None]) -> None:
    """error=invalid_request back at the client's redirect_uri, no code, before sign-in."""
    answer = _authorize_answer(oauth, **params)
    assert isinstance(answer, dict), f"{case}: expected a redirect back with an error, got a {answer} page"
    assert answer.get("error") == "invalid_request" and "code" not in answer, f"{case}: {answer}"


def test_authorize_refuses_a_repeated_challenge(oauth: OAuthKit) -> None:
    """code_challenge twice (RFC 6749 3.1): which one counts is ambiguous: refused."""
    client = oauth.register_client()
    _, other = pkce_pair()
    url = oauth.authorize_url(client, challenge=CHALLENGE, state="st", resource=oauth.resource)
    r = oauth.browser().request("GET", f"{url}&code_challenge={other}")
    location = r.headers.get("location", "")
    if location.startswith(client.redirect_uri):
        assert query(location).get("error") == "invalid_request", location
    else:
        assert r.status_code == 400 and not location, describe(r)


def _assert_invalid(r, errors: tuple[str, ...] = ("invalid_grant",)) -> None:
    assert r.status_code in (400, 401), describe(r)
    assert oauth_error(r)["error"] in errors, describe(r)
    assert "access_token" not in r.json(), describe(r)


def test_wrong_verifier(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    _assert_invalid(oauth.exchange(auth, code_verifier=pkce_pair()[0]))


def test_the_challenge_as_verifier(oauth: OAuthKit) -> None:
    """Sending the (public) challenge as the verifier: invalid_grant."""
    auth = oauth.authorize(oauth.register_client())
    challenge = b64url(hashlib.sha256(auth.verifier.encode()).digest())
    _assert_invalid(oauth.exchange(auth, code_verifier=challenge))


def test_missing_verifier(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    _assert_invalid(oauth.exchange(auth, code_verifier=None), ("invalid_grant", "invalid_request"))


def test_verifier_of_another_authorization(oauth: OAuthKit) -> None:
    client = oauth.register_client()
    first, second = oauth.authorize(client), oauth.authorize(client)
    _assert_invalid(oauth.exchange(first, code_verifier=second.verifier))


def test_code_replay_revokes_the_tokens_of_the_first_use(oauth: OAuthKit, test_id: str) -> None:
    auth = oauth.authorize(oauth.register_client())
    tokens = oauth.tokens(auth)
    oauth.assert_accepted(tokens["access_token"], test_id + "-before")
    _assert_invalid(oauth.exchange(auth))
    oauth.assert_refused(tokens["access_token"], test_id)
    _assert_invalid(oauth.refresh(auth.client, tokens["refresh_token"]))


def test_code_replay_with_a_wrong_verifier_still_gets_no_token(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    oauth.tokens(auth)
    _assert_invalid(oauth.exchange(auth, code_verifier=pkce_pair()[0]))


def test_code_of_another_client(oauth: OAuthKit) -> None:
    """Another client presents the code (with the right verifier): refused;
    the code still works for its own client afterwards."""
    auth = oauth.authorize(oauth.register_client())
    own = auth.client
    auth.client = oauth.register_client()
    _assert_invalid(oauth.exchange(auth), ("invalid_grant", "invalid_client"))
    auth.client = own
    oauth.tokens(auth)


def test_redirect_uri_mismatch_at_token(oauth: OAuthKit) -> None:
    client = oauth.register_client(redirect_uri="http://127.0.0.1/cb")
    auth = oauth.authorize(client, redirect_uri="http://127.0.0.1:5555/cb")
    _assert_invalid(oauth.exchange(auth, redirect_uri="http://127.0.0.1:5556/cb"))


def test_resource_mismatch_at_token(oauth: OAuthKit) -> None:
    auth = oauth.authorize(oauth.register_client())
    _assert_invalid(oauth.exchange(auth, resource=oauth.other_resource), ("invalid_target", "invalid_grant"))


def test_code_at_another_origins_token_endpoint(oauth: OAuthKit) -> None:
    """The code of route 127.0.0.1:P redeemed at localhost:P's /token: not served there."""
    auth = oauth.authorize(oauth.register_client())
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": auth.redirect_uri,
            "code_verifier": auth.verifier, "client_id": auth.client.client_id}
    r = oauth.http.post(f"{oauth.issuer}/.oauth/token", data=data,
                        headers={"Host": f"localhost:{oauth.envoy.listen_port}"})
    _assert_invalid(r, ("invalid_grant", "invalid_target", "invalid_client"))


@pytest.fixture
def misc_oauth(attack_misc_envoy: Envoy, idp: Idp, mcp_server: McpServer) -> Iterator[OAuthKit]:
    kit = OAuthKit(attack_misc_envoy, idp, mcp_server)
    try:
        yield kit
    finally:
        kit.close()


def test_expired_code(misc_oauth: OAuthKit) -> None:
    """authorization_code_ttl_seconds is 1 on attack_misc_envoy: a code
    redeemed 2.5 s later is expired: invalid_grant."""
    auth = misc_oauth.authorize(misc_oauth.register_client())
    time.sleep(2.5)
    _assert_invalid(misc_oauth.exchange(auth))


def test_fresh_code_on_the_short_ttl_envoy_works(misc_oauth: OAuthKit) -> None:
    """Control for test_expired_code: redeemed at once, the same code works."""
    misc_oauth.tokens(misc_oauth.authorize(misc_oauth.register_client()))
