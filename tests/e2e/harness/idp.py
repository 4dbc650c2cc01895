"""The OpenID provider fixture (envoy-demo/idp.mjs, npm oidc-provider 9) as a
test process: the identity provider users sign in at, and (with the options
of harness.upstream) an upstream OAuth2 provider."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .envoy import REPO_ROOT
from .procs import ManagedProcess, free_port, wait_until

IDP_SCRIPT = REPO_ROOT / "envoy-demo" / "idp.mjs"
NODE_MODULES = REPO_ROOT / "envoy-demo" / "node_modules"
NODE = os.environ.get("NODE", "node")

CLIENT_ID = "mcp-oauth-filter"
CLIENT_SECRET = "e2e-idp-secret"
ALICE = {"sub": "alice", "email": "alice@company.com", "groups": ["engineering"]}
BOB = {"sub": "bob", "email": "bob@other.example", "groups": []}


@dataclass
class Idp:
    proc: ManagedProcess
    port: int
    id_token_alg: str
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def debug_log(self) -> dict[str, Any]:
        """{"requests": [{method, path, at, status, grant_type (token requests)}],
            "issued": [{grant_type, account, at, expires_in, access_token, id_token, refresh_token}]}"""
        r = httpx.get(f"{self.issuer}/_debug/log", timeout=5.0, trust_env=False)
        r.raise_for_status()
        return r.json()

    def issued_tokens(self) -> list[str]:
        """Every token the IdP handed out (to the filter) so far."""
        out: list[str] = []
        for answer in self.debug_log()["issued"]:
            out.extend(answer[k] for k in ("access_token", "id_token", "refresh_token") if answer.get(k))
        return out

    def requests(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.debug_log()["requests"]]

    def token_requests(self, grant_type: str | None = None) -> list[dict[str, Any]]:
        """The token endpoint requests so far ({at, status, grant_type, ...}), of one grant type if given."""
        return [r for r in self.debug_log()["requests"] if r["method"] == "POST" and r["path"] == "/token"
                and (grant_type is None or r.get("grant_type") == grant_type)]

    def revoke_account(self, account: str) -> int:
        """Revoke every grant of the account, tokens included; returns how many grants."""
        r = httpx.post(f"{self.issuer}/_debug/revoke", params={"account": account}, timeout=5.0, trust_env=False)
        r.raise_for_status()
        return r.json()["revoked_grants"]

    def stop(self) -> None:
        self.proc.stop()


def start_idp(workdir: Path, *, redirect_uris: Iterable[str], id_token_alg: str = "RS256",
              name: str = "idp", timeout: float = 30.0, client_id: str = CLIENT_ID,
              client_secret: str = CLIENT_SECRET, options: dict[str, str] | None = None) -> Idp:
    """Start idp.mjs on a free port with the debug log and open sign-up on (any
    email address signs in as a user of its own); `options` are more of
    idp.mjs's environment options. The caller stops it."""
    if not (NODE_MODULES / "oidc-provider").is_dir():
        raise FileNotFoundError(f"{NODE_MODULES}/oidc-provider is missing: run `make idp-deps` first")
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "CLIENT_ID": client_id,
        "CLIENT_SECRET": client_secret,
        "REDIRECT_URIS": ",".join(redirect_uris),
        "ID_TOKEN_ALG": id_token_alg,
        "IDP_DEBUG": "1",
        "OPEN_SIGNUP": "1",
        "NODE_NO_WARNINGS": "1",
        **(options or {}),
    }
    proc = ManagedProcess(name, [NODE, IDP_SCRIPT], workdir / f"{name}.log", cwd=REPO_ROOT, env=env)
    idp = Idp(proc=proc, port=port, id_token_alg=id_token_alg, client_id=client_id, client_secret=client_secret)
    try:
        wait_until(
            f"{name} discovery on port {port}",
            lambda: httpx.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=1.0,
                              trust_env=False).status_code == 200,
            timeout,
            proc=proc,
        )
    except BaseException:
        proc.stop()
        raise
    return idp
