"""Attack class 11: refresh-token and revocation abuse.

On the session Envoy (refresh_reuse_grace_seconds 0). What the filter must do:
  - a rotated refresh token presented again means it leaked: the whole
    family is revoked (OAuth 2.1 4.3.1): the newest refresh token and every
    access token of the grant stop working;
  - a refresh token that was never issued (`<gid>.<random>`: the grant id
    is readable in the TE) is just refused (invalid_grant), with NO side
    effect: the real refresh token and the TE keep working;
  - a refresh token presented by another client, for another resource, for
    more scope, or at another origin's token endpoint is refused without
    consuming or revoking it;
  - after revocation nothing of the family works.
"""

from __future__ import annotations

import secrets

import pytest

from harness.attack import SignedIn, new_test_id, sign_in
from harness.oauth import OAuthKit, describe, oauth_error


def _invalid(r, errors: tuple[str, ...] = ("invalid_grant",)) -> None:
    assert r.status_code in (400, 401), describe(r)
    assert oauth_error(r)["error"] in errors, describe(r)
    assert "access_token" not in r.json(), describe(r)


def _still_works(oauth: OAuthKit, signed: SignedIn, what: str) -> None:
    r = oauth.mcp_post(signed.te, new_test_id())
    assert r.status_code == 200, f"{what}: the TE stopped working:\n{describe(r)}"
    refreshed = oauth.refresh(signed.client, signed.refresh_token)
    assert refreshed.status_code == 200, f"{what}: the refresh token stopped working:\n{describe(refreshed)}"


def test_replay_of_a_rotated_refresh_token_revokes_the_family(oauth: OAuthKit, test_id: str) -> None:
    signed = sign_in(oauth)
    rotated = oauth.assert_token_response(oauth.refresh(signed.client, signed.refresh_token))
    _invalid(oauth.refresh(signed.client, signed.refresh_token))
    _invalid(oauth.refresh(signed.client, rotated["refresh_token"]))
    oauth.assert_refused(rotated["access_token"], test_id + "-rotated")
    oauth.assert_refused(signed.te, test_id)


def test_replay_of_an_older_refresh_token_revokes_the_family(oauth: OAuthKit, test_id: str) -> None:
    """Two rotations later, the first token again: still a replay."""
    signed = sign_in(oauth)
    second = oauth.assert_token_response(oauth.refresh(signed.client, signed.refresh_token))
    third = oauth.assert_token_response(oauth.refresh(signed.client, second["refresh_token"]))
    _invalid(oauth.refresh(signed.client, signed.refresh_token))
    _invalid(oauth.refresh(signed.client, third["refresh_token"]))
    oauth.assert_refused(third["access_token"], test_id)


GUESSES = {
    "gid.random": lambda s: f"{s.gid}.{secrets.token_urlsafe(32)}",
    "gid.real secret, one character changed": lambda s: s.refresh_token[:-1] + ("A" if s.refresh_token[-1] != "A"
                                                                               else "B"),
    "gid.real secret, truncated": lambda s: s.refresh_token[:-4],
    "gid.real secret, extended": lambda s: s.refresh_token + "x",
    "gid.real secret upper-cased": lambda s: s.refresh_token.split(".")[0] + "." + s.refresh_token.split(".")[1].upper(),
    "another gid, real secret": lambda s: f"{secrets.token_urlsafe(16)}.{s.refresh_token.split('.', 1)[1]}",
}


@pytest.mark.parametrize("guess", list(GUESSES))
def test_guessed_refresh_token_has_no_side_effect(oauth: OAuthKit, guess: str) -> None:
    signed = sign_in(oauth)
    token = GUESSES[guess](signed)
    assert token != signed.refresh_token
    for _ in range(3):
        _invalid(oauth.refresh(signed.client, token))
    _still_works(oauth, signed, f"after guessing {guess}")


def test_refresh_with_another_clients_id(oauth: OAuthKit) -> None:
    signed = sign_in(oauth)
    _invalid(oauth.refresh(oauth.register_client(), signed.refresh_token), ("invalid_grant", "invalid_client"))
    _still_works(oauth, signed, "after another client's attempt")


def test_refresh_with_an_unknown_client_id(oauth: OAuthKit) -> None:
    signed = sign_in(oauth)
    r = oauth.http.post(oauth.endpoint("token"), data={"grant_type": "refresh_token", "client_id": "mcp_nobody",
                                                      "refresh_token": signed.refresh_token})
    _invalid(r, ("invalid_client",))
    _still_works(oauth, signed, "after an unknown client's attempt")


def test_refresh_for_another_resource(oauth: OAuthKit) -> None:
    signed = sign_in(oauth)
    _invalid(oauth.refresh(signed.client, signed.refresh_token, resource=oauth.other_resource),
             ("invalid_target", "invalid_grant"))
    _still_works(oauth, signed, "after asking for another resource")


def test_refresh_for_more_scope(oauth: OAuthKit) -> None:
    signed = sign_in(oauth)
    _invalid(oauth.refresh(signed.client, signed.refresh_token, scope="mcp admin"), ("invalid_scope",))
    _still_works(oauth, signed, "after asking for more scope")


def test_refresh_at_another_origins_token_endpoint(oauth: OAuthKit) -> None:
    """The grant of route 127.0.0.1:P, refreshed at localhost:P's /token: refused, and not consumed."""
    signed = sign_in(oauth)
    r = oauth.http.post(f"{oauth.issuer}/.oauth/token",
                        data={"grant_type": "refresh_token", "refresh_token": signed.refresh_token,
                              "client_id": signed.client.client_id},
                        headers={"Host": f"localhost:{oauth.envoy.listen_port}"})
    _invalid(r, ("invalid_grant", "invalid_client", "invalid_target"))
    _still_works(oauth, signed, "after another origin's attempt")


def test_nothing_of_a_revoked_family_works(oauth: OAuthKit, test_id: str) -> None:
    signed = sign_in(oauth)
    rotated = oauth.assert_token_response(oauth.refresh(signed.client, signed.refresh_token))
    assert oauth.revoke(signed.client, rotated["refresh_token"]).status_code == 200
    _invalid(oauth.refresh(signed.client, rotated["refresh_token"]))
    _invalid(oauth.refresh(signed.client, signed.refresh_token))
    oauth.assert_refused(rotated["access_token"], test_id)


def test_revoking_one_grant_leaves_the_users_other_grants(oauth: OAuthKit, test_id: str) -> None:
    """Two clients of the same user: revoking one grant leaves the other standing."""
    login = f"two-grants-{secrets.token_hex(4)}@company.com"
    first, second = sign_in(oauth, login=login), sign_in(oauth, login=login)
    assert oauth.revoke(first.client, first.refresh_token).status_code == 200
    oauth.assert_refused(first.te, test_id)
    _still_works(oauth, second, "the user's other grant")
