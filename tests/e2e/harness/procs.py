"""Processes the e2e tests start: free ports, start, readiness, stop, logs.

Every process is started in its own process group and registered here; the
fixtures stop it in their finalizers, an atexit hook stops whatever is left,
and on Linux each child also gets SIGTERM if the test run itself dies
(PR_SET_PDEATHSIG). Servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1
_reserved_ports: set[int] = set()
_ports_lock = threading.Lock()
_running: list[ManagedProcess] = []


def free_port() -> int:
    """A loopback TCP port that nothing listens on, never handed out twice in this run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(what: str, check: Callable[[], bool], timeout: float, proc: ManagedProcess | None = None,
               interval: float = 0.05) -> None:
    """Poll check() until it is true; fail fast, with the log tail, if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.running:
            raise RuntimeError(
                f"{proc.name} exited with status {proc.returncode} while waiting for {what}\n"
                f"--- {proc.log_path} (tail) ---\n{proc.tail()}"
            )
        try:
            if check():
                return
        except (OSError, httpx.TransportError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            tail = f"\n--- {proc.log_path} (tail) ---\n{proc.tail()}" if proc else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


def _child_setup() -> None:
    # Runs in the child between fork and exec: die with the test run.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    """A child process with its own process group, its output in log_path."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Other files worth showing when a test fails (e.g. Envoy's access log).
        self.extra_logs: list[Path] = []
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_child_setup,
            )
        self.pid = self.popen.pid
        _running.append(self)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group, SIGKILL after `grace` seconds. Idempotent."""
        try:
            for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass  # the leader and its group are gone
                try:
                    self.popen.wait(timeout=wait_s)
                    # The leader is gone; make sure nothing else in its group stays behind.
                    try:
                        os.killpg(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    return
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if self in _running:
                _running.remove(self)

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40, text: str | None = None) -> str:
        text = self.read_log() if text is None else text
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} log={self.log_path}>"


class AdoptedProcess(ManagedProcess):
    """A process something else started in a process group of its own (e.g.
    `stack.py up`), registered so that it is stopped, its log shown on
    failure and (for Envoys) checked for panics like the harness's own."""

    def __init__(self, name: str, pid: int, log_path: Path) -> None:  # noqa: D107 - no spawn
        self.name = name
        self.argv = []
        self.log_path = Path(log_path)
        self.extra_logs = []
        self.pid = pid
        self.popen = None
        _running.append(self)

    @property
    def running(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    @property
    def returncode(self) -> int | None:
        return None if self.running else 0

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.05)
        return 0

    def stop(self, grace: float = 5.0) -> None:
        try:
            for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    return
                try:
                    self.wait(wait_s)
                    return
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if self in _running:
                _running.remove(self)


def running_processes() -> list[ManagedProcess]:
    return list(_running)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_running):
        proc.stop(grace=2.0)
