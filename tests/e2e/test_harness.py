"""Checks of the harness's own parsers (no processes)."""

from __future__ import annotations

import pytest

from harness import www_authenticate
from harness.envoy import invalid_configuration_messages, panic_lines


def test_parse_bearer_challenge() -> None:
    c = www_authenticate.bearer(
        'Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp", '
        'error="invalid_token", error_description="the \\"token\\" expired", scope=openid'
    )
    assert c.scheme == "Bearer"
    assert c.params == {
        "resource_metadata": "http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp",
        "error": "invalid_token",
        "error_description": 'the "token" expired',
        "scope": "openid",
    }


def test_parse_several_challenges() -> None:
    challenges = www_authenticate.parse('Basic realm="x", Bearer realm="y", error=invalid_token, Negotiate abc==')
    assert [(c.scheme, c.params, c.token68) for c in challenges] == [
        ("Basic", {"realm": "x"}, None),
        ("Bearer", {"realm": "y", "error": "invalid_token"}, None),
        ("Negotiate", {}, "abc=="),
    ]


@pytest.mark.parametrize("bad", [
    "", "Bearer realm=a b", 'Bearer realm="x', 'Bearer realm="x" junk', "Bearer a=1, a=2", '=x',
])
def test_malformed_challenges_are_rejected(bad: str) -> None:
    with pytest.raises(www_authenticate.ParseError):
        www_authenticate.bearer(bad)


def test_panic_detection_matches_envoy_lines() -> None:
    # Lines as Envoy 1.40 logs a Rust panic inside a proxy-wasm callback.
    log = (
        "[2026-01-01 00:00:00.000][1][info][wasm] wasm log mcp_oauth_filter: ok\n"
        "[2026-01-01 00:00:00.000][1][critical][wasm] [source/extensions/common/wasm/context.cc:1160] "
        "wasm log mcp_oauth_filter: panicked at src/lib.rs:20:13:\n"
        "[2026-01-01 00:00:00.000][1][error][wasm] [source/extensions/common/wasm/wasm_vm.cc:38] "
        "Function: proxy_on_http_request_headers failed: Uncaught RuntimeError: unreachable\n"
    )
    assert len(panic_lines(log)) == 2


def test_invalid_configuration_extraction() -> None:
    log = ("[x][error][wasm] wasm log mcp_oauth_filter: invalid configuration: routes[0].from: "
           "must be an absolute http(s) URL\n[x][info][main] other\n")
    assert invalid_configuration_messages(log) == ["routes[0].from: must be an absolute http(s) URL"]
