"""Fixtures for the end-to-end tests: for the whole session, one MCP server,
the OpenID provider fixture (envoy-demo/idp.mjs) twice (ID tokens signed
RS256 and ES256), an HTTPS server for client metadata documents, and Envoy
with the filter:

  envoy            routes http://127.0.0.1:P and http://localhost:P, IdP RS256,
                   refresh_reuse_grace_seconds 0
  envoy_short_ttl  the same on another port with IdP ES256 and
                   access_token_ttl_seconds 3 (started on first use)
  upstream_stack   the issue 4/5 stack (harness.upstream; started on first
                   use): upstream providers (oidc-provider with 5-second
                   rotating tokens, a fake GitHub), three MCP servers, and an
                   Envoy whose routes each have their own upstream behaviour
                   or the seed policy; tests use it through the `upstream`
                   fixture, which makes a kit per route and user and checks,
                   after every test, that TE and TI never crossed

Tests that need their own Envoy start it with harness.envoy.start_envoy and
stop it themselves.

Every process started here is stopped by its fixture's finalizer, also when a
test fails or times out (pytest-timeout's signal method unwinds through the
finalizers). When a test fails, the part of each running process's log
written during that test is attached to the report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.cimd import CimdServer, start_cimd_server
from harness.envoy import Envoy, callback_urls, oauth_plugin_config, panic_lines, start_envoy
from harness.idp import Idp, start_idp
from harness.mcp_server import McpServer, start_mcp_server
from harness.oauth import OAuthKit
from harness.procs import ManagedProcess, free_port, running_processes
from harness.upstream import UpstreamKit, UpstreamStack, start_upstream_stack

LOG_LINES_ON_FAILURE = 60

# Records what the client side receives from Envoy over the whole run and
# checks, after every module, that no token crossed (harness/leakwatch.py);
# the attack suite's shared Envoys (harness/attack_fixtures.py).
pytest_plugins = ["harness.leakwatch", "harness.attack_fixtures"]


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def mcp_server(e2e_dir: Path) -> Iterator[McpServer]:
    server = start_mcp_server(e2e_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def listen_ports() -> dict[str, int]:
    """The listener port of each session Envoy, chosen first: the IdPs must
    know the filter's callback URLs before they start."""
    return {"main": free_port(), "short_ttl": free_port(), "upstream": free_port(),
            "audit_off": free_port(), "audit_arguments": free_port(),
            # The attack suite's own Envoys that sign users in (harness/attack.py).
            "attack_misc": free_port(), "attack_forward": free_port(), "attack_consent": free_port(),
            # The HA stack's balancer (harness/ha.py): the origin its two replicas serve.
            "ha": free_port()}


def _start_idp(e2e_dir: Path, listen_ports: dict[str, int], alg: str, name: str) -> Iterator[Idp]:
    redirect_uris = [url for port in listen_ports.values() for url in callback_urls(port)]
    idp = start_idp(e2e_dir / name, redirect_uris=redirect_uris, id_token_alg=alg, name=name)
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="session")
def idp(e2e_dir: Path, listen_ports: dict[str, int]) -> Iterator[Idp]:
    """The OpenID provider, signing the filter's ID tokens with RS256."""
    yield from _start_idp(e2e_dir, listen_ports, "RS256", "idp")


@pytest.fixture(scope="session")
def idp_es256(e2e_dir: Path, listen_ports: dict[str, int]) -> Iterator[Idp]:
    """The OpenID provider, signing the filter's ID tokens with ES256."""
    yield from _start_idp(e2e_dir, listen_ports, "ES256", "idp-es256")


@pytest.fixture(scope="session")
def cimd_server(e2e_dir: Path) -> Iterator[CimdServer]:
    server = start_cimd_server(e2e_dir)
    try:
        yield server
    finally:
        server.stop()


def _run_envoy(workdir: Path, name: str, **kwargs) -> Iterator[Envoy]:
    proxy = start_envoy(workdir, name=name, **kwargs)
    try:
        yield proxy
    finally:
        proxy.stop()
    # Whatever the tests did, the filter must never have panicked or trapped.
    panics = panic_lines(proxy.log())
    assert not panics, f"Envoy log ({proxy.proc.log_path}) shows wasm panics or traps:\n" + "\n".join(panics)


# Every test registers clients on the session Envoys: the default quotas (60
# an hour) would run out half-way. The quota itself is tested on an Envoy of its own.
SESSION_QUOTA = {"registration": {"dynamic": {"max_per_window": 100_000, "max_per_source_per_window": 100_000}}}


@pytest.fixture(scope="session")
def envoy(e2e_dir: Path, mcp_server: McpServer, idp: Idp, cimd_server: CimdServer,
          listen_ports: dict[str, int]) -> Iterator[Envoy]:
    """Envoy with a valid plugin configuration in front of the MCP server."""
    port = listen_ports["main"]
    plugin = oauth_plugin_config(port, idp.port, {"refresh_reuse_grace_seconds": 0, **SESSION_QUOTA})
    yield from _run_envoy(e2e_dir / "envoy", "envoy", mcp_port=mcp_server.port, plugin=plugin, listen_port=port,
                          idp_port=idp.port, cimd_port=cimd_server.port, cimd_ca=cimd_server.certs.ca_pem)


@pytest.fixture(scope="session")
def envoy_short_ttl(e2e_dir: Path, mcp_server: McpServer, idp_es256: Idp, cimd_server: CimdServer,
                    listen_ports: dict[str, int]) -> Iterator[Envoy]:
    """Like `envoy`, with 3-second access tokens and the ES256 IdP."""
    port = listen_ports["short_ttl"]
    plugin = oauth_plugin_config(port, idp_es256.port,
                                 {"access_token_ttl_seconds": 3, "refresh_reuse_grace_seconds": 0, **SESSION_QUOTA})
    yield from _run_envoy(e2e_dir / "envoy-short-ttl", "envoy-short-ttl", mcp_port=mcp_server.port, plugin=plugin,
                          listen_port=port, idp_port=idp_es256.port, cimd_port=cimd_server.port,
                          cimd_ca=cimd_server.certs.ca_pem)


@pytest.fixture(scope="session")
def upstream_stack(e2e_dir: Path, idp: Idp, listen_ports: dict[str, int]) -> Iterator[UpstreamStack]:
    """The upstream providers, MCP servers and Envoy of the issue 4/5 tests (harness.upstream)."""
    stack, started = start_upstream_stack(e2e_dir / "upstream", idp, listen_ports["upstream"])
    try:
        yield stack
    finally:
        for proc in reversed(started):
            proc.stop()
    panics = panic_lines(stack.envoy.log())
    assert not panics, f"Envoy log ({stack.envoy.proc.log_path}) shows wasm panics or traps:\n" + "\n".join(panics)


class Upstream:
    """A test's view of the upstream stack: kit(route) makes a kit for that
    route and a user of its own; every kit's check_vault runs after the test."""

    def __init__(self, stack: UpstreamStack) -> None:
        self.stack = stack
        self.kits: list[UpstreamKit] = []

    def kit(self, route: str, **kwargs) -> UpstreamKit:
        kit = UpstreamKit(self.stack, route, **kwargs)
        self.kits.append(kit)
        return kit


@pytest.fixture
def upstream(upstream_stack: UpstreamStack, request: pytest.FixtureRequest) -> Iterator[Upstream]:
    up = Upstream(upstream_stack)
    try:
        yield up
        # In every test: the MCP servers never got a TE, and only current TIs;
        # the client never got a TI. (Skipped when the test failed already.)
        if not request.node.stash.get(_CALL_FAILED, False):
            for kit in up.kits:
                kit.check_vault()
    finally:
        for kit in up.kits:
            kit.close()


@pytest.fixture
def oauth(envoy: Envoy, idp: Idp, mcp_server: McpServer) -> Iterator[OAuthKit]:
    """Raw-HTTP OAuth steps against the session Envoy (IdP RS256)."""
    kit = OAuthKit(envoy, idp, mcp_server)
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture
def oauth_short_ttl(envoy_short_ttl: Envoy, idp_es256: Idp, mcp_server: McpServer) -> Iterator[OAuthKit]:
    """Raw-HTTP OAuth steps against the short-TTL Envoy (IdP ES256)."""
    kit = OAuthKit(envoy_short_ttl, idp_es256, mcp_server)
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture
def client(envoy: Envoy) -> Iterator[httpx.Client]:
    """HTTP client for Envoy's listener (no proxies from the environment, no redirects)."""
    with httpx.Client(base_url=envoy.base_url, timeout=10.0, trust_env=False) as c:
        yield c


@pytest.fixture
def test_id() -> str:
    """A value for the x-test-id header, to find a request in the MCP server's request log."""
    return uuid.uuid4().hex


def _log_files(proc: ManagedProcess) -> list[Path]:
    return [proc.log_path, *proc.extra_logs]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def _per_test_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remember where each log stood when the test started; after the test,
    fail it if Envoy logged a panic or trap meanwhile."""
    offsets = {path: _size(path) for proc in running_processes() for path in _log_files(proc)}
    request.node.stash[_OFFSETS] = offsets
    yield
    for proc in running_processes():
        if proc.name.startswith("envoy") and proc.log_path in offsets:
            panics = panic_lines(_read_from(proc.log_path, offsets[proc.log_path]))
            if panics:
                pytest.fail(f"{proc.name} logged wasm panics or traps during this test:\n" + "\n".join(panics))


_OFFSETS = pytest.StashKey[dict]()
_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    if report.failed:
        offsets = item.stash.get(_OFFSETS, {})
        for proc in running_processes():
            for path in _log_files(proc):
                text = _read_from(path, offsets.get(path, 0))
                lines = text.splitlines()[-LOG_LINES_ON_FAILURE:]
                report.sections.append(
                    (f"{path.name} during this test (last {LOG_LINES_ON_FAILURE} lines; {path})",
                     "\n".join(lines) or "(nothing)")
                )
    return report
