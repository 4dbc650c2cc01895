"""Attack class 12: dynamic-registration floods.

What the filter must do: count new registrations per source address (the
downstream address Envoy saw; X-Forwarded-For and friends are ignored
unless a trusted-hop count is configured) within a window, under a larger
ceiling for all sources together; past either, answer 429 with a
Retry-After header (delta-seconds within the window) and an OAuth error
JSON body. A flood from one source must not stop a registration from
another; re-registering known public metadata (which returns the existing
client) and refused registrations take no quota.

The sources are 127.0.0.x (Linux routes all of 127/8 to lo, so a client
socket bound to 127.0.0.2 reaches Envoy's 127.0.0.1 listener from that
address). Two dedicated Envoys with small quotas:
  per_source_envoy  max_per_source_per_window 3, max_per_window 1000
  global_envoy      max_per_source_per_window 100, max_per_window 4
Each test floods from sources of its own, so no test uses another's quota.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.attack import attack_plugin, start_attack_envoy
from harness.envoy import Envoy
from harness.http import media_type
from harness.mcp_server import McpServer
from harness.oauth import describe
from harness.procs import free_port

WINDOW = 3600
PER_SOURCE = 3
GLOBAL = 4


def _quota_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer, name: str,
                 per_source: int, ceiling: int) -> Envoy:
    port = free_port()
    plugin = attack_plugin(port, free_port(), authorization_server={"registration": {"dynamic": {
        "max_per_source_per_window": per_source, "max_per_window": ceiling, "window_seconds": WINDOW}}})
    return start_attack_envoy(tmp_path_factory.mktemp(name), name, mcp_server=mcp_server, plugin=plugin,
                              listen_port=port)


@pytest.fixture(scope="module")
def per_source_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer) -> Iterator[Envoy]:
    proxy = _quota_envoy(tmp_path_factory, mcp_server, "envoy-attack-quota-source", PER_SOURCE, 1000)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def global_envoy(tmp_path_factory: pytest.TempPathFactory, mcp_server: McpServer) -> Iterator[Envoy]:
    proxy = _quota_envoy(tmp_path_factory, mcp_server, "envoy-attack-quota-global", 100, GLOBAL)
    try:
        yield proxy
    finally:
        proxy.stop()


def _metadata(auth_method: str = "none", **extra: Any) -> dict[str, Any]:
    return {"redirect_uris": ["http://127.0.0.1/callback"], "client_name": f"flood {uuid.uuid4().hex[:10]}",
            "token_endpoint_auth_method": auth_method, "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], **extra}


def _register(envoy: Envoy, source: str, metadata: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, trust_env=False, timeout=10.0) as c:
        return c.post(f"{envoy.base_url}/.oauth/register", json=metadata or _metadata(), headers=headers or {})


def _assert_created(r: httpx.Response, what: str) -> str:
    assert r.status_code == 201, f"{what}: expected 201:\n{describe(r)}"
    return r.json()["client_id"]


def _assert_quota_refusal(r: httpx.Response, what: str) -> None:
    assert r.status_code == 429, f"{what}: expected 429:\n{describe(r)}"
    retry = r.headers.get("retry-after", "")
    assert retry.isdigit() and 0 < int(retry) <= WINDOW, f"{what}: Retry-After must be delta-seconds:\n{describe(r)}"
    assert media_type(r.headers.get("content-type")) == "application/json", describe(r)
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], f"{what}: no OAuth error:\n{describe(r)}"
    assert "client_id" not in body, describe(r)


def _exhaust(envoy: Envoy, source: str) -> None:
    for i in range(PER_SOURCE):
        _assert_created(_register(envoy, source), f"registration {i + 1} from {source}")


def test_flood_from_one_source_is_refused(per_source_envoy: Envoy) -> None:
    """The source's quota used up: 429 with Retry-After and an OAuth error, again and again."""
    _exhaust(per_source_envoy, "127.0.0.2")
    for _ in range(3):
        _assert_quota_refusal(_register(per_source_envoy, "127.0.0.2"), "past the quota of 127.0.0.2")


def test_flood_from_one_source_does_not_stop_another(per_source_envoy: Envoy) -> None:
    _exhaust(per_source_envoy, "127.0.0.3")
    _assert_quota_refusal(_register(per_source_envoy, "127.0.0.3"), "past the quota of 127.0.0.3")
    _assert_created(_register(per_source_envoy, "127.0.0.4"), "another source during the flood")
    _assert_created(_register(per_source_envoy, "127.0.0.1"), "the usual source during the flood")


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded", "True-Client-IP"])
def test_forwarded_headers_are_ignored(per_source_envoy: Envoy, header: str) -> None:
    """Past the source's quota, claiming another client address in a header changes nothing."""
    source = {"X-Forwarded-For": "127.0.0.5", "X-Real-IP": "127.0.0.6", "Forwarded": "127.0.0.7",
              "True-Client-IP": "127.0.0.8"}[header]
    _exhaust(per_source_envoy, source)
    value = "for=203.0.113.9" if header == "Forwarded" else "203.0.113.9"
    _assert_quota_refusal(_register(per_source_envoy, source, headers={header: value}), f"{header}: {value}")


def test_rotating_x_forwarded_for_counts_against_one_source(per_source_envoy: Envoy) -> None:
    """Each registration claims another X-Forwarded-For: they all count for the real source."""
    source = "127.0.0.9"
    for i in range(PER_SOURCE):
        _assert_created(_register(per_source_envoy, source, headers={"X-Forwarded-For": f"203.0.113.{i + 1}"}),
                        f"registration {i + 1}")
    _assert_quota_refusal(_register(per_source_envoy, source, headers={"X-Forwarded-For": "203.0.113.99"}),
                          "fourth, with yet another X-Forwarded-For")


def test_known_public_metadata_needs_no_quota(per_source_envoy: Envoy) -> None:
    """Registering known public metadata again returns the existing client,
    also past the source's quota; new metadata is refused."""
    source = "127.0.0.10"
    first = _metadata()
    client_id = _assert_created(_register(per_source_envoy, source, first), "first")
    for i in range(PER_SOURCE - 1):
        _assert_created(_register(per_source_envoy, source), f"registration {i + 2}")
    for _ in range(2):
        again = _register(per_source_envoy, source, first)
        assert _assert_created(again, "the same public metadata again") == client_id, describe(again)
    _assert_quota_refusal(_register(per_source_envoy, source), "new metadata past the quota")


def test_confidential_registrations_count(per_source_envoy: Envoy) -> None:
    """A confidential client is new every time (new id and secret): each takes quota."""
    source = "127.0.0.11"
    same = _metadata("client_secret_basic")
    ids = {_assert_created(_register(per_source_envoy, source, same), f"confidential {i + 1}")
           for i in range(PER_SOURCE)}
    assert len(ids) == PER_SOURCE, ids
    _assert_quota_refusal(_register(per_source_envoy, source, same), "confidential past the quota")


def test_refused_registrations_take_no_quota(per_source_envoy: Envoy) -> None:
    source = "127.0.0.12"
    for _ in range(PER_SOURCE + 2):
        r = _register(per_source_envoy, source, _metadata(redirect_uris=["javascript:alert(1)"]))
        assert r.status_code == 400, describe(r)
    _exhaust(per_source_envoy, source)


def test_global_ceiling_holds_across_sources(global_envoy: Envoy) -> None:
    """Many sources, one registration each: past max_per_window every source
    gets 429 with Retry-After, also one that registered nothing yet."""
    sources = [f"127.0.1.{i}" for i in range(1, GLOBAL + 1)]
    for source in sources:
        _assert_created(_register(global_envoy, source), f"registration from {source}")
    _assert_quota_refusal(_register(global_envoy, "127.0.1.200"), "a new source past the global ceiling")
    _assert_quota_refusal(_register(global_envoy, sources[0]), "an old source past the global ceiling")
