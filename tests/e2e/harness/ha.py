"""Two Envoys with the filter sharing one etcd (issue 9): the HA stack of
tests/e2e/test_ha_etcd.py.

  etcd        one member (harness.etcd), the filter's store through its v3 JSON
              gateway; prefix PREFIX
  gh          envoy-demo/fake_github.py, app `app-ha`: 3-second access tokens,
              rotating single-use refresh tokens, refreshes answered after 500 ms
  mcp         the demo MCP server (JSON answers; whoami asks gh's /user)
  replicas a, b
              two Envoys (two workers each) with the same plugin configuration:
              the same keys, one route (ROUTE_SPEC, upstream_oauth2 to gh) whose
              origin is the balancer's, `"store": {"kind": "etcd", ...}` through
              their cluster `etcd` (plain HTTP/1.1 to etcd's client port)
  balancer    a third Envoy without the filter (one worker) spreading requests
              round robin over a and b, Host passed through unchanged (the
              replicas check :authority against the route's origin, the
              balancer's); every answer carries `x-replica: 127.0.0.1:<port>`,
              the replica that served it (HaStack.served), and the balancer's
              access log names it for every request (HaStack.routed)

The issuer, the redirect URIs the IdP and gh know, the resource: all at the
balancer's origin, http://127.0.0.1:<balancer port>. A request can also go
straight to one replica with the balancer's Host (HaKit's *_at methods).

restart_replicas() stops both replicas and starts them again on the same
ports (optionally with another store configuration); etcd, gh, the MCP server
and the balancer keep running. Each replica's log and access log are one file
over all its runs; stop() checks them all for panics (PANIC_PATTERNS).
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .envoy import (ACCESS_LOG_FORMAT, LISTEN_PORTS, Envoy, envoy_binary, next_base_id, panic_lines,
                    plugin_config, start_envoy)
from .etcd import Etcd, start_etcd
from .http import PROTOCOL_VERSION
from .idp import Idp
from .mcp_server import McpServer, start_mcp_server
from .oauth import Client, client_auth
from .procs import ManagedProcess, free_port
from .upstream import (UPSTREAM_CALLBACK, FakeGitHub, RouteSpec, UpstreamKit, rpc_messages,
                       start_fake_github)

PREFIX = "mcp-oauth-filter/"
CACHE_SECONDS = 2
ETCD_TIMEOUT_MS = 1000
REPLICAS = ("a", "b")
ROUTE_SPEC = RouteSpec("ha", "/mcp", "gh", "gh", app={"expires_in": 3, "refresh_delay_ms": 500},
                       upstream={"refresh_skew_seconds": 1})
# Every test registers clients: no registration quota in the way; a replayed
# refresh token is a replay at once (no grace), as on the session Envoy.
AUTHORIZATION_SERVER = {
    "refresh_reuse_grace_seconds": 0,
    "registration": {"dynamic": {"max_per_window": 100_000, "max_per_source_per_window": 100_000}},
}


def etcd_store(etcd: Etcd, *, username: str | None = None, password: str | None = None,
               cache_seconds: int = CACHE_SECONDS, prefix: str = PREFIX) -> dict[str, Any]:
    """The plugin's `store` for this etcd, through the replicas' cluster `etcd`."""
    conf: dict[str, Any] = {"cluster": "etcd", "authority": etcd.authority, "timeout_ms": ETCD_TIMEOUT_MS,
                            "cache_seconds": cache_seconds}
    if username is not None:
        conf["username"] = username
    if password is not None:
        conf["password"] = password
    return {"kind": "etcd", "prefix": prefix, "etcd": conf}


def ha_plugin_config(origin_port: int, idp_port: int, gh: FakeGitHub, gh_secret: str,
                     store: dict[str, Any]) -> dict[str, Any]:
    """One route at http://127.0.0.1:<origin_port> (the balancer), upstream_oauth2 to gh."""
    origin = f"http://127.0.0.1:{origin_port}"
    config = plugin_config(origin_port, idp_port)
    spec = ROUTE_SPEC
    upstream = {
        "client_id": spec.client_id, "client_secret": gh_secret, "scopes": ["repo", "read:user"],
        "endpoint": {"auth_url": f"{gh.base_url}/login/oauth/authorize",
                     "token_url": f"{gh.base_url}/login/oauth/access_token", "cluster": "upstream_oauth"},
        **copy.deepcopy(spec.upstream),
    }
    config["routes"] = [{"from": origin, "name": spec.name, "allow_any_authenticated_user": True,
                         "mcp": {"server": {"path": spec.path, "upstream_oauth2": upstream}}}]
    config["authorization_server"] = copy.deepcopy(AUTHORIZATION_SERVER)
    config["store"] = copy.deepcopy(store)
    return config


# --- the balancer -------------------------------------------------------------


def balancer_bootstrap(*, listen_port: int, admin_port: int, replica_ports: list[int],
                       access_log: Path) -> dict[str, Any]:
    """A plain Envoy: listener -> router -> cluster `replicas` (round robin),
    :authority untouched, `x-replica` on every answer."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "balancer",
        "use_remote_address": True,
        "access_log": [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(access_log),
                "log_format": {"json_format": ACCESS_LOG_FORMAT},
            },
        }],
        "route_config": {
            "name": "balancer",
            "response_headers_to_add": [{"header": {"key": "x-replica", "value": "%UPSTREAM_REMOTE_ADDRESS%"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                # No host_rewrite: the replicas see the client's Host.
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "replicas", "timeout": "0s"}}],
            }],
        },
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "balancer",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [{
                "name": "replicas",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": {
                    "cluster_name": "replicas",
                    "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                        for port in replica_ports]}],
                },
            }],
        },
    }


def start_balancer(workdir: Path, listen_port: int, replica_ports: list[int],
                   name: str = "envoy-ha-balancer") -> Envoy:
    """One worker, so round robin alternates request by request."""
    admin_port = free_port()
    access_log = workdir / f"{name}.access.log"
    config = balancer_bootstrap(listen_port=listen_port, admin_port=admin_port, replica_ports=replica_ports,
                                access_log=access_log)
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    base_id = next_base_id()
    LISTEN_PORTS.add(listen_port)
    proc = ManagedProcess(
        name,
        [envoy_binary(), "-c", config_path, "--concurrency", "1", "--base-id", str(base_id),
         "--log-level", "warn", "--drain-time-s", "1", "--file-flush-interval-msec", "100"],
        workdir / f"{name}.log", cwd=workdir)
    proc.extra_logs.append(access_log)
    envoy = Envoy(proc=proc, workdir=workdir, listen_port=listen_port, admin_port=admin_port, base_id=base_id,
                  plugin={}, access_log=access_log)
    try:
        envoy.wait_ready()
    except BaseException:
        envoy.stop()
        raise
    return envoy


# --- the replicas -------------------------------------------------------------


@dataclass
class Replica:
    """One filter Envoy, over its restarts (same port, same log files)."""

    name: str
    workdir: Path
    port: int
    envoy: Envoy | None = None
    runs: int = 0

    @property
    def proc_name(self) -> str:
        return f"envoy-ha-{self.name}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.proc_name}.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / f"{self.proc_name}.access.log"

    @property
    def running(self) -> bool:
        return self.envoy is not None and self.envoy.proc.running

    def log(self) -> str:
        """The log of every run so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def access_records(self) -> list[dict[str, Any]]:
        """The access log of every run so far (ACCESS_LOG_FORMAT), oldest first; flushed every 100 ms."""
        try:
            text = self.access_log.read_text(errors="replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def panics(self) -> list[str]:
        return panic_lines(self.log())

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()


class BalancedView:
    """What an OAuthKit takes for "the Envoy": the balancer's origin, the
    replicas' configuration, every Envoy's log."""

    def __init__(self, stack: HaStack) -> None:
        self.stack = stack

    @property
    def listen_port(self) -> int:
        return self.stack.balancer.listen_port

    @property
    def base_url(self) -> str:
        return self.stack.balancer.base_url

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}{ROUTE_SPEC.path}"

    @property
    def plugin(self) -> dict[str, Any]:
        return self.stack.plugin

    @property
    def proc(self) -> ManagedProcess:
        return self.stack.balancer.proc

    def log(self) -> str:
        return "".join(r.log() for r in self.stack.replicas.values()) + self.stack.balancer.log()

    def access_records(self) -> list[dict[str, Any]]:
        """The replicas' own access records, each with "_replica", in order of arrival."""
        out = []
        for r in self.stack.replicas.values():
            out += [{**rec, "_replica": r.name} for rec in r.access_records()]
        return sorted(out, key=lambda rec: float(rec.get("start") or 0))


@dataclass
class HaStack:
    workdir: Path
    etcd: Etcd
    idp: Idp
    gh: FakeGitHub
    mcp: McpServer
    replicas: dict[str, Replica]
    balancer: Envoy
    plugin: dict[str, Any]
    secrets: list[str]
    op: None = None  # no oidc-provider upstream here (UpstreamKit, leakwatch)

    # --- what UpstreamKit asks of a stack ---------------------------------

    @property
    def envoy(self) -> BalancedView:
        return BalancedView(self)

    @property
    def origin(self) -> str:
        return self.balancer.base_url

    @property
    def host(self) -> str:
        """The :authority of the route (the balancer's), for requests straight to a replica."""
        return urlsplit(self.origin).netloc

    @property
    def servers(self) -> dict[str, McpServer]:
        return {"gh": self.mcp}

    def spec(self, route: str = ROUTE_SPEC.name) -> RouteSpec:
        assert route == ROUTE_SPEC.name, route
        return ROUTE_SPEC

    def server(self, route: str = ROUTE_SPEC.name) -> McpServer:
        return self.mcp

    def issued(self, route: str = ROUTE_SPEC.name) -> list[dict[str, Any]]:
        return self.gh.state(ROUTE_SPEC.client_id)["issued"]

    def every_upstream_token(self) -> list[str]:
        return [v for t in self.gh.all_issued() for v in (t["access_token"], t["refresh_token"]) if v]

    def gh_state(self) -> dict[str, Any]:
        return self.gh.state(ROUTE_SPEC.client_id)

    # --- replicas ---------------------------------------------------------

    def replica_named(self, address: str | None) -> str | None:
        """The replica at "127.0.0.1:<port>" (an `x-replica` value or an access log's upstream)."""
        if not address:
            return None
        for r in self.replicas.values():
            if address.endswith(f":{r.port}"):
                return r.name
        return None

    def served(self, response: httpx.Response) -> str | None:
        """The replica that served a response through the balancer."""
        return self.replica_named(response.headers.get("x-replica"))

    def routed(self) -> list[dict[str, Any]]:
        """The balancer's access records, oldest first, each with "_replica":
        the replica it sent the request to (None: none answered). The
        balancer logs the path as the client sent it; a replica's own access
        log shows the path the filter set on a request it answered itself
        (POSTs it held for their body: /.well-known/mcp-oauth-filter/pending)."""
        return [{**rec, "_replica": self.replica_named(rec.get("upstream"))}
                for rec in self.balancer.access_records()]

    def records_since(self, t0: float) -> list[dict[str, Any]]:
        """The balancer's records (routed()) of requests that started at or after Unix time t0."""
        return [rec for rec in self.routed() if float(rec.get("start") or 0) >= t0]

    def records_for(self, test_ids: set[str], timeout: float = 3.0) -> list[dict[str, Any]]:
        """The balancer's records (routed()) of these x-test-id values, waiting up
        to `timeout` for one per id (access logs are flushed every 100 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [rec for rec in self.routed() if rec.get("test_id") in test_ids]
            if len({rec["test_id"] for rec in found}) >= len(test_ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def start_replicas(self) -> None:
        """Start the replicas that are not running, with self.plugin; both are
        spawned before waiting for either. (From this thread: a child dies
        with the thread that spawned it, PR_SET_PDEATHSIG in harness.procs.)"""
        starting = []
        try:
            for r in self.replicas.values():
                if r.running:
                    continue
                r.envoy = start_envoy(r.workdir, name=r.proc_name, mcp_port=self.mcp.port, plugin=self.plugin,
                                      listen_port=r.port, idp_port=self.idp.port, upstream_port=self.gh.port,
                                      extra_clusters={"etcd": self.etcd.port}, wait=False)
                r.runs += 1
                starting.append(r)
            for r in starting:
                r.envoy.wait_ready()
        except BaseException:
            for r in starting:
                r.stop()
            raise

    def stop_replicas(self) -> None:
        threads = [threading.Thread(target=r.stop) for r in self.replicas.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def restart_replicas(self, store: dict[str, Any] | None = None) -> None:
        """Stop both replicas, then start them on the same ports; with `store`,
        that store configuration from now on (everything else unchanged)."""
        self.stop_replicas()
        if store is not None:
            self.plugin = {**self.plugin, "store": copy.deepcopy(store)}
        self.start_replicas()

    def panics(self) -> dict[str, list[str]]:
        """Panic or trap lines in any replica's log (every run)."""
        return {r.name: p for r in self.replicas.values() if (p := r.panics())}

    def assert_no_panics(self) -> None:
        panics = self.panics()
        assert not panics, "replica logs show wasm panics or traps:\n" + "\n".join(
            f"{name}: {line}" for name, lines in panics.items() for line in lines)

    def stop(self) -> None:
        """Stop everything; then no replica may have panicked in any of its runs."""
        for step in (self.balancer.stop, self.stop_replicas, self.mcp.stop, self.gh.stop, self.etcd.stop):
            try:
                step()
            except Exception:  # noqa: BLE001 - stop the rest anyway
                pass
        self.assert_no_panics()


def start_ha_stack(workdir: Path, idp: Idp, balancer_port: int, *,
                   etcd_auth: tuple[str, str] | None = None) -> HaStack:
    """etcd, gh, the MCP server, two replicas and the balancer on
    balancer_port (whose callback URLs the IdP must accept). With etcd_auth
    (user, password), etcd's auth is on before the replicas start and they
    authenticate as that user. The caller stops the stack (HaStack.stop)."""
    workdir.mkdir(parents=True, exist_ok=True)
    origin = f"http://127.0.0.1:{balancer_port}"
    started: list[Any] = []
    try:
        etcd = start_etcd(workdir)
        started.append(etcd)
        if etcd_auth is not None:
            etcd.enable_auth(etcd_auth[0], etcd_auth[1], PREFIX)
        gh = start_fake_github(workdir, name="fake_github_ha")
        started.append(gh)
        gh_secret = f"ha-{secrets.token_urlsafe(18)}"
        gh.configure(ROUTE_SPEC.client_id, client_secret=gh_secret, redirect_uris=[origin + UPSTREAM_CALLBACK],
                     **ROUTE_SPEC.app)
        mcp = start_mcp_server(workdir, name="mcp_ha", upstream_user_url=gh.user_url, json_response=True)
        started.append(mcp)
        store = etcd_store(etcd, username=etcd_auth[0] if etcd_auth else None,
                           password=etcd_auth[1] if etcd_auth else None)
        plugin = ha_plugin_config(balancer_port, idp.port, gh, gh_secret, store)
        replicas = {name: Replica(name=name, workdir=workdir, port=free_port()) for name in REPLICAS}
        stack = HaStack(workdir=workdir, etcd=etcd, idp=idp, gh=gh, mcp=mcp, replicas=replicas,
                        balancer=None, plugin=plugin, secrets=[gh_secret])  # type: ignore[arg-type]
        started.append(stack.stop_replicas)
        stack.start_replicas()
        stack.balancer = start_balancer(workdir, balancer_port, [r.port for r in replicas.values()])
    except BaseException:
        for thing in reversed(started):
            try:
                thing() if callable(thing) else thing.stop()
            except Exception:  # noqa: BLE001
                pass
        raise
    return stack


# --- one user of the stack ------------------------------------------------------


class HaKit(UpstreamKit):
    """UpstreamKit for the HA stack's route: through the balancer by default;
    the *_at methods go straight to one replica (with the balancer's Host)."""

    def __init__(self, stack: HaStack, **kwargs: Any) -> None:
        super().__init__(stack, ROUTE_SPEC.name, **kwargs)  # type: ignore[arg-type]
        self.ha = stack

    def envoy_logs(self) -> str:
        text = ""
        for path in [*(p for r in self.ha.replicas.values() for p in (r.log_path, r.access_log)),
                     self.ha.balancer.proc.log_path, self.ha.balancer.access_log]:
            try:
                text += path.read_text(errors="replace")
            except OSError:
                pass
        return text

    def _headers(self, te: str | None, test_id: str | None, session: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": PROTOCOL_VERSION, "x-test-id": test_id or self.test_id(),
             "Host": self.ha.host}
        if te is not None:
            h["Authorization"] = f"Bearer {te}"
        if session:
            h["Mcp-Session-Id"] = session
        return h

    def post_at(self, replica: str, te: str | None, body: Any, *, test_id: str | None = None,
                session: str | None = None) -> httpx.Response:
        """POST a JSON-RPC body to the route's MCP endpoint at one replica."""
        url = f"{self.ha.replicas[replica].base_url}{ROUTE_SPEC.path}"
        return self.http.post(url, content=json.dumps(body).encode(), headers=self._headers(te, test_id, session))

    def call_at(self, replica: str, te: str, session: str, name: str, arguments: dict[str, Any] | None = None,
                *, test_id: str | None = None) -> httpx.Response:
        return self.post_at(replica, te, self.message("tools/call", {"name": name, "arguments": arguments or {}}),
                            test_id=test_id, session=session)

    def whoami_at(self, replica: str, te: str, session: str) -> dict[str, Any]:
        r = self.call_at(replica, te, session, "whoami")
        assert r.status_code == 200, f"whoami at replica {replica}: {r.status_code} {r.text[:500]}"
        result = rpc_messages(r)[0]
        assert "result" in result and not result["result"].get("isError"), f"whoami at {replica}: {result}"
        return json.loads(result["result"]["content"][0]["text"])

    def token_request_at(self, replica: str, client: Client, data: dict[str, str]) -> httpx.Response:
        data, headers = client_auth(client, data)
        return self.http.post(f"{self.ha.replicas[replica].base_url}/.oauth/token", data=data,
                              headers={**headers, "Host": self.ha.host})

    def refresh_at(self, replica: str, client: Client, refresh_token: str) -> httpx.Response:
        return self.token_request_at(replica, client, {"grant_type": "refresh_token", "refresh_token": refresh_token})

    def revoke_at(self, replica: str, client: Client, token: str) -> httpx.Response:
        data, headers = client_auth(client, {"token": token})
        return self.http.post(f"{self.ha.replicas[replica].base_url}/.oauth/revoke", data=data,
                              headers={**headers, "Host": self.ha.host})

    def open_session_at_server(self) -> str:
        """An MCP session opened at the MCP server itself, not through the
        filter: no request carried this user's upstream token yet, so no
        replica counts it as in use (the maintenance tick refreshes tokens in
        use) and the next request through the filter is the first."""
        init = self.message("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                           "clientInfo": {"name": "mcp-oauth-filter-e2e", "version": "0"}})
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": PROTOCOL_VERSION}
        with httpx.Client(trust_env=False, timeout=10.0) as direct:
            r = direct.post(self.mcp_server.mcp_url, json=init, headers=h)
            assert r.status_code == 200, r.text
            session = r.headers["mcp-session-id"]
            r = direct.post(self.mcp_server.mcp_url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                            headers={**h, "Mcp-Session-Id": session})
            assert r.status_code == 202, r.text
        return session


__all__ = ["CACHE_SECONDS", "PREFIX", "ROUTE_SPEC", "HaKit", "HaStack", "Replica", "etcd_store",
           "start_ha_stack"]
