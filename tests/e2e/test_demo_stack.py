"""The demo (make demo / demo-up / demo-down) as a user runs it: envoy-demo/stack.py
brings up the IdP, the GitHub-like upstream, the MCP server and Envoy with
envoy-demo/envoy.yaml (here on free ports, in a state directory of its own,
with 3-second upstream tokens refreshed 1 s early so their expiries show in
seconds), and harness.demo.check_demo walks through it with the MCP SDK:
alice signs in and authorizes octocat at the upstream, whoami says octocat
across several upstream token refreshes, admin_reset is denied and hidden,
bob is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.demo import DemoPorts, check_demo
from harness.envoy import REPO_ROOT, _base_ids, panic_lines
from harness.procs import AdoptedProcess, free_port

STACK = REPO_ROOT / "envoy-demo" / "stack.py"
SERVICES = ("idp", "upstream", "mcp_server", "envoy")


def test_demo_stack_end_to_end(tmp_path: Path) -> None:
    ports = DemoPorts(listen=free_port(), mcp=free_port(), admin=free_port(), idp=free_port(), upstream=free_port())
    state = tmp_path / "demo"
    argv = [sys.executable, STACK, "up", "--listen-port", ports.listen, "--mcp-port", ports.mcp,
            "--admin-port", ports.admin, "--idp-port", ports.idp, "--upstream-port", ports.upstream,
            "--base-id", next(_base_ids), "--state-dir", state, "--upstream-token-ttl", "3",
            "--upstream-refresh-skew", "1"]
    adopted: list[AdoptedProcess] = []
    try:
        up = subprocess.run([str(a) for a in argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        for name in SERVICES:
            pid_file = state / f"{name}.pid"
            if pid_file.exists():
                label = "envoy-demo" if name == "envoy" else f"demo-{name}"
                adopted.append(AdoptedProcess(label, int(pid_file.read_text()), state / f"{name}.log"))
        assert up.returncode == 0, f"stack.py up failed:\n{up.stdout}\n{up.stderr}"
        assert f"MCP URL: http://127.0.0.1:{ports.listen}/mcp" in up.stdout, up.stdout
        report = check_demo(ports, seconds=6.0, interval=0.5, log=lambda *_: None)
        assert report.refreshes >= 2, f"{report.refreshes} upstream refreshes in 6 s of 3-second tokens"
        assert report.distinct_upstream_tokens >= 3, report
    finally:
        down = subprocess.run([sys.executable, str(STACK), "down", "--state-dir", str(state)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        for proc in adopted:
            proc.stop()
    assert down.returncode == 0 and "stopped envoy" in down.stdout, down.stdout + down.stderr
    assert not any(p.running for p in adopted)
    panics = panic_lines((state / "envoy.log").read_text(errors="replace"))
    assert not panics, "the demo's Envoy logged wasm panics or traps:\n" + "\n".join(panics)
