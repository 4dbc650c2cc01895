"""etcd (Debian's etcd-server 3.4, `make etcd`) as a test process, and its v3
HTTP/JSON gateway for the checks: the store the filter's replicas share
with `"store": {"kind": "etcd", ...}` (tests/e2e/test_ha_etcd.py).

One member on free loopback ports (client and peer), its data in a folder
of the test's own: stop() and start() again keep the data, the ports and
the users, so a test can take etcd away mid-run and give it back.

The JSON gateway, as etcd 3.4 answers it (checked against the real thing,
tests/e2e/test_ha_etcd.py::test_etcd_helpers):
  - every request is a POST with a JSON body, even reads (/v3/kv/range);
  - keys and values are base64 (standard alphabet, padded);
  - int64 fields (revisions, lease IDs, TTLs, counts) are JSON strings;
  - fields at their zero value are left out (no "kvs" when nothing matched,
    no "value" with keys_only);
  - a range over a prefix has range_end = the prefix with its last byte + 1;
  - with auth on, requests carry the token of /v3/auth/authenticate
    ({"name", "password"} -> {"token"}) as `Authorization: <token>` (no
    scheme); without one they get 400 "user name is empty", with a bad one
    401 "invalid auth token", outside the user's roles 403 "permission
    denied"; a wrong password gets 400 "authentication failed, invalid
    user ID or password". (A simple token issued before a restart of this
    one-member etcd 3.4 still works after it; the helpers authenticate
    again anyway.)
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .procs import ManagedProcess, free_port, wait_until

READY_TIMEOUT_S = 20.0


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise FileNotFoundError("etcd is not installed: run `make etcd` (apt-get install etcd-server)")
    return path


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_range(prefix: str | bytes) -> dict[str, str]:
    """key and range_end of a range over every key starting with prefix
    (the empty prefix: every key, from "\\0" to "\\0" as etcd spells it)."""
    raw = prefix.encode() if isinstance(prefix, str) else prefix
    return {"key": b64(raw or b"\0"), "range_end": b64(prefix_end(raw))}


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with prefix
    (the last byte below 0xff incremented, what follows it dropped)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # every key


class EtcdError(RuntimeError):
    def __init__(self, path: str, response: httpx.Response) -> None:
        self.path = path
        self.status_code = response.status_code
        try:
            self.body = response.json()
        except ValueError:
            self.body = {"error": response.text}
        super().__init__(f"etcd {path} -> {response.status_code}: {self.body.get('error') or self.body}")


@dataclass
class Etcd:
    workdir: Path
    port: int
    peer_port: int
    name: str = "etcd"
    proc: ManagedProcess | None = None
    # Root's credentials once enable_auth ran: the helpers authenticate with them.
    root_password: str | None = None
    _token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"{self.name}.data"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    # --- the process ----------------------------------------------------

    def argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [etcd_binary(), "--name", "default", "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"default={peer}",
                # Quiet unless something is wrong; no metrics or pprof beyond the defaults.
                "--log-level", "warn", "--logger", "zap"]

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start (again, on the same ports and data) and wait until it answers."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(self.name, self.argv(), self.log_path, cwd=self.workdir)
        self._token = None
        try:
            wait_until(f"{self.name} on port {self.port}", self.ready, timeout, proc=self.proc)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self._token = None

    def ready(self) -> bool:
        """/health says true (with auth on, /health still answers), or a range answers."""
        r = httpx.get(f"{self.url}/health", timeout=1.0, trust_env=False)
        if r.status_code == 200 and r.json().get("health") == "true":
            return True
        r = httpx.post(f"{self.url}/v3/kv/range", json={"key": b64("\0")}, timeout=1.0, trust_env=False)
        return r.status_code == 200 and "header" in r.json()

    def read_log(self) -> str:
        return self.proc.read_log() if self.proc else ""

    # --- the JSON gateway ---------------------------------------------------

    def call(self, path: str, body: dict[str, Any], *, token: str | None = None, auth: bool = True,
             timeout: float = 5.0) -> dict[str, Any]:
        """POST body to the gateway; the JSON answer, EtcdError unless 200.
        With auth on (enable_auth ran), sends root's token unless given one
        or auth=False."""
        headers = {}
        if token is None and auth and self.root_password is not None:
            token = self.root_token()
        if token is not None:
            headers["Authorization"] = token
        r = httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=timeout, trust_env=False)
        if r.status_code == 401 and token is not None and token == self._token:
            # Root's token expired (or etcd restarted): once more with a new one.
            self._token = None
            headers["Authorization"] = self.root_token()
            r = httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=timeout, trust_env=False)
        if r.status_code != 200:
            raise EtcdError(path, r)
        return r.json()

    def authenticate(self, user: str, password: str) -> str:
        """A token for user (EtcdError if the password is wrong)."""
        return self.call("/v3/auth/authenticate", {"name": user, "password": password}, auth=False)["token"]

    def root_token(self) -> str:
        assert self.root_password is not None, "auth is not on"
        if self._token is None:
            self._token = self.authenticate("root", self.root_password)
        return self._token

    def put(self, key: str | bytes, value: str | bytes, lease: int | str | None = None) -> int:
        """Put; returns the revision it made."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease is not None:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def get_kv(self, key: str | bytes) -> dict[str, Any] | None:
        """The key's record: value (bytes), mod_revision, create_revision, version, lease (ints); None if absent."""
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return {"key": unb64(kv["key"]), "value": unb64(kv.get("value", "")),
                **{f: int(kv.get(f, "0")) for f in ("mod_revision", "create_revision", "version", "lease")}}

    def get(self, key: str | bytes) -> bytes | None:
        kv = self.get_kv(key)
        return None if kv is None else kv["value"]

    def keys(self, prefix: str | bytes) -> list[str]:
        """Every key under prefix, sorted (as etcd sorts them: bytewise)."""
        body = {**prefix_range(prefix), "keys_only": True}
        return [unb64(kv["key"]).decode(errors="replace") for kv in self.call("/v3/kv/range", body).get("kvs", [])]

    def count(self, prefix: str | bytes) -> int:
        body = {**prefix_range(prefix), "count_only": True}
        return int(self.call("/v3/kv/range", body).get("count", "0"))

    def delete(self, key: str | bytes) -> int:
        """Delete one key; how many were deleted (0 or 1)."""
        return int(self.call("/v3/kv/deleterange", {"key": b64(key)}).get("deleted", "0"))

    def delete_prefix(self, prefix: str | bytes) -> int:
        return int(self.call("/v3/kv/deleterange", prefix_range(prefix)).get("deleted", "0"))

    def revision(self) -> int:
        return int(self.call("/v3/kv/range", {"key": b64("\0")})["header"]["revision"])

    def grant_lease(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def lease_ids(self) -> list[int]:
        return [int(lease["ID"]) for lease in self.call("/v3/lease/leases", {}).get("leases", [])]

    def lease_count(self) -> int:
        return len(self.lease_ids())

    def lease_ttl(self, lease: int) -> int:
        """Seconds left (-1: the lease is gone)."""
        return int(self.call("/v3/lease/timetolive", {"ID": str(lease)}).get("TTL", "-1"))

    # --- auth -------------------------------------------------------------

    def enable_auth(self, user: str, password: str, prefix: str, root_password: str = "e2e-root-password",
                    role: str | None = None) -> None:
        """Users root (role root) and `user`, whose role may read and write
        [prefix, prefix + 1) and nothing else; then auth on. The helpers go
        on as root."""
        role = role or f"{user}-role"
        self.call("/v3/auth/user/add", {"name": "root", "password": root_password})
        self.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.call("/v3/auth/role/add", {"name": role})
        self.call("/v3/auth/role/grant", {"name": role, "perm": {
            "permType": "READWRITE", "key": b64(prefix), "range_end": b64(prefix_end(prefix))}})
        self.call("/v3/auth/user/add", {"name": user, "password": password})
        self.call("/v3/auth/user/grant", {"user": user, "role": role})
        self.call("/v3/auth/enable", {})
        self.root_password = root_password
        self._token = None

    def disable_auth(self) -> None:
        """Auth off (users and roles stay, for enable again)."""
        if self.root_password is None:
            return
        self.call("/v3/auth/disable", {})
        self.root_password = None
        self._token = None

    def auth_enabled(self) -> bool:
        """Whether an unauthenticated read is refused for want of a user."""
        r = httpx.post(f"{self.url}/v3/kv/range", json={"key": b64("\0")}, timeout=2.0, trust_env=False)
        return r.status_code != 200


def start_etcd(workdir: Path, name: str = "etcd", timeout: float = READY_TIMEOUT_S) -> Etcd:
    """One etcd member on free loopback ports, its data and log in workdir;
    the caller stops it."""
    etcd = Etcd(workdir=Path(workdir), port=free_port(), peer_port=free_port(), name=name)
    etcd.start(timeout=timeout)
    return etcd
