#!/usr/bin/env python3
"""Run the HA demo stack: the demo of envoy-demo/stack.py with two Envoys with
mcp-oauth-filter instead of one, sharing their state in etcd, behind a third
Envoy that balances requests over them.

    stack_ha.py run     [options]  foreground; Ctrl-C stops everything      (make demo-ha)
    stack_ha.py up      [options]  background; pids and logs in .demo/ha/    (make demo-ha-up)
    stack_ha.py down    [--forget] stop what `up` or `run` started           (make demo-ha-down)
    stack_ha.py restart            restart the two filter Envoys only        (make demo-ha-restart)
    stack_ha.py status             what runs, the balancer's view, etcd's keys
    stack_ha.py reset-upstream     forget the upstream tokens the filter keeps (make demo-ha-check)
    stack_ha.py config  [options]  only write the configuration

  balancer    a plain Envoy (envoy-demo/balancer.yaml, one worker) on the
              MCP URL's port (DEMO_PORT, 10000): round robin over the two
              replicas, Host passed through, `x-replica` on every answer;
              admin ADMIN_PORT (9901)
  envoy-a/-b  Envoy (two workers each) with the filter, from
              envoy-demo/envoy.yaml as the demo has it (same keys and
              secrets for both), plus `"store": {"kind": "etcd", ...}` and a
              cluster `etcd`; on HA_REPLICA_PORTS (10001,10002), admin
              HA_REPLICA_ADMIN_PORTS (9902,9903). Every public URL (the
              route's origin, the IdP's and the upstream's redirect URIs) is
              the balancer's.
  etcd        Debian's etcd-server (make etcd) on ETCD_PORT (2379; peer
              ETCD_PEER_PORT, 2380), data in .demo/ha/etcd.data
  idp, upstream, mcp_server
              as in the demo (stack.py), on IDP_PORT, UPSTREAM_PORT, MCP_PORT

`restart` is rolling: it takes envoy-a out of the balancer's rotation (POST
/healthcheck/fail on its admin; the balancer health-checks /ready every
second), waits for its requests to finish, restarts it (with the module in
build/ as it is now) and waits until the balancer sends it requests again;
then envoy-b. Clients keep their tokens and sessions: the replicas keep
nothing of their own that etcd does not have. Run it against `up` or
against `run` (the foreground stack adopts the new replicas; their logs go
to .demo/ha/envoy-a.log and envoy-b.log).

The filter's keys and client secrets are generated on the first start and
kept in .demo/ha/secrets.json (owner only), as is etcd's data: `down` and
`up` again keep the filter's clients, grants and tokens. (The demo IdP and
upstream provider keep nothing across a restart, so a client signed in
before has to authorize the upstream again.) `down --forget` deletes both.

`down` uses the standard library only, so it works without the venv.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import stack as demo  # envoy-demo/stack.py, next to this file
from stack import REPO, StackError, alive, http_get, log_tail, port_in_use, stop_pid, write_private

DEMO_DIR = Path(__file__).resolve().parent
STATE = demo.STATE / "ha"
BALANCER_YAML = DEMO_DIR / "balancer.yaml"
REPLICAS = ("envoy-a", "envoy-b")
SERVICES = ("etcd", "idp", "upstream", "mcp_server", *REPLICAS, "balancer")  # start order; stopped in reverse
DEFAULTS = {"replicas": "10001,10002", "replica_admin": "9902,9903", "etcd": 2379, "etcd_peer": 2380,
            "base_id": 9110}
STORE_PREFIX = "mcp-oauth-filter/"
ETCD_TIMEOUT_MS = 1000
ETCD_CACHE_SECONDS = 5
# How long a replica out of rotation may take to finish its requests before it
# is stopped anyway (an MCP client's GET /mcp event stream never ends by itself;
# the client opens another, at the other replica).
RESTART_DRAIN_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 10.0
RECORD = "stack.json"  # the ports of the running stack, for restart and status
RESTARTING = "restarting"  # holds the pid of a running `restart`: the foreground stack waits for it


# --- configuration -----------------------------------------------------------


def etcd_store(args) -> dict:
    """The plugin's store: etcd's v3 JSON gateway through the replicas' cluster `etcd`."""
    return {"kind": "etcd", "prefix": STORE_PREFIX,
            "etcd": {"cluster": "etcd", "authority": f"127.0.0.1:{args.etcd_port}",
                     "timeout_ms": ETCD_TIMEOUT_MS, "cache_seconds": ETCD_CACHE_SECONDS}}


def etcd_cluster(port: int) -> dict:
    """Plain HTTP/1.1 to etcd's client port (Envoy's default upstream protocol)."""
    return {
        "name": "etcd",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "etcd",
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def load_secrets(state: Path) -> dict[str, str]:
    """The keys and client secrets of this stack: generated once, then kept
    (tokens in etcd are only worth keeping with the keys that made them)."""
    path = state / "secrets.json"
    try:
        kept = json.loads(path.read_text())
        if set(kept) == set(demo.generate_secrets()):
            return kept
    except (OSError, ValueError):
        pass
    generated = demo.generate_secrets()
    write_private(path, json.dumps(generated, indent=2) + "\n")
    return generated


def replica_configs(args, generated: dict[str, str]) -> dict[str, dict]:
    """envoy-demo/envoy.yaml as stack.py writes it for the balancer's origin,
    with the etcd store and cluster; one copy per replica with its ports."""
    base = demo.envoy_config(args.listen_port, args.mcp_port, args.admin_port, args.idp_port, args.upstream_port,
                             args.upstream_refresh_skew, generated)
    for http_filter in demo.http_filters(base):
        plugin = http_filter["typed_config"].get("config", {})
        if "configuration" in plugin:
            value = json.loads(plugin["configuration"]["value"])
            value["store"] = etcd_store(args)
            plugin["configuration"]["value"] = json.dumps(value, indent=2)
    base["static_resources"]["clusters"].append(etcd_cluster(args.etcd_port))
    configs = {}
    for name, port, admin in zip(REPLICAS, args.replica_ports, args.replica_admin_ports):
        config = copy.deepcopy(base)
        config["admin"]["address"]["socket_address"]["port_value"] = admin
        for listener in config["static_resources"]["listeners"]:
            listener["address"]["socket_address"]["port_value"] = port
        configs[name] = config
    return configs


def balancer_config(args) -> dict:
    """envoy-demo/balancer.yaml with the ports given."""
    import yaml  # from the venv, as in stack.py

    config = yaml.safe_load(BALANCER_YAML.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = args.admin_port
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = args.listen_port
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == "replicas"]
    [group] = cluster["load_assignment"]["endpoints"]
    if len(group["lb_endpoints"]) != len(REPLICAS):
        raise StackError(f"{BALANCER_YAML.name} must list {len(REPLICAS)} replicas")
    for entry, name, port, admin in zip(group["lb_endpoints"], REPLICAS, args.replica_ports,
                                        args.replica_admin_ports):
        entry["endpoint"]["hostname"] = name
        entry["endpoint"]["address"]["socket_address"]["port_value"] = port
        entry["endpoint"]["health_check_config"] = {"port_value": admin}
    return config


def write_config(args) -> dict[str, dict]:
    """Writes <state>/envoy-a.yaml, envoy-b.yaml (with the keys), balancer.yaml
    and the record of the ports; returns the replicas' bootstraps."""
    state = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    configs = replica_configs(args, load_secrets(state))
    for name, config in configs.items():
        write_private(state / f"{name}.yaml", json.dumps(config, indent=2))  # JSON is YAML
    write_private(state / "balancer.yaml", json.dumps(balancer_config(args), indent=2))
    write_private(state / RECORD, json.dumps(record_of(args), indent=2) + "\n")
    return configs


def record_of(args) -> dict:
    return {"listen_port": args.listen_port, "admin_port": args.admin_port, "mcp_port": args.mcp_port,
            "idp_port": args.idp_port, "upstream_port": args.upstream_port, "etcd_port": args.etcd_port,
            "etcd_peer_port": args.etcd_peer_port, "replica_ports": args.replica_ports,
            "replica_admin_ports": args.replica_admin_ports, "base_id": args.base_id,
            "upstream_token_ttl": args.upstream_token_ttl}


def adopt_record(args) -> None:
    """The ports of the stack that runs (as `up` wrote them), over the options."""
    try:
        record = json.loads((args.state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return
    for key, value in record.items():
        setattr(args, key, value)


# --- processes -----------------------------------------------------------------


def etcd_argv(args) -> list[str]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise StackError("etcd is not installed: run `make etcd` (apt-get install etcd-server)")
    client = f"http://127.0.0.1:{args.etcd_port}"
    peer = f"http://127.0.0.1:{args.etcd_peer_port}"
    return [etcd, "--name", "demo-ha", "--data-dir", str(args.state_dir / "etcd.data"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"demo-ha={peer}", "--log-level", "warn", "--logger", "zap"]


def replica(args, name: str) -> tuple[int, int, int]:
    """A replica's listener port, admin port and --base-id."""
    i = REPLICAS.index(name)
    return args.replica_ports[i], args.replica_admin_ports[i], args.base_id + 1 + i


def replica_argv(args, name: str) -> list[str]:
    return demo.envoy_argv(args.state_dir / f"{name}.yaml", replica(args, name)[2])


def balancer_hosts(args) -> dict[str, dict[str, str]]:
    """The balancer's view of each replica (its /clusters): health_flags, rq_total, ..."""
    status, text = http_get(f"http://127.0.0.1:{args.admin_port}/clusters")
    if status != 200:
        raise OSError(f"balancer admin: {status}")
    by_port = {f"127.0.0.1:{port}": name for name, port in zip(REPLICAS, args.replica_ports)}
    hosts: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "replicas" and parts[1] in by_port:
            hosts.setdefault(by_port[parts[1]], {})[parts[2]] = parts[3]
    return hosts


def in_rotation(args, name: str) -> bool:
    return balancer_hosts(args).get(name, {}).get("health_flags") == "healthy"


def etcd_healthy(args) -> bool:
    status, body = http_get(f"http://127.0.0.1:{args.etcd_port}/health")
    return status == 200 and json.loads(body).get("health") == "true"


def etcd_prefix_call(args, path: str, prefix: str, **fields) -> dict:
    """POST {key, range_end: every key under prefix, **fields} to etcd's v3 JSON gateway."""
    end = bytearray(prefix.encode())
    end[-1] += 1
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(bytes(end)).decode(), **fields}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{args.etcd_port}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=2.0) as response:
        return json.loads(response.read())


def etcd_count(args, prefix: str = STORE_PREFIX) -> int:
    """How many keys etcd has under prefix."""
    return int(etcd_prefix_call(args, "/v3/kv/range", prefix, count_only=True).get("count", "0"))


def active_requests(admin_port: int) -> int:
    """Requests a replica's listener is serving now."""
    _, text = http_get(f"http://127.0.0.1:{admin_port}/stats?filter=^http\\.mcp\\.downstream_rq_active$")
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)


def ready_checks(args) -> dict:
    checks = demo.ready_checks(args)
    del checks["envoy"]
    checks["etcd"] = lambda: etcd_healthy(args)
    for name in REPLICAS:
        port, admin, _ = replica(args, name)
        checks[name] = lambda port=port, admin=admin: demo.envoy_ready(admin, port)
    # Ready once its health checks put both replicas in rotation.
    checks["balancer"] = lambda: demo.envoy_ready(args.admin_port, args.listen_port) and all(
        in_rotation(args, name) for name in REPLICAS)
    return checks


def wait_until(what: str, check, timeout: float, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what}: exited with status {proc.returncode}" + (f"\n{log_tail(log)}" if log else ""))
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not after {timeout:.0f}s" + (f"\n{log_tail(log)}" if log else ""))
        time.sleep(0.1)


def launch(args, background: bool) -> dict[str, subprocess.Popen]:
    demo.check_prerequisites()
    ports = [("balancer", args.listen_port), ("balancer admin", args.admin_port), ("MCP server", args.mcp_port),
             ("IdP", args.idp_port), ("upstream provider", args.upstream_port), ("etcd", args.etcd_port),
             ("etcd peer", args.etcd_peer_port)]
    for name, port, admin in zip(REPLICAS, args.replica_ports, args.replica_admin_ports):
        ports += [(name, port), (f"{name} admin", admin)]
    for what, port in ports:
        if port_in_use(port):
            raise StackError(
                f"port {port} ({what}) is already in use: is a demo running (make demo-down, make demo-ha-down)? "
                "Ports can be changed with DEMO_PORT, ADMIN_PORT, HA_REPLICA_PORTS, HA_REPLICA_ADMIN_PORTS, "
                "MCP_PORT, IDP_PORT, UPSTREAM_PORT, ETCD_PORT and ETCD_PEER_PORT."
            )
    if len(set(p for _, p in ports)) != len(ports):
        raise StackError(f"the ports must all differ: {ports}")
    state = args.state_dir
    configs = write_config(args)
    some = configs[REPLICAS[0]]
    demo.check_upstream_token_ttl(args, some)
    argv, envs = demo.support_commands(args, some)
    argv["etcd"] = etcd_argv(args)
    for name in REPLICAS:
        argv[name] = replica_argv(args, name)
    # One worker: one round-robin order, so requests alternate one by one.
    argv["balancer"] = demo.envoy_argv(state / "balancer.yaml", args.base_id, concurrency=1)

    logs = {name: state / f"{name}.log" for name in SERVICES} if background else None
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in SERVICES:
            if logs:
                logs[name].write_bytes(b"")
            procs[name] = demo.start(argv[name], logs[name] if logs else None, envs.get(name))
            # Also in the foreground: `restart` and `down` find the processes by these.
            (state / f"{name}.pid").write_text(f"{procs[name].pid}\n")
        demo.wait_ready(procs, args, logs, ready_checks(args), SERVICES)
    except BaseException:
        demo.stop_all(procs, state, SERVICES)
        raise
    return procs


def read_pids(state: Path) -> dict[str, int]:
    pids = {}
    for name in SERVICES:
        try:
            pids[name] = int((state / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def ours(pid: int, name: str, state: Path) -> bool:
    """Whether pid still runs the service we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    marker = {"etcd": str(state / "etcd.data"), "idp": "idp.mjs", "upstream": "fake_github.py",
              "mcp_server": "mcp_server.py", "balancer": str(state / "balancer.yaml"),
              **{r: str(state / f"{r}.yaml") for r in REPLICAS}}[name]
    return marker in cmdline


def running(state: Path) -> dict[str, int]:
    return {name: pid for name, pid in read_pids(state).items() if alive(pid) and ours(pid, name, state)}


def restart_in_progress(state: Path) -> bool:
    try:
        pid = int((state / RESTARTING).read_text().strip())
    except (OSError, ValueError):
        return False
    return alive(pid)


def stop_everything(state: Path) -> list[str]:
    stopped = []
    for name in reversed(SERVICES):
        pid = read_pids(state).get(name)
        if pid is not None and alive(pid) and ours(pid, name, state):
            stop_pid(pid, name)
            stopped.append(f"{name} (pid {pid})")
        (state / f"{name}.pid").unlink(missing_ok=True)
    return stopped


def restart_replica(args, name: str, pid: int | None) -> str:
    """Out of rotation, drained, stopped, started again, back in rotation."""
    state = args.state_dir
    port, admin, _ = replica(args, name)
    log = state / f"{name}.log"
    t0 = time.monotonic()
    notes = []
    if pid is not None:
        try:
            # /ready answers 503 from now on, so the balancer's health check fails.
            request = urllib.request.Request(f"http://127.0.0.1:{admin}/healthcheck/fail", data=b"", method="POST")
            urllib.request.urlopen(request, timeout=2.0).close()
            wait_until(f"the balancer to take {name} out of rotation", lambda: not in_rotation(args, name),
                       HEALTH_TIMEOUT_S)
            out = time.monotonic()
            try:
                wait_until(f"{name}'s requests to finish", lambda: active_requests(admin) == 0,
                           RESTART_DRAIN_TIMEOUT_S)
            except StackError:
                notes.append(f"{active_requests(admin)} requests still open were cut")
            notes.append(f"out of rotation after {out - t0:.1f} s")
        except (OSError, StackError) as e:
            notes.append(f"not drained ({e})")
        stop_pid(pid, name)
    with open(log, "a") as f:
        f.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} restarted by stack_ha.py restart ---\n")
    proc = demo.start(replica_argv(args, name), log)
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")
    wait_until(f"{name} (pid {proc.pid}) ready", lambda: demo.envoy_ready(admin, port), demo.READY_TIMEOUT_S,
               proc=proc, log=log)
    wait_until(f"the balancer to send {name} requests again", lambda: in_rotation(args, name), HEALTH_TIMEOUT_S,
               proc=proc, log=log)
    was = f"pid {pid} -> {proc.pid}" if pid is not None else f"was not running; now pid {proc.pid}"
    return f"{name} restarted ({was}) and back in rotation in {time.monotonic() - t0:.1f} s; {'; '.join(notes)}"


def banner(args) -> str:
    state = args.state_dir
    rel = state.relative_to(REPO) if state.is_relative_to(REPO) else state
    lines = [
        f"MCP URL: http://127.0.0.1:{args.listen_port}/mcp   (the balancer; `x-replica` on each answer names the "
        "filter Envoy that served it)",
        f"  Sign in at the demo IdP (http://127.0.0.1:{args.idp_port}) as {demo.DEMO_USER} (no password; "
        f"bob@other.example is refused),",
        f"  then authorize the app at the GitHub-like upstream (http://127.0.0.1:{args.upstream_port}; "
        f"tokens live {args.upstream_token_ttl} s, state at /_test/state)",
        f"  balancer    Envoy, no filter: 127.0.0.1:{args.listen_port} round robin over "
        f"{', '.join(f'{n} ({p})' for n, p in zip(REPLICAS, args.replica_ports))}; "
        f"admin http://127.0.0.1:{args.admin_port}/",
    ]
    for name in REPLICAS:
        port, admin, _ = replica(args, name)
        lines.append(f"  {name:<10}  Envoy + mcp-oauth-filter (store: etcd): 127.0.0.1:{port}; "
                     f"admin http://127.0.0.1:{admin}/")
    lines += [
        f"  etcd        the filter's store: http://127.0.0.1:{args.etcd_port}, keys under {STORE_PREFIX}, "
        f"data in {rel}/etcd.data",
        f"  idp         the demo OpenID provider: http://127.0.0.1:{args.idp_port}",
        f"  upstream    the GitHub-like provider: http://127.0.0.1:{args.upstream_port}",
        f"  mcp_server  the demo MCP server (direct): http://127.0.0.1:{args.mcp_port}/mcp",
        "  make demo-ha-restart restarts envoy-a and envoy-b one at a time; clients keep their tokens",
    ]
    return "\n".join(lines)


# --- commands ------------------------------------------------------------------


def refuse_if_running(args) -> None:
    already = running(args.state_dir)
    if already:
        raise StackError(f"the HA demo stack is already running ({already}); `make demo-ha-down` stops it")
    stop_everything(args.state_dir)  # clear stale pid files


def cmd_run(args) -> int:
    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    state = args.state_dir
    procs: dict[str, subprocess.Popen] = {}
    stopping = False
    try:
        refuse_if_running(args)
        procs = launch(args, background=False)
        print(f"\n{banner(args)}\n  Ctrl-C stops the stack.\n", flush=True)
        while True:
            for proc in procs.values():
                proc.poll()  # reap what exited (a replica `restart` replaced, say)
            if not restart_in_progress(state):
                pids = read_pids(state)
                for name in SERVICES:
                    if name not in pids or not alive(pids[name]):
                        code = procs[name].returncode if procs[name].pid == pids.get(name) else None
                        status = f" with status {code}" if code is not None else ""
                        print(f"{name} exited{status}; stopping the stack", file=sys.stderr)
                        return 1
            time.sleep(0.3)
    except KeyboardInterrupt:
        stopping = True
        print("\nstopping the HA demo stack...", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if procs:
            stop_everything(state)
            demo.stop_all(procs, None, SERVICES)  # anything left of the first run, reaped
        if stopping:
            print("stopped", file=sys.stderr)


def cmd_up(args) -> int:
    refuse_if_running(args)
    launch(args, background=True)
    print(banner(args))
    logs = ", ".join(f"{name}.log" for name in SERVICES)
    print(f"  Logs: {args.state_dir}/{{{logs}}}   Stop: make demo-ha-down")
    return 0


def cmd_down(args) -> int:
    stopped = stop_everything(args.state_dir)
    (args.state_dir / RESTARTING).unlink(missing_ok=True)
    print(f"stopped {', '.join(stopped)}" if stopped else "the HA demo stack is not running")
    if args.forget:
        shutil.rmtree(args.state_dir / "etcd.data", ignore_errors=True)
        (args.state_dir / "secrets.json").unlink(missing_ok=True)
        print(f"deleted etcd's data and the filter's keys in {args.state_dir}")
    return 0


def cmd_restart(args) -> int:
    adopt_record(args)
    state = args.state_dir
    now = running(state)
    missing = [name for name in SERVICES if name not in REPLICAS and name not in now]
    if missing:
        raise StackError(f"the HA demo stack is not running ({', '.join(missing)} not running): "
                         "make demo-ha-up (or make demo-ha) starts it")
    if restart_in_progress(state):
        raise StackError("another restart is under way")
    (state / RESTARTING).write_text(f"{os.getpid()}\n")
    t0 = time.monotonic()
    try:
        for name in REPLICAS:
            print(restart_replica(args, name, now.get(name)), flush=True)
    finally:
        (state / RESTARTING).unlink(missing_ok=True)
    print(f"restarted {' and '.join(REPLICAS)} in {time.monotonic() - t0:.1f} s; etcd, the IdP, the upstream "
          f"provider, the MCP server and the balancer kept running. MCP URL: http://127.0.0.1:{args.listen_port}/mcp")
    return 0


def cmd_status(args) -> int:
    adopt_record(args)
    now = running(args.state_dir)
    for name in SERVICES:
        print(f"  {name:<10}  {'pid ' + str(now[name]) if name in now else 'not running'}")
    if "balancer" in now:
        try:
            for name, host in balancer_hosts(args).items():
                print(f"  balancer -> {name}: {host.get('health_flags')}, {host.get('rq_total')} requests "
                      f"({host.get('rq_error')} errors)")
        except OSError as e:
            print(f"  balancer admin: {e}")
    if "etcd" in now:
        try:
            print(f"  etcd: {etcd_count(args)} keys under {STORE_PREFIX}")
        except OSError as e:
            print(f"  etcd: {e}")
    return 0 if len(now) == len(SERVICES) else 1


def cmd_reset_upstream(args) -> int:
    """Deletes the upstream tokens the filter keeps (<prefix>ti/), so the next
    sign-in goes through the upstream provider's consent page again, as on a
    fresh stack (harness.demo's check expects that page; the store keeps them
    across checks, restarts, and down/up). Waits until no replica's read
    cache can still hold one."""
    adopt_record(args)
    if "etcd" not in running(args.state_dir):
        raise StackError("etcd is not running: make demo-ha-up")
    deleted = int(etcd_prefix_call(args, "/v3/kv/deleterange", f"{STORE_PREFIX}ti/").get("deleted", "0"))
    print(f"deleted {deleted} upstream token record(s) under {STORE_PREFIX}ti/; "
          f"waiting {ETCD_CACHE_SECONDS + 1} s for the replicas' read caches", flush=True)
    time.sleep(ETCD_CACHE_SECONDS + 1)
    return 0


def cmd_config(args) -> int:
    write_config(args)
    print(f"wrote {', '.join(str(args.state_dir / f'{n}.yaml') for n in (*REPLICAS, 'balancer'))}")
    return 0


def _ports(text: str) -> list[int]:
    ports = [int(p) for p in text.replace(",", " ").split()]
    if len(ports) != len(REPLICAS):
        raise argparse.ArgumentTypeError(f"{len(REPLICAS)} ports, comma-separated")
    return ports


def main() -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "up", "down", "restart", "status", "reset-upstream", "config"))
    parser.add_argument("--listen-port", type=int, default=demo._env_int("DEMO_PORT", demo.DEFAULTS["listen"]),
                        help="the balancer's port: the MCP URL's")
    parser.add_argument("--admin-port", type=int, default=demo._env_int("ADMIN_PORT", demo.DEFAULTS["admin"]),
                        help="the balancer's admin port")
    parser.add_argument("--replica-ports", type=_ports, default=_ports(env("HA_REPLICA_PORTS") or DEFAULTS["replicas"]))
    parser.add_argument("--replica-admin-ports", type=_ports,
                        default=_ports(env("HA_REPLICA_ADMIN_PORTS") or DEFAULTS["replica_admin"]))
    parser.add_argument("--mcp-port", type=int, default=demo._env_int("MCP_PORT", demo.DEFAULTS["mcp"]))
    parser.add_argument("--idp-port", type=int, default=demo._env_int("IDP_PORT", demo.DEFAULTS["idp"]))
    parser.add_argument("--upstream-port", type=int, default=demo._env_int("UPSTREAM_PORT", demo.DEFAULTS["upstream"]))
    parser.add_argument("--etcd-port", type=int, default=demo._env_int("ETCD_PORT", DEFAULTS["etcd"]))
    parser.add_argument("--etcd-peer-port", type=int, default=demo._env_int("ETCD_PEER_PORT", DEFAULTS["etcd_peer"]))
    parser.add_argument("--upstream-token-ttl", type=int,
                        default=demo._env_int("UPSTREAM_TOKEN_TTL", demo.UPSTREAM_TOKEN_TTL_S),
                        help="lifetime of the upstream provider's access tokens, in seconds")
    parser.add_argument("--upstream-refresh-skew", type=int, default=None,
                        help="override the route's upstream refresh_skew_seconds (must be below the token TTL)")
    parser.add_argument("--state-dir", type=Path, default=STATE,
                        help="configuration (with the keys), etcd's data, pid files and logs (default .demo/ha/)")
    parser.add_argument("--base-id", type=int, default=demo._env_int("HA_BASE_ID", DEFAULTS["base_id"]),
                        help="the balancer's Envoy --base-id; the replicas take the next two")
    parser.add_argument("--forget", action="store_true",
                        help="down: also delete etcd's data and the filter's keys (the next up starts afresh)")
    args = parser.parse_args()
    args.state_dir = args.state_dir.resolve()
    commands = {"run": cmd_run, "up": cmd_up, "down": cmd_down, "restart": cmd_restart, "status": cmd_status,
                "reset-upstream": cmd_reset_upstream, "config": cmd_config}
    try:
        return commands[args.command](args)
    except StackError as e:
        print(f"demo-ha: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
