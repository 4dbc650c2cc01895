"""Where tokens may leak, watched over the whole e2e run (a pytest plugin,
loaded by conftest's `pytest_plugins`).

Two tokens, never crossed: the client holds only the filter's token (TE),
the MCP server gets only the upstream token (TI). This plugin checks both
directions for every request the run makes, not only for the tests that
check them themselves:

- it adds a response hook to every httpx client the run creates (sync and
  async, the MCP SDK's included) that records each answer from an Envoy
  listener of the harness (harness.envoy.LISTEN_PORTS): status, headers,
  body (event streams: headers only, their end never comes in a hook);
  harness.rawhttp records the answers of its raw HTTP/1.1 and HTTP/2
  requests the same way;
- every `access_token` and `refresh_token` a token endpoint answered with
  is remembered as a filter token (tests add the tokens they forge with
  note_filter_token);
- after every test module, it checks that
  * no answer the client side received holds any token an upstream
    provider of the upstream stack (harness.upstream.STACKS) ever issued,
  * no MCP server of the run (harness.mcp_server.RUNNING) received a
    filter token as its Authorization credentials (its own request log,
    read directly from its port, holds a SHA-256 of the credentials),
  * no answer carries a header injected by a test's payload (a header
    name or a Set-Cookie with INJECTION_MARK in it) or a header block with
    a bare CR or LF (a split header).
  A finding fails the module's last test at teardown, and is reported once.

MCP_E2E_LEAKWATCH=0 turns the plugin off.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

# What the attack payloads call the headers and cookies they try to inject.
INJECTION_MARK = "mcpofinjected"
MAX_BODY_CHARS = 256 * 1024


@dataclass
class Received:
    """One answer the client side got from Envoy."""

    seq: int
    where: str  # request line, or a description of a raw request
    port: int
    status: int | None
    headers: list[tuple[str, str]]
    body: str
    head: bytes = b""  # raw HTTP/1.1 header block, when known

    def text(self) -> str:
        head = "\n".join(f"{n}: {v}" for n, v in self.headers)
        return f"{self.status}\n{head}\n\n{self.body}"


@dataclass
class Watch:
    received: list[Received] = field(default_factory=list)
    filter_tokens: dict[str, str] = field(default_factory=dict)  # token -> where it came from
    upstream_tokens: set[str] = field(default_factory=set)
    checked: int = 0  # received[:checked] were scanned
    reported: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- recording ----------------------------------------------------------

    def add(self, where: str, port: int, status: int | None, headers: list[tuple[str, str]], body: str,
            head: bytes = b"") -> None:
        with self.lock:
            entry = Received(len(self.received), where, port, status, headers, body[:MAX_BODY_CHARS], head)
            self.received.append(entry)
        path = urlsplit(where.split(" ", 1)[-1]).path if " " in where else ""
        if status == 200 and path.endswith("/.oauth/token"):
            try:
                answer = json.loads(body)
            except ValueError:
                return
            if isinstance(answer, dict):
                for key in ("access_token", "refresh_token"):
                    if isinstance(answer.get(key), str):
                        self.note_filter_token(answer[key], where)

    def note_filter_token(self, token: str, where: str = "a test") -> None:
        with self.lock:
            self.filter_tokens.setdefault(token, where)

    def _wanted(self, response: httpx.Response) -> bool:
        from .envoy import LISTEN_PORTS

        return response.request.url.port in LISTEN_PORTS

    def _record_httpx(self, response: httpx.Response, body: str) -> None:
        req = response.request
        self.add(f"{req.method} {req.url}", req.url.port or 0, response.status_code,
                 [(k.lower(), v) for k, v in response.headers.multi_items()], body)

    def sync_hook(self, response: httpx.Response) -> None:
        try:
            if not self._wanted(response):
                return
            if _is_stream(response):
                self._record_httpx(response, "")
                return
            response.read()
            self._record_httpx(response, response.text)
        except Exception:  # noqa: BLE001 - a recorder must never break the request it watches
            pass

    async def async_hook(self, response: httpx.Response) -> None:
        try:
            if not self._wanted(response):
                return
            if _is_stream(response):
                self._record_httpx(response, "")
                return
            await response.aread()
            self._record_httpx(response, response.text)
        except Exception:  # noqa: BLE001
            pass

    # --- checks ---------------------------------------------------------------

    def refresh_upstream_tokens(self) -> None:
        from .upstream import STACKS

        for stack in list(STACKS):
            providers = [p for p in (stack.gh, stack.op) if p is not None]  # harness.ha's has no op
            if not all(p.proc.running for p in providers):
                continue
            try:
                tokens = stack.every_upstream_token()
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            with self.lock:
                self.upstream_tokens.update(t for t in tokens if t)

    def client_side_findings(self, entries: list[Received]) -> list[str]:
        """Upstream tokens in what the client side received; injected or split headers."""
        return upstream_token_findings(entries, self.upstream_tokens) + header_findings(entries)

    def server_side_findings(self, servers: list[Any] | None = None) -> list[str]:
        """Filter tokens in what the MCP servers (default: every running one) received."""
        from .mcp_server import RUNNING

        with self.lock:
            tokens = dict(self.filter_tokens)
        return filter_token_findings(tokens, list(RUNNING) if servers is None else servers)

    def check(self) -> list[str]:
        """Scan everything received since the last check, and the MCP servers' logs.
        Returns the findings not reported before."""
        self.refresh_upstream_tokens()
        with self.lock:
            entries = self.received[self.checked:]
            self.checked = len(self.received)
        findings = self.client_side_findings(entries) + self.server_side_findings()
        fresh = [f for f in findings if f not in self.reported]
        self.reported.update(fresh)
        return fresh

    def entries_since(self, seq: int) -> list[Received]:
        with self.lock:
            return self.received[seq:]


def upstream_token_findings(entries: list[Received], upstream_tokens: set[str] | list[str]) -> list[str]:
    out = []
    tokens = sorted(t for t in upstream_tokens if t)
    for entry in entries:
        text = entry.text()
        for token in tokens:
            if token in text:
                out.append(f"an upstream token ({token[:6]}...) reached the client side in the answer to "
                           f"{entry.where} ({entry.status})")
    return out


def header_findings(entries: list[Received]) -> list[str]:
    out = []
    for entry in entries:
        for name, value in entry.headers:
            if INJECTION_MARK in name.lower() or (name == "set-cookie" and INJECTION_MARK in value.lower()):
                out.append(f"an injected header reached the client side in the answer to {entry.where}: "
                           f"{name}: {value[:120]}")
            if any(c in value for c in "\r\n\0"):
                out.append(f"a header value with CR/LF/NUL in the answer to {entry.where}: {name}: {value!r:.120}")
        if entry.head:
            stripped = entry.head.replace(b"\r\n", b"")
            if b"\r" in stripped or b"\n" in stripped:
                out.append(f"the answer to {entry.where} has a bare CR or LF in its header block "
                           f"(a split header): {entry.head[:300]!r}")
    return out


def filter_token_findings(filter_tokens: dict[str, str], servers: list[Any]) -> list[str]:
    """Requests in the MCP servers' own logs whose Authorization credentials are a filter token."""
    from .mcp_server import fingerprint

    prints = {fingerprint(t): where for t, where in filter_tokens.items()}
    out = []
    for server in servers:
        if not server.proc.running:
            continue
        try:
            seen = server.requests_seen()
        except httpx.HTTPError:
            continue
        for req in seen:
            where = prints.get(req.get("authorization_sha256") or "")
            if where is not None:
                out.append(f"the MCP server {server.proc.name} received a filter token (issued in the answer "
                           f"to {where}) in {req.get('method')} {req.get('path')} (host {req.get('host')}, "
                           f"x-test-id {req.get('x-test-id')}, at {req.get('time'):.3f})")
    return out


def _is_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


WATCH = Watch()


def record_raw(port: int, where: str, response: Any) -> None:
    """Record an answer of harness.rawhttp (a RawResponse)."""
    from .envoy import LISTEN_PORTS

    if port not in LISTEN_PORTS:
        return
    WATCH.add(where, port, response.status, list(response.headers), response.body.decode("latin-1"),
              head=getattr(response, "head", b""))


def note_filter_token(token: str, where: str = "a test") -> None:
    WATCH.note_filter_token(token, where)


def enabled() -> bool:
    return os.environ.get("MCP_E2E_LEAKWATCH", "1") != "0"


def _install_hooks() -> None:
    if getattr(httpx.Client.__init__, "_leakwatch", False):
        return
    sync_init = httpx.Client.__init__
    async_init = httpx.AsyncClient.__init__

    def client_init(self, *args, **kwargs) -> None:
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["response"] = [*hooks.get("response", []), WATCH.sync_hook]
        sync_init(self, *args, event_hooks=hooks, **kwargs)

    def async_client_init(self, *args, **kwargs) -> None:
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["response"] = [*hooks.get("response", []), WATCH.async_hook]
        async_init(self, *args, event_hooks=hooks, **kwargs)

    client_init._leakwatch = True  # type: ignore[attr-defined]
    httpx.Client.__init__ = client_init  # type: ignore[method-assign]
    httpx.AsyncClient.__init__ = async_client_init  # type: ignore[method-assign]


# --- pytest plugin -----------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if enabled():
        _install_hooks()


@pytest.fixture(scope="module", autouse=True)
def _leakwatch_after_module() -> Iterator[None]:
    """After each test module: the checks of this plugin's docstring."""
    yield
    if not enabled():
        return
    findings = WATCH.check()
    if findings:
        pytest.fail("leak watch (harness/leakwatch.py) found, after this module:\n  " + "\n  ".join(findings[:40]),
                    pytrace=False)


@pytest.fixture
def leak_watch() -> Watch:
    """The run's watch, for tests that check or feed it directly."""
    return WATCH
