"""The upstream side of the token-vault (issue 4) and policy (issue 5) tests.

One stack for the whole session (conftest's `upstream_stack`), started on first use:

  op      envoy-demo/idp.mjs as an upstream OAuth2 provider (npm oidc-provider):
          5-second access tokens, refresh tokens rotated on every use whose reuse
          revokes the grant, clockTolerance 0, userinfo (/me) refusing expired
          tokens, a login form and a consent page, client `mcp-upstream`
          (client_secret_basic), a debug log (every token request, every token)
          and /_debug/revoke
  gh      envoy-demo/fake_github.py: GitHub's token endpoint and /user, one OAuth
          app per behaviour under test (form answers, classic tokens, Google-style
          refresh, Basic-only, body-only, outages...), with its test API
  mcp     three demo MCP servers: `op` and `gh` answer JSON (so the transcript
          holds every body the client got) and ask op's /me and gh's /user in
          whoami; `gh_sse` answers with event streams
  envoy   one origin, http://127.0.0.1:<port>, with one route per behaviour on
          its own path (ROUTES; Envoy rewrites each path to the server's /mcp)

Every test signs in as a user of its own (the IdP's open sign-up): the
filter keeps upstream tokens per (user, route), so no test sees another's.

UpstreamKit is OAuthKit bound to one route and one user: it gets through
the upstream provider's pages in the browser, speaks JSON-RPC to the route,
and checks what every test must hold (check_vault): the MCP servers never
received a TE, only upstream tokens that were current when they arrived; the
client side never received an upstream token or secret; Envoy's log holds none.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .browser import Browser, forms_of, http_client
from .envoy import REPO_ROOT, Envoy, audit_lines, plugin_config, start_envoy
from .http import PROTOCOL_VERSION, media_type
from .idp import Idp, start_idp
from .mcp_server import McpServer, fingerprint, start_mcp_server
from .oauth import Client, OAuthKit, describe
from .procs import ManagedProcess, free_port, wait_until

FAKE_GITHUB = REPO_ROOT / "envoy-demo" / "fake_github.py"
UPSTREAM_CALLBACK = "/.oauth/upstream/callback"
OP_CLIENT_ID = "mcp-upstream"
OP_AT_TTL_S = 5
GH_SHORT_TTL_S = 3

# The seed policy of issue 5.
SEED_POLICY = {
    "allow": {"and": [{"domain": {"is": "company.com"}}]},
    "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]},
}


@dataclass(frozen=True)
class RouteSpec:
    name: str
    path: str
    provider: str | None  # "op", "gh", or None: no upstream_oauth2
    server: str  # which MCP server: "op", "gh", "gh_sse"
    app: dict[str, Any] = field(default_factory=dict)  # fake GitHub app settings
    upstream: dict[str, Any] = field(default_factory=dict)  # more of upstream_oauth2 (merged)
    policy: dict[str, Any] | None = None

    @property
    def client_id(self) -> str:
        return OP_CLIENT_ID if self.provider == "op" else f"app-{self.name}"


_SHORT = {"expires_in": GH_SHORT_TTL_S}
_SKEW1 = {"refresh_skew_seconds": 1}
ROUTES = [
    RouteSpec("op", "/mcp", "op", "op", upstream={"refresh_skew_seconds": 2, "scopes": ["openid", "profile"]}),
    RouteSpec("gh", "/gh/mcp", "gh", "gh", app=_SHORT, upstream=_SKEW1),
    RouteSpec("gh-form", "/gh-form/mcp", "gh", "gh", app={**_SHORT, "form_always": True}, upstream=_SKEW1),
    RouteSpec("gh-classic", "/gh-classic/mcp", "gh", "gh", app={"expires_in": 0}, upstream=_SKEW1),
    RouteSpec("google", "/google/mcp", "gh", "gh", app={**_SHORT, "rotate_refresh": False}, upstream={
        **_SKEW1, "scopes": ["https://www.googleapis.com/auth/drive.readonly"],
        "authorization_url_params": {"access_type": "offline", "prompt": "consent"}}),
    RouteSpec("notion", "/notion/mcp", "gh", "gh", app={**_SHORT, "client_auth": "basic"},
              upstream={**_SKEW1, "endpoint": {"auth_style": "header"}}),
    RouteSpec("auto", "/auto/mcp", "gh", "gh", app={**_SHORT, "client_auth": "body"},
              upstream={**_SKEW1, "endpoint": {"auth_style": "auto"}}),
    RouteSpec("flaky", "/flaky/mcp", "gh", "gh", app={**_SHORT, "hang_seconds": 3},
              upstream={**_SKEW1, "refresh_timeout_ms": 1000, "refresh_wait_ms": 1000}),
    RouteSpec("slow", "/slow/mcp", "gh", "gh", app={**_SHORT, "refresh_delay_ms": 800}, upstream=_SKEW1),
    # 10-second tokens refreshed 5 s before expiry, 800 ms refreshes: a token
    # inside its skew is still good for seconds, whole seconds of the filter's
    # clock included.
    RouteSpec("slow-skew", "/slow-skew/mcp", "gh", "gh", app={"expires_in": 10, "refresh_delay_ms": 800},
              upstream={"refresh_skew_seconds": 5}),
    # Requests wait 1 s for a refresh; the refresh itself waits up to 15 s
    # (the provider is frozen with SIGSTOP in between).
    RouteSpec("frozen", "/frozen/mcp", "gh", "gh", app=_SHORT,
              upstream={**_SKEW1, "refresh_timeout_ms": 15_000, "refresh_wait_ms": 1000}),
    RouteSpec("refusing", "/refusing/mcp", "gh", "gh", app={"refuse_codes": True}),
    RouteSpec("reactive", "/reactive/mcp", "gh", "gh", app={"expires_in": 3600}),
    RouteSpec("plain", "/plain/mcp", None, "gh"),
    RouteSpec("policy", "/policy/mcp", "gh", "gh", app={"expires_in": 3600}, policy=SEED_POLICY),
    RouteSpec("policy-sse", "/policy-sse/mcp", "gh", "gh_sse", app={"expires_in": 3600}, policy=SEED_POLICY),
]
ROUTE = {spec.name: spec for spec in ROUTES}


# --- the fake GitHub ----------------------------------------------------------


@dataclass
class FakeGitHub:
    proc: ManagedProcess
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def user_url(self) -> str:
        return f"{self.base_url}/user"

    def configure(self, client_id: str, **settings: Any) -> dict[str, Any]:
        """Create the app, or change its settings (see fake_github.py)."""
        r = httpx.post(f"{self.base_url}/_test/apps", json={"client_id": client_id, **settings}, timeout=5.0,
                       trust_env=False)
        assert r.status_code == 200, r.text
        return r.json()

    def state(self, client_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.base_url}/_test/state", params={"client_id": client_id}, timeout=5.0, trust_env=False)
        r.raise_for_status()
        return r.json()

    def all_issued(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base_url}/_test/state", timeout=5.0, trust_env=False)
        r.raise_for_status()
        return [t for app in r.json()["apps"].values() for t in app["issued"]]

    def revoke(self, client_id: str, login: str) -> int:
        r = httpx.post(f"{self.base_url}/_test/revoke", json={"client_id": client_id, "login": login}, timeout=5.0,
                       trust_env=False)
        r.raise_for_status()
        return r.json()["revoked"]

    def stop(self) -> None:
        self.proc.stop()


def start_fake_github(workdir: Path, name: str = "fake_github", timeout: float = 20.0) -> FakeGitHub:
    port = free_port()
    proc = ManagedProcess(name, [sys.executable, FAKE_GITHUB, "--port", str(port), "--test-api"],
                          workdir / f"{name}.log", cwd=REPO_ROOT)
    gh = FakeGitHub(proc=proc, port=port)
    try:
        wait_until(f"{name} on port {port}",
                   lambda: httpx.get(f"{gh.base_url}/healthz", timeout=1.0, trust_env=False).status_code == 200,
                   timeout, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return gh


def start_upstream_op(workdir: Path, redirect_uris: list[str], client_secret: str) -> Idp:
    """idp.mjs as the upstream OAuth2 provider of route `op`."""
    return start_idp(workdir, redirect_uris=redirect_uris, name="upstream_op", client_id=OP_CLIENT_ID,
                     client_secret=client_secret, options={
                         "AT_TTL": str(OP_AT_TTL_S), "ROTATE_REFRESH_TOKENS": "1", "ALWAYS_REFRESH_TOKEN": "1",
                         "CONSENT_PAGE": "1", "PROVIDER_NAME": "the upstream provider"})


# --- the stack ----------------------------------------------------------------


@dataclass
class UpstreamStack:
    envoy: Envoy
    idp: Idp
    op: Idp
    gh: FakeGitHub
    servers: dict[str, McpServer]
    secrets: list[str]  # upstream client secrets

    @property
    def origin(self) -> str:
        return self.envoy.base_url

    def spec(self, route: str) -> RouteSpec:
        return ROUTE[route]

    def server(self, route: str) -> McpServer:
        return self.servers[ROUTE[route].server]

    def issued(self, route: str) -> list[dict[str, Any]]:
        """Upstream tokens issued for the route's provider: [{access_token,
        refresh_token, login, at, expires_at (None: never)}], oldest first."""
        spec = ROUTE[route]
        if spec.provider == "gh":
            return self.gh.state(spec.client_id)["issued"]
        if spec.provider == "op":
            out = []
            for t in self.op.debug_log()["issued"]:
                if t.get("access_token"):
                    out.append({"access_token": t["access_token"], "refresh_token": t.get("refresh_token"),
                                "id_token": t.get("id_token"), "login": t.get("account"), "at": t["at"],
                                "expires_at": t["at"] + t["expires_in"] if t.get("expires_in") else None})
            return out
        return []

    def every_upstream_token(self) -> list[str]:
        """Every access, refresh and ID token any upstream provider issued so far."""
        out = []
        for t in self.gh.all_issued():
            out += [v for v in (t["access_token"], t["refresh_token"]) if v]
        for t in self.op.debug_log()["issued"]:
            out += [t[k] for k in ("access_token", "refresh_token", "id_token") if t.get(k)]
        return out


# Every upstream stack started in this run (harness.leakwatch asks their
# providers for the tokens they issued).
STACKS: list[UpstreamStack] = []


def upstream_plugin_config(listen_port: int, idp_port: int, op: Idp, gh: FakeGitHub,
                           gh_secrets: dict[str, str]) -> dict[str, Any]:
    origin = f"http://127.0.0.1:{listen_port}"
    config = plugin_config(listen_port, idp_port)
    routes = []
    for spec in ROUTES:
        server: dict[str, Any] = {"path": spec.path}
        if spec.provider == "op":
            server["upstream_oauth2"] = {
                "client_id": OP_CLIENT_ID, "client_secret": op.client_secret, "scopes": ["openid"],
                "endpoint": {"auth_url": f"{op.issuer}/auth", "token_url": f"{op.issuer}/token",
                             "cluster": "upstream_op"},
            }
        elif spec.provider == "gh":
            server["upstream_oauth2"] = {
                "client_id": spec.client_id, "client_secret": gh_secrets[spec.name], "scopes": ["repo", "read:user"],
                "endpoint": {"auth_url": f"{gh.base_url}/login/oauth/authorize",
                             "token_url": f"{gh.base_url}/login/oauth/access_token", "cluster": "upstream_oauth"},
            }
        if "upstream_oauth2" in server:
            extra = copy.deepcopy(spec.upstream)
            server["upstream_oauth2"]["endpoint"].update(extra.pop("endpoint", {}))
            server["upstream_oauth2"].update(extra)
        route: dict[str, Any] = {"from": origin, "name": spec.name, "mcp": {"server": server}}
        if spec.policy is None:
            route["allow_any_authenticated_user"] = True
        else:
            route["policy"] = spec.policy
        routes.append(route)
    config["routes"] = routes
    # Every test registers clients: no registration quota in the way.
    config["authorization_server"] = {"registration": {"dynamic": {"max_per_window": 100_000, "max_per_source_per_window": 100_000}}}
    # Below the buffer filter's 1 MiB, so the filter's own 413 can be seen.
    config["mcp"] = {"max_request_bytes": 256 * 1024}
    return config


def start_upstream_stack(workdir: Path, idp: Idp, listen_port: int) -> tuple[UpstreamStack, list]:
    """Start op, gh, the MCP servers and Envoy; returns the stack and the
    processes to stop (in order)."""
    started: list = []
    try:
        origin = f"http://127.0.0.1:{listen_port}"
        op_secret = secrets.token_urlsafe(24)
        op = start_upstream_op(workdir, [origin + UPSTREAM_CALLBACK], op_secret)
        started.append(op)
        gh = start_fake_github(workdir)
        started.append(gh)
        gh_secrets = {}
        for spec in ROUTES:
            if spec.provider == "gh":
                gh_secrets[spec.name] = f"{spec.name}-{secrets.token_urlsafe(18)}"
                gh.configure(spec.client_id, client_secret=gh_secrets[spec.name],
                             redirect_uris=[origin + UPSTREAM_CALLBACK], **spec.app)
        servers = {
            "op": start_mcp_server(workdir, name="mcp_op", upstream_user_url=f"{op.issuer}/me", json_response=True),
            "gh": start_mcp_server(workdir, name="mcp_gh", upstream_user_url=gh.user_url, json_response=True),
            "gh_sse": start_mcp_server(workdir, name="mcp_gh_sse", upstream_user_url=gh.user_url),
        }
        started.extend(servers.values())
        plugin = upstream_plugin_config(listen_port, idp.port, op, gh, gh_secrets)
        routes = {spec.path: f"mcp_{spec.server}" for spec in ROUTES if spec.path != "/mcp"}
        envoy = start_envoy(workdir, name="envoy-upstream", mcp_port=servers["op"].port, plugin=plugin,
                            listen_port=listen_port, idp_port=idp.port, upstream_port=gh.port,
                            extra_clusters={"upstream_op": op.port, "mcp_gh": servers["gh"].port,
                                            "mcp_gh_sse": servers["gh_sse"].port},
                            mcp_routes=routes)
        started.append(envoy)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    stack = UpstreamStack(envoy=envoy, idp=idp, op=op, gh=gh, servers=servers,
                          secrets=[op_secret, *gh_secrets.values()])
    STACKS.append(stack)
    return stack, started


# --- the person at the upstream provider ------------------------------------------


class GitHubPages:
    """fake_github's "Authorize <app>" page: type the login, Authorize (or Cancel).
    `kit` has upstream_login, upstream_decision and upstream_pages."""

    def __init__(self, kit: OAuthKit, port: int) -> None:
        self.kit = kit
        self.port = port

    def handles(self, page: httpx.Response) -> bool:
        where = urlsplit(str(page.url))
        return page.status_code == 200 and where.port == self.port and where.path == "/login/oauth/authorize"

    def act(self, browser: Browser, page: httpx.Response, stop: Callable[[str], bool]) -> httpx.Response:
        self.kit.upstream_pages.append(("gh authorize", str(page.url)))
        forms = forms_of(page)
        assert forms, f"the provider's authorize page has no form:\n{describe(page)}"
        button = 0 if self.kit.upstream_decision == "approve" else 1
        return browser.submit(page, forms[0], button=button, overrides={"login": self.kit.upstream_login}, stop=stop)


class OpPages:
    """idp.mjs's login form (type the login) and consent page (Allow or Deny)."""

    def __init__(self, kit: OAuthKit, port: int) -> None:
        self.kit = kit
        self.port = port

    def handles(self, page: httpx.Response) -> bool:
        where = urlsplit(str(page.url))
        return page.status_code == 200 and where.port == self.port and where.path.startswith("/interaction/")

    def act(self, browser: Browser, page: httpx.Response, stop: Callable[[str], bool]) -> httpx.Response:
        forms = forms_of(page)
        assert forms, f"the provider's page has no form:\n{describe(page)}"
        if forms[0].action.endswith("/login"):
            self.kit.upstream_pages.append(("op login", str(page.url)))
            return browser.submit(page, forms[0], overrides={"login": self.kit.upstream_login}, stop=stop)
        self.kit.upstream_pages.append(("op consent", str(page.url)))
        wanted = "/consent" if self.kit.upstream_decision == "approve" else "/abort"
        form = next((f for f in forms if f.action.endswith(wanted)), None)
        assert form is not None, f"no {wanted} form on the provider's consent page:\n{describe(page)}"
        return browser.submit(page, form, stop=stop)


# --- one route, one user ----------------------------------------------------------

_serial = itertools.count(1)


def new_user(prefix: str = "t") -> str:
    """An email address no other test signs in with (company.com: admitted by the seed policy)."""
    return f"{prefix}-{next(_serial)}-{uuid.uuid4().hex[:8]}@company.com"


class UpstreamKit(OAuthKit):
    """OAuthKit for one route of the upstream stack and one user."""

    def __init__(self, stack: UpstreamStack, route: str, *, user: str | None = None,
                 upstream_login: str | None = None) -> None:
        self.stack = stack
        self.spec = stack.spec(route)
        super().__init__(stack.envoy, stack.idp, stack.server(route))
        self.user = user or new_user()
        local = self.user.split("@")[0]
        self.upstream_login = upstream_login or (f"{local}@upstream.example" if self.spec.provider == "op"
                                                 else f"octo-{local}")
        self.upstream_decision = "approve"
        self.upstream_pages: list[tuple[str, str]] = []
        # (A stack without the oidc-provider upstream, harness.ha's, has op None.)
        self.provider_pages = [GitHubPages(self, stack.gh.port)] + (
            [OpPages(self, stack.op.port)] if stack.op is not None else [])
        self.tes: list[str] = []
        self.test_ids: list[str] = []
        self._ids = itertools.count(100)

    @property
    def resource(self) -> str:
        return f"{self.issuer}{self.spec.path}"

    @property
    def mcp_server_url(self) -> str:
        return f"{self.envoy.base_url}{self.spec.path}"

    def test_id(self) -> str:
        tid = uuid.uuid4().hex
        self.test_ids.append(tid)
        return tid

    # --- authorization --------------------------------------------------

    def sign_in(self, client: Client | None = None, **kwargs: Any) -> tuple[Client, dict[str, Any]]:
        """Register (unless given a client), authorize as self.user through the
        IdP, the consent page and (when the route needs it) the upstream
        provider, and exchange the code: (client, token response)."""
        client = client or self.register_client()
        auth = self.authorize(client, login=self.user, **kwargs)
        return client, self.tokens(auth)

    def tokens(self, auth) -> dict[str, Any]:
        body = super().tokens(auth)
        self.tes.append(body["access_token"])
        return body

    # --- MCP over raw HTTP ----------------------------------------------

    def post(self, te: str | None, body: Any, *, test_id: str | None = None, session: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None,
             client: httpx.Client | None = None) -> httpx.Response:
        """POST a JSON-RPC body (or raw bytes) to the route's MCP endpoint."""
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": PROTOCOL_VERSION, "x-test-id": test_id or self.test_id()}
        if te is not None:
            h["Authorization"] = f"Bearer {te}"
        if session:
            h["Mcp-Session-Id"] = session
        h.update(headers or {})
        content = raw if raw is not None else json.dumps(body).encode()
        return (client or self.http).post(self.mcp_server_url, content=content, headers=h)

    def message(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-RPC request with a fresh id."""
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            msg["params"] = params
        return msg

    def open_session(self, te: str, test_id: str | None = None) -> str:
        """initialize + notifications/initialized: the Mcp-Session-Id."""
        init = self.message("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                           "clientInfo": {"name": "mcp-oauth-filter-e2e", "version": "0"}})
        r = self.post(te, init, test_id=test_id)
        assert r.status_code == 200, describe(r)
        session = r.headers.get("mcp-session-id")
        assert session, describe(r)
        r = self.post(te, {"jsonrpc": "2.0", "method": "notifications/initialized"}, test_id=test_id, session=session)
        assert r.status_code == 202, describe(r)
        return session

    def call(self, te: str, session: str, name: str, arguments: dict[str, Any] | None = None, *,
             test_id: str | None = None, client: httpx.Client | None = None) -> httpx.Response:
        return self.post(te, self.message("tools/call", {"name": name, "arguments": arguments or {}}),
                         test_id=test_id, session=session, client=client)

    def whoami(self, te: str, session: str, test_id: str | None = None,
               client: httpx.Client | None = None) -> dict[str, Any]:
        """Call whoami and return what the upstream API said (the call must succeed)."""
        r = self.call(te, session, "whoami", test_id=test_id, client=client)
        assert r.status_code == 200, describe(r)
        result = rpc_messages(r)[0]
        assert "result" in result, describe(r)
        assert not result["result"].get("isError"), f"whoami failed: {result}"
        return json.loads(result["result"]["content"][0]["text"])

    # --- the upstream side ------------------------------------------------

    @property
    def skew(self) -> int:
        """The route's refresh_skew_seconds."""
        return int(self.spec.upstream.get("refresh_skew_seconds", 60))

    def my_issued(self) -> list[dict[str, Any]]:
        """The upstream tokens issued to this kit's upstream user for this route's app, oldest first."""
        return [t for t in self.stack.issued(self.spec.name) if t["login"] == self.upstream_login]

    def my_token_log(self, since: float = 0.0) -> list[dict[str, Any]]:
        """The token-endpoint requests about this kit's user since `since`:
        code exchanges whose redirect came from this kit's sign-ins are not
        told apart, so only refreshes (by the refresh token's fingerprint) and
        every code exchange since `since` count. Other users' entries are
        left out: the maintenance tick refreshes every token in use."""
        mine = {fingerprint(t["refresh_token"]) for t in self.my_issued() if t.get("refresh_token")}
        log = self.stack.gh.state(self.spec.client_id)["token_log"]
        return [e for e in log if e["at"] >= since and (e.get("refresh_token_sha256") in mine
                                                        or e.get("grant_type") == "authorization_code")]

    def latest_ti(self) -> dict[str, Any]:
        issued = self.my_issued()
        assert issued, f"no upstream token was issued to {self.upstream_login}"
        return issued[-1]

    def sleep_until_stale(self, margin: float = 0.3) -> None:
        """Until the latest TI expires within the skew: the next request
        still carries it, and starts a refresh beside it."""
        ti = self.latest_ti()
        time.sleep(max(0.0, ti["expires_at"] - self.skew - time.time()) + margin)

    def sleep_until_expired(self, margin: float = 0.3) -> None:
        """Until the latest TI has expired at the provider."""
        ti = self.latest_ti()
        time.sleep(max(0.0, ti["expires_at"] - time.time()) + margin)

    def audit(self) -> list[dict[str, Any]]:
        """The filter's audit records about this kit's user, from Envoy's log."""
        return [a for a in audit_lines(self.envoy.log()) if (a.get("user") or {}).get("email") == self.user]

    def pinned_clients(self, te: str, session: str, n: int) -> list[tuple[httpx.Client, str]]:
        """n keep-alive connections to Envoy, each with the worker (thread id)
        that serves it: a ping on each, whose audit record names the thread."""
        out = []
        for _ in range(n):
            c = http_client(self.transcript, timeout=30.0)
            before = len(self.audit())
            r = self.post(te, self.message("ping"), session=session, client=c)
            assert r.status_code == 200, describe(r)
            deadline = time.monotonic() + 3.0
            while len(records := self.audit()) == before:
                assert time.monotonic() < deadline, "no audit record for the ping in Envoy's log"
                time.sleep(0.02)
            out.append((c, records[-1]["_thread"]))
        return out

    def transcript_responses(self, path: str, status: int) -> list[str]:
        """What the client side got from `path` with `status` (status line, headers, body)."""
        return [text for line, text in self.transcript.entries
                if urlsplit(line.split(" ", 1)[1]).path == path and text.startswith(f"{status}\n")]

    # --- the checks every test makes --------------------------------------

    def check_vault(self) -> None:
        """Two tokens, never crossed: no MCP server ever got a TE; what reached
        this kit's route carried only upstream tokens that were current on
        arrival; nothing the client side received holds an upstream token or
        an upstream client secret; Envoy's log holds no token at all."""
        self.assert_no_leaks(*self.tes)
        upstream = self.stack.every_upstream_token()
        for token in upstream:
            found = self.transcript.containing(token)
            assert not found, f"an upstream token was sent to the client side in: {found}"
        for secret in self.stack.secrets:
            found = self.transcript.containing(secret)
            assert not found, f"an upstream client secret was sent to the client side in: {found}"
        for server in self.stack.servers.values():
            for te in self.tes:
                got = server.requests_with_token(te)
                assert not got, f"the MCP server {server.proc.name} received a TE: {got}"
        self.assert_current_ti()
        logs = self.envoy_logs()
        for token in [*self.tes, *upstream]:
            assert token not in logs, f"Envoy's log holds a token ({token[:8]}...)"

    def envoy_logs(self) -> str:
        """Everything the Envoys of the stack logged: log and access log."""
        logs = self.envoy.log()
        try:
            logs += self.envoy.access_log.read_text(errors="replace")
        except OSError:
            pass
        return logs

    def seen(self) -> list[dict[str, Any]]:
        """What this kit's requests brought to the route's MCP server."""
        ids = set(self.test_ids)
        return [r for r in self.mcp_server.requests_seen() if r.get("x-test-id") in ids]

    def assert_current_ti(self) -> None:
        seen = self.seen()
        if self.spec.provider is None:
            for r in seen:
                assert r["authorization"] is None, f"a route without upstream_oauth2 forwarded a credential: {r}"
            return
        issued = {fingerprint(t["access_token"]): t for t in self.stack.issued(self.spec.name)}
        for r in seen:
            fp = r["authorization_sha256"]
            assert r["authorization_scheme"] == "Bearer" and fp, f"forwarded without the upstream token: {r}"
            token = issued.get(fp)
            assert token is not None, f"the MCP server got a credential that is no upstream token: {r}"
            assert token["at"] <= r["time"] + 0.05, f"the token arrived before it was issued?! {r} {token}"
            if token["expires_at"] is not None:
                assert r["time"] < token["expires_at"], (
                    f"a stale upstream token was sent: it expired at {token['expires_at']:.3f}, "
                    f"the request arrived at {r['time']:.3f}: {r}")


def rpc_messages(r: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an MCP answer: a JSON body, or the data of an event stream."""
    if media_type(r.headers.get("content-type")) == "text/event-stream":
        out = []
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                out.append(json.loads(line[5:].strip()))
        return out
    body = r.json()
    return body if isinstance(body, list) else [body]


@dataclass
class Burst:
    """Concurrent whoami calls and what was measured of them."""

    started: float  # Unix time the calls were released
    answers: list[dict[str, Any]]
    test_ids: list[str]
    latencies: list[float]  # seconds, as the client saw them
    arrivals: list[float] = field(default_factory=list)  # Unix time Envoy got each
    holds: list[float] = field(default_factory=list)  # seconds Envoy held each before forwarding
    resumes: list[float] = field(default_factory=list)  # Unix time each was forwarded

    def summary(self) -> str:
        lat = sorted(self.latencies)
        holds = sorted(self.holds)
        arrived = max(self.arrivals) - min(self.arrivals)
        spread = max(self.resumes) - min(self.resumes)
        return (f"all {len(lat)} reached Envoy within {arrived * 1000:.1f} ms; held by the filter "
                f"{holds[0] * 1000:.1f}-{holds[-1] * 1000:.1f} ms (median {statistics.median(holds) * 1000:.1f}); "
                f"all forwarded within {spread * 1000:.1f} ms of the first; client latency "
                f"{lat[0] * 1000:.0f}-{lat[-1] * 1000:.0f} ms")


def whoami_burst(kit: UpstreamKit, te: str, session: str, clients: list[httpx.Client]) -> Burst:
    """whoami on every client at once; the filter's hold times from Envoy's access log."""
    test_ids = [kit.test_id() for _ in clients]
    latencies: list[float] = [0.0] * len(clients)

    def call(i: int) -> dict[str, Any]:
        t0 = time.monotonic()
        try:
            return kit.whoami(te, session, test_id=test_ids[i], client=clients[i])
        finally:
            latencies[i] = time.monotonic() - t0

    started = time.time()
    answers = concurrently(len(clients), call)
    burst = Burst(started=started, answers=answers, test_ids=test_ids, latencies=latencies)
    wanted = set(test_ids)
    deadline = time.monotonic() + 3.0
    while True:
        records = [r for r in kit.envoy.access_records() if r.get("test_id") in wanted]
        if len(records) == len(test_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for r in records:
        held = float(r["held_us"]) / 1e6
        burst.arrivals.append(float(r["start"]))
        burst.holds.append(held)
        burst.resumes.append(float(r["start"]) + held)
    return burst


def spread_over_workers(pinned: list[tuple[httpx.Client, str]], n: int) -> list[httpx.Client]:
    """n of the pinned connections, taking from each worker in turn."""
    by_worker: dict[str, list[httpx.Client]] = {}
    for c, w in pinned:
        by_worker.setdefault(w, []).append(c)
    assert len(by_worker) >= 2, f"every connection landed on the same Envoy worker: {[w for _, w in pinned]}"
    out: list[httpx.Client] = []
    for group in itertools.zip_longest(*by_worker.values()):
        out.extend(c for c in group if c is not None)
    return out[:n]


def concurrently(n: int, work: Callable[[int], Any]) -> list[Any]:
    """work(0..n-1) on n threads released together; results in order (exceptions re-raised)."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


__all__ = ["ROUTE", "ROUTES", "SEED_POLICY", "UpstreamKit", "UpstreamStack", "concurrently", "new_user",
           "rpc_messages", "start_upstream_stack"]
