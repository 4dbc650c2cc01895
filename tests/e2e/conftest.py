"""Fixtures for the end-to-end tests: one MCP server and one Envoy with the
filter for the whole session; tests that need their own Envoy start it with
harness.envoy.start_envoy and stop it themselves.

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

from harness.envoy import Envoy, panic_lines, start_envoy
from harness.mcp_server import McpServer, start_mcp_server
from harness.procs import ManagedProcess, running_processes

LOG_LINES_ON_FAILURE = 60


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
def envoy(e2e_dir: Path, mcp_server: McpServer) -> Iterator[Envoy]:
    """Envoy with a valid plugin configuration in front of the MCP server."""
    proxy = start_envoy(e2e_dir / "envoy", mcp_port=mcp_server.port)
    try:
        yield proxy
    finally:
        proxy.stop()
    # Whatever the tests did, the filter must never have panicked or trapped.
    panics = panic_lines(proxy.log())
    assert not panics, f"Envoy log ({proxy.proc.log_path}) shows wasm panics or traps:\n" + "\n".join(panics)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
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
