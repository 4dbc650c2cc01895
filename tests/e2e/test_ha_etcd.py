"""Two Envoys, one etcd (issue 9): the filter's state shared through etcd's
v3 JSON gateway (`"store": {"kind": "etcd", ...}`), behind a round-robin
balancer (harness.ha: replicas a and b, two workers each, the same keys and
configuration; the route's origin is the balancer's; cache_seconds 2).

What must hold, each test able to fail:
  - a person's whole OAuth flow (the MCP SDK client, the IdP, the consent
    page, the upstream provider's consent) works while its steps land on
    both replicas: state written at one is read at the other;
  - a refresh token rotated at A and replayed at B is a replay: B refuses
    it and revokes the family, which A then enforces;
  - a revocation at A is enforced at B within cache_seconds + 1;
  - after both replicas restart, every grant, access token, refresh token
    and upstream token is still there: nobody signs in or consents again;
  - 50 concurrent requests over both replicas with an expired upstream
    token make exactly one upstream refresh, and all succeed;
  - without etcd, requests get 503 (Retry-After) and /token
    temporarily_unavailable, nothing panics; with etcd back, every session
    goes on without a new sign-in;
  - with etcd's auth on, the filter works as a user whose role covers only
    its prefix; with a wrong password it says so (store.etcd.password) and
    answers 503.

Every test signs in a user of its own (the IdP's open sign-up; the filter
keeps upstream tokens per user), and every kit's check_vault runs after the
test: the MCP server never got a TE, only upstream tokens current on
arrival; the client side never got an upstream token; no Envoy logged a
token. Every replica's log (all its runs) is checked for panics when the
module's stack stops, and after every test (conftest).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from harness.browser import http_client
from harness.etcd import EtcdError, b64, prefix_end, start_etcd
from harness.ha import CACHE_SECONDS, PREFIX, REPLICAS, HaKit, HaStack, etcd_store, start_ha_stack
from harness.idp import Idp
from harness.mcp_server import fingerprint
from harness.oauth import describe, oauth_error
from harness.procs import free_port
from harness.sdk import sdk_client, text_of
from harness.upstream import STACKS, concurrently, rpc_messages
from harness.www_authenticate import bearer

SDK_TIMEOUT_S = 45.0
BURST = 50


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ha(e2e_dir: Path, idp: Idp, listen_ports: dict[str, int]) -> Iterator[HaStack]:
    stack = start_ha_stack(e2e_dir / "ha", idp, listen_ports["ha"])
    STACKS.append(stack)  # harness.leakwatch asks its provider for the tokens it issued
    try:
        yield stack
    finally:
        stack.stop()  # fails the module if a replica panicked in any of its runs


@pytest.fixture
def kits(ha: HaStack, request: pytest.FixtureRequest) -> Iterator[Callable[..., HaKit]]:
    """kits() makes a kit with a user of its own; after the test (unless it
    failed already), every kit's check_vault."""
    made: list[HaKit] = []
    failed_before = request.session.testsfailed

    def make(**kwargs: Any) -> HaKit:
        kit = HaKit(ha, **kwargs)
        made.append(kit)
        return kit

    try:
        yield make
        if request.session.testsfailed == failed_before:
            for kit in made:
                kit.check_vault()
    finally:
        for kit in made:
            kit.close()


# --- helpers ----------------------------------------------------------------------


def _is_step(path: str, prefix: str) -> bool:
    return path.split("?", 1)[0].startswith(prefix)


# The steps of a sign-in that read or write what another step reads (the
# client, the pending authorization, the IdP round trip, the consent, the
# upstream round trip, the code): served by both replicas means state
# crossed between them.
STATEFUL_STEPS = {
    "authorize": "/.oauth/authorize",
    "idp callback": "/.oauth/callback",
    "consent": "/.oauth/consent",
    "upstream callback": "/.oauth/upstream/callback",
    "registration": "/.oauth/register",
    "token": "/.oauth/token",
}


def _steps(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Which replica served each stateful step and each MCP request, in
    order (from the balancer's access log, HaStack.routed)."""
    out: dict[str, list[str]] = {}
    for rec in records:
        path = rec.get("path") or ""
        for step, prefix in [*STATEFUL_STEPS.items(), ("mcp", "/mcp")]:
            if _is_step(path, prefix) and rec["_replica"] is not None:
                out.setdefault(step, []).append(rec["_replica"])
    return out


def _assert_refused(ha: HaStack, r: httpx.Response) -> None:
    """The filter's 401: Bearer error=invalid_token with the route's metadata."""
    assert r.status_code == 401, describe(r)
    values = r.headers.get_list("www-authenticate")
    assert len(values) == 1, describe(r)
    challenge = bearer(values[0])
    assert challenge.params.get("error") == "invalid_token", describe(r)
    assert challenge.params.get("resource_metadata") == (
        f"{ha.origin}/.well-known/oauth-protected-resource/mcp"), describe(r)


def _invalid_grant(r: httpx.Response) -> None:
    assert r.status_code in (400, 401), describe(r)
    assert oauth_error(r)["error"] == "invalid_grant", describe(r)
    assert "access_token" not in r.json(), describe(r)


def _assert_unavailable_mcp(r: httpx.Response) -> None:
    """An MCP request the filter can't decide without its store: 503 with
    Retry-After, or (as an MCP answer) a JSON-RPC error; never forwarded as
    if all were well."""
    if r.status_code == 503:
        retry = r.headers.get("retry-after")
        assert retry is not None and retry.isdigit() and int(retry) >= 1, describe(r)
        return
    assert r.status_code == 200, describe(r)
    messages = rpc_messages(r)
    assert messages and all("error" in m for m in messages), describe(r)


def _keys_stay_under_the_prefix(ha: HaStack) -> list[str]:
    """Every key in etcd is under the filter's prefix, and there are some."""
    keys = ha.etcd.keys("")
    outside = [k for k in keys if not k.startswith(PREFIX)]
    assert not outside, f"the filter wrote outside its prefix {PREFIX!r}: {outside[:10]}"
    assert keys, "nothing in etcd: the replicas did not keep their state there"
    return keys


def _my_refreshes(kit: HaKit, since: float = 0.0) -> list[dict[str, Any]]:
    return [e for e in kit.my_token_log(since) if e["grant_type"] == "refresh_token"]


def _poll(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> tuple[Any, float]:
    """check() until it returns something true; (that, seconds taken). AssertionError on timeout."""
    t0 = time.monotonic()
    last: Any = None
    while True:
        last = check()
        if last:
            return last, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout:.1f} s (last: {last!r})")
        time.sleep(interval)


# --- the harness itself ------------------------------------------------------------


def test_etcd_helpers(tmp_path: Path) -> None:
    """harness.etcd against the real etcd: put/get/keys/delete, leases,
    restart with the data kept, auth limited to a prefix."""
    etcd = start_etcd(tmp_path)
    try:
        assert etcd.get("p/a") is None and etcd.keys("p/") == []
        r1 = etcd.put("p/a", "1")
        etcd.put("p/b", b"\xff\x00")
        etcd.put("p0", "next to the prefix, not in it")
        etcd.put("q/x", "elsewhere")
        assert etcd.revision() == r1 + 3
        assert etcd.get("p/a") == b"1" and etcd.get("p/b") == b"\xff\x00"
        assert etcd.keys("p/") == ["p/a", "p/b"] and etcd.count("p/") == 2
        assert etcd.get_kv("p/a")["mod_revision"] == r1
        assert prefix_end("p/") == b"p0" and prefix_end(b"a\xff") == b"b"
        before = etcd.lease_count()
        lease = etcd.grant_lease(30)
        assert etcd.lease_count() == before + 1 and lease in etcd.lease_ids()
        etcd.put("p/leased", "v", lease=lease)
        assert etcd.get_kv("p/leased")["lease"] == lease and 0 < etcd.lease_ttl(lease) <= 30
        assert etcd.delete("p/a") == 1 and etcd.delete("p/a") == 0 and etcd.get("p/a") is None

        etcd.stop()
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{etcd.url}/v3/kv/range", json={"key": "AA=="}, timeout=1.0, trust_env=False)
        etcd.start()
        assert etcd.keys("p/") == ["p/b", "p/leased"], "etcd lost its data in the restart"
        assert lease in etcd.lease_ids()

        etcd.enable_auth("filter", "s3cret", "p/")
        assert etcd.auth_enabled()
        token = etcd.authenticate("filter", "s3cret")
        assert etcd.call("/v3/kv/range", {"key": b64("p/b")}, token=token)["kvs"][0]["value"] == b64(b"\xff\x00")
        with pytest.raises(EtcdError) as denied:
            etcd.call("/v3/kv/range", {"key": b64("p0")}, token=token)  # outside [p/, p0)
        assert denied.value.status_code == 403
        with pytest.raises(EtcdError) as anonymous:
            etcd.call("/v3/kv/range", {"key": b64("p/b")}, auth=False)
        assert anonymous.value.status_code == 400 and "user name is empty" in str(anonymous.value)
        with pytest.raises(EtcdError) as wrong:
            etcd.authenticate("filter", "wrong")
        assert "authentication failed" in str(wrong.value)
        # The helpers themselves go on as root.
        assert etcd.keys("") == ["p/b", "p/leased", "p0", "q/x"]
        etcd.stop()
        etcd.start()
        assert etcd.auth_enabled() and etcd.get("p/b") == b"\xff\x00"
        etcd.disable_auth()
        assert not etcd.auth_enabled() and etcd.delete_prefix("p/") == 2 and etcd.keys("") == ["p0", "q/x"]
    finally:
        etcd.stop()


def test_stack_answers_through_both_replicas(ha: HaStack) -> None:
    """The balancer spreads requests over both replicas; each answers for
    the balancer's origin (the issuer is the balancer's URL), also when
    asked directly with the balancer's Host, and each answers an MCP
    request without a token with the challenge naming that origin."""
    served = []
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        for _ in range(4):
            r = c.get(f"{ha.origin}/.well-known/oauth-authorization-server")
            assert r.status_code == 200, describe(r)
            assert r.json()["issuer"] == ha.origin and r.json()["token_endpoint"] == f"{ha.origin}/.oauth/token"
            served.append(ha.served(r))
        for name in REPLICAS:
            r = c.get(f"{ha.replicas[name].base_url}/.well-known/oauth-protected-resource/mcp",
                      headers={"Host": ha.host})
            assert r.status_code == 200 and r.json()["resource"] == f"{ha.origin}/mcp", describe(r)
            r = c.post(f"{ha.replicas[name].base_url}/mcp", json={}, headers={"Host": ha.host})
            assert r.status_code == 401, describe(r)
            challenge = bearer(r.headers["www-authenticate"])
            assert challenge.params.get("resource_metadata") == (
                f"{ha.origin}/.well-known/oauth-protected-resource/mcp"), describe(r)
    assert set(served) == set(REPLICAS), f"the balancer did not spread requests: {served}"


# --- a. the whole flow, spread over both replicas ------------------------------------------


def test_sdk_flow_through_the_balancer(ha: HaStack, kits) -> None:
    kit: HaKit = kits()
    tid = kit.test_id()
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    gh_before = ha.gh_state()
    t0 = time.time()

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with anyio.fail_after(SDK_TIMEOUT_S):
            async with sdk_client(kit, tid, redirect_uri=redirect_uri, login=kit.user) as c:
                out["storage"], out["user"] = c.storage, c.user
                out["tools"] = sorted(t.name for t in (await c.session.list_tools()).tools)
                out["echo"] = text_of(await c.session.call_tool("echo", {"text": "through two replicas"}))
                out["whoami"] = [json.loads(text_of(await c.session.call_tool("whoami", {}))) for _ in range(4)]
        return out

    result = anyio.run(main)
    kit.tes.extend(t.access_token for t in result["storage"].tokens)
    assert result["tools"] == ["admin_reset", "echo", "whoami"], result["tools"]
    assert result["echo"] == "through two replicas"
    assert {w["login"] for w in result["whoami"]} == {kit.upstream_login}, result["whoami"]
    assert len(result["user"].authorize_urls) == 1, "\n".join(result["user"].trails)
    assert [kind for kind, _ in kit.upstream_pages] == ["gh authorize"], kit.upstream_pages
    gh_after = ha.gh_state()
    assert gh_after["code_exchanges"] == gh_before["code_exchanges"] + 1
    for te in kit.tes:
        kit.assert_te(te)

    time.sleep(0.3)  # the access logs are flushed every 100 ms
    steps = _steps(ha.records_since(t0))
    missing = [s for s in [*STATEFUL_STEPS, "mcp"] if s not in steps]
    assert not missing, f"steps not seen in the replicas' access logs: {missing}; seen: {steps}"
    stateful = {r for s in STATEFUL_STEPS for r in steps[s]}
    assert stateful == set(REPLICAS), f"the sign-in's steps were not spread over both replicas: {steps}"
    assert set(steps["mcp"]) == set(REPLICAS), f"the MCP requests were not spread: {steps['mcp']}"
    # The replicas' own access logs agree: both served part of the flow.
    own = Counter(rec["_replica"] for rec in ha.envoy.access_records() if float(rec.get("start") or 0) >= t0)
    assert set(own) == set(REPLICAS), f"requests in the replicas' own access logs: {dict(own)}"
    print(f"\n[ha] replica per step: {steps}")
    _keys_stay_under_the_prefix(ha)


# --- b. rotation at A, replay at B ----------------------------------------------------------


def test_refresh_rotated_at_a_and_replayed_at_b_revokes_the_family(ha: HaStack, kits) -> None:
    kit: HaKit = kits()
    client, tokens = kit.sign_in()
    rotated = kit.assert_token_response(kit.refresh_at("a", client, tokens["refresh_token"]))
    kit.tes.append(rotated["access_token"])
    # B knows the rotated grant: its TE works there.
    init = kit.message("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "e2e", "version": "0"}})
    r = kit.post_at("b", rotated["access_token"], init)
    assert r.status_code == 200, f"the TE refreshed at A does not work at B:\n{describe(r)}"

    _invalid_grant(kit.refresh_at("b", client, tokens["refresh_token"]))
    # The replay revoked the family: the newest refresh token is dead at A too
    # (the token endpoint reads etcd, not a cache)...
    _invalid_grant(kit.refresh_at("a", client, rotated["refresh_token"]))
    _invalid_grant(kit.refresh_at("b", client, rotated["refresh_token"]))
    # ...and so is every access token of the grant, at both replicas.
    for name in REPLICAS:
        for te in (tokens["access_token"], rotated["access_token"]):
            _poll(f"the revoked family's TE refused at {name}",
                  lambda: kit.post_at(name, te, init).status_code == 401, CACHE_SECONDS + 1.0)
            _assert_refused(ha, kit.post_at(name, te, init))


# --- c. revocation at A, enforced at B within cache_seconds + 1 ---------------------------------


def test_revocation_at_a_is_enforced_at_b_within_the_cache_time(ha: HaStack, kits) -> None:
    kit: HaKit = kits()
    client, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    # Both replicas know (and have cached) the grant.
    for name in REPLICAS:
        assert kit.whoami_at(name, te, session)["login"] == kit.upstream_login
    r = kit.revoke_at("a", client, tokens["refresh_token"])
    assert r.status_code == 200, describe(r)
    revoked = time.monotonic()

    def refused_at_b() -> bool:
        r = kit.call_at("b", te, session, "echo", {"text": "still?"})
        assert r.status_code in (200, 401), describe(r)
        return r.status_code == 401

    _, waited = _poll("the revocation at A enforced at B", refused_at_b, CACHE_SECONDS + 1.0, interval=0.05)
    total = time.monotonic() - revoked
    assert total <= CACHE_SECONDS + 1.0, f"B refused the revoked TE only after {total:.2f} s"
    _assert_refused(ha, kit.call_at("b", te, session, "echo", {"text": "still?"}))
    _assert_refused(ha, kit.call_at("a", te, session, "echo", {"text": "still?"}))
    _invalid_grant(kit.refresh_at("b", client, tokens["refresh_token"]))
    print(f"\n[ha] revoked at A, refused at B after {waited * 1000:.0f} ms (cache_seconds {CACHE_SECONDS})")


# --- d. both replicas restarted: nothing lost ---------------------------------------------------


def test_everything_survives_a_restart_of_both_replicas(ha: HaStack, kits) -> None:
    kit: HaKit = kits()
    client, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    before = ha.gh_state()
    pages = list(kit.upstream_pages)
    sign_ins = len(kit.idp.token_requests("authorization_code"))
    restarted = time.time()

    ha.restart_replicas()

    for name in REPLICAS:
        assert kit.whoami_at(name, te, session)["login"] == kit.upstream_login, f"the TE after the restart at {name}"
    refreshed = kit.assert_token_response(kit.refresh(client, tokens["refresh_token"]))
    kit.tes.append(refreshed["access_token"])
    for name in REPLICAS:
        assert kit.whoami_at(name, refreshed["access_token"], session)["login"] == kit.upstream_login
    # The upstream token (3 s) expired during the restart: it was refreshed
    # with the stored refresh token, without the user, and no spent one was sent.
    kit.sleep_until_expired()
    assert kit.whoami(refreshed["access_token"], session)["login"] == kit.upstream_login
    after = ha.gh_state()
    assert (after["authorize_pages"], after["code_exchanges"]) == (before["authorize_pages"],
                                                                   before["code_exchanges"]), "a new upstream consent"
    assert after["refresh_reuse"] == before["refresh_reuse"], after["token_log"][-3:]
    refreshes = _my_refreshes(kit, restarted)
    assert refreshes and all(e["outcome"] == "ok" for e in refreshes), refreshes
    assert kit.upstream_pages == pages, "the user was sent through the upstream provider again"
    assert len(kit.idp.token_requests("authorization_code")) == sign_ins, "the filter signed the user in again"


# --- e. a burst over both replicas, one upstream refresh -------------------------------------------


def test_a_burst_over_both_replicas_makes_one_upstream_refresh(ha: HaStack, kits) -> None:
    """50 concurrent tools/call with an expired upstream token (refreshes
    take 500 ms at the provider, so all 50 arrive while it runs): exactly one
    refresh presents the expired token's refresh token, none presents a spent
    one, and all 50 succeed. (The session is opened at the MCP server itself,
    so no replica's maintenance tick knows the token as in use before the
    burst; refreshes the tick makes of the new token afterwards present the
    new refresh token, and are reported, not counted as the burst's.)"""
    kit: HaKit = kits()
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session_at_server()
    stale = kit.latest_ti()
    kit.sleep_until_expired()
    before = ha.gh_state()
    test_ids = [kit.test_id() for _ in range(BURST)]
    clients = [http_client(kit.transcript, timeout=30.0) for _ in range(BURST)]
    try:
        t0 = time.time()
        answers = concurrently(BURST, lambda i: kit.call(te, session, "whoami", test_id=test_ids[i],
                                                         client=clients[i]))
        t1 = time.time()
    finally:
        for c in clients:
            c.close()
    bad = [describe(r) for r in answers if r.status_code != 200]
    assert not bad, f"{len(bad)} of {BURST} failed; first:\n{bad[0]}"
    for r in answers:
        result = rpc_messages(r)[0]
        assert "result" in result and not result["result"].get("isError"), describe(r)
        assert json.loads(result["result"]["content"][0]["text"])["login"] == kit.upstream_login
    spread = Counter(rec["_replica"] for rec in ha.records_for(set(test_ids)))
    assert set(spread) == set(REPLICAS) and min(spread.values()) >= BURST // 5, f"not spread: {dict(spread)}"

    after = ha.gh_state()
    stale_rt = fingerprint(stale["refresh_token"])
    with_stale = [e for e in after["token_log"] if e.get("refresh_token_sha256") == stale_rt]
    assert len(with_stale) == 1, (
        f"{len(with_stale)} refreshes presented the expired token's refresh token: {with_stale}")
    assert with_stale[0]["outcome"] == "ok" and t0 <= with_stale[0]["at"] <= t1, with_stale
    assert after["refresh_reuse"] == before["refresh_reuse"], "a spent refresh token was presented"
    in_burst = [e for e in _my_refreshes(kit, t0) if e["at"] <= t1]
    presented = Counter(e["refresh_token_sha256"] for e in in_burst)
    assert all(n == 1 for n in presented.values()), f"a refresh token was presented twice: {in_burst}"
    fresh = {fingerprint(t["access_token"]) for t in kit.my_issued() if t["at"] >= t0}
    carried = Counter(r["authorization_sha256"] for r in kit.seen() if r.get("x-test-id") in set(test_ids))
    assert sum(carried.values()) == BURST and set(carried) <= fresh, (
        f"the burst carried upstream tokens other than the refreshed ones: {carried}")
    print(f"\n[ha] burst of {BURST}: replicas {dict(spread)}; {len(with_stale)} refresh of the expired token, "
          f"{len(in_burst)} refresh(es) in all during the burst ({t1 - t0:.2f} s)")


# --- f. etcd away and back ----------------------------------------------------------------------


def test_without_etcd_requests_wait_and_sessions_survive(ha: HaStack, kits) -> None:
    users = []
    for _ in range(2):
        kit: HaKit = kits()
        client, tokens = kit.sign_in()
        session = kit.open_session(tokens["access_token"])
        assert kit.whoami(tokens["access_token"], session)["login"] == kit.upstream_login
        users.append((kit, client, tokens, session))
    before = ha.gh_state()
    sign_ins = len(ha.idp.token_requests("authorization_code"))

    ha.etcd.stop()
    try:
        time.sleep(CACHE_SECONDS + 1.0)  # past every replica's cache
        for kit, client, tokens, session in users:
            for name in REPLICAS:
                _assert_unavailable_mcp(kit.call_at(name, tokens["access_token"], session, "whoami"))
                r = kit.refresh_at(name, client, tokens["refresh_token"])
                assert r.status_code == 503, describe(r)
                assert oauth_error(r)["error"] == "temporarily_unavailable", describe(r)
        ha.assert_no_panics()
        for name, replica in ha.replicas.items():
            assert replica.running, f"replica {name} died without etcd:\n{replica.envoy.proc.tail()}"
    finally:
        ha.etcd.start()

    for kit, client, tokens, session in users:
        for name in REPLICAS:
            _poll(f"whoami at {name} with etcd back",
                  lambda: kit.call_at(name, tokens["access_token"], session, "whoami").status_code == 200, 10.0)
            assert kit.whoami_at(name, tokens["access_token"], session)["login"] == kit.upstream_login
        # The refresh token was not spent by the refused refreshes.
        refreshed = kit.assert_token_response(kit.refresh(client, tokens["refresh_token"]))
        kit.tes.append(refreshed["access_token"])
        assert kit.whoami(refreshed["access_token"], session)["login"] == kit.upstream_login
    after = ha.gh_state()
    assert (after["authorize_pages"], after["code_exchanges"]) == (before["authorize_pages"],
                                                                   before["code_exchanges"])
    assert len(ha.idp.token_requests("authorization_code")) == sign_ins, "someone signed in again"
    ha.assert_no_panics()


# --- g. etcd auth -------------------------------------------------------------------------------


def test_etcd_auth_with_a_role_limited_to_the_prefix(ha: HaStack, kits) -> None:
    user, password = "mcp-oauth-filter", secrets.token_urlsafe(16)
    ha.etcd.enable_auth(user, password, PREFIX)
    try:
        ha.restart_replicas(store=etcd_store(ha.etcd, username=user, password=password))
        kit: HaKit = kits()
        client, tokens = kit.sign_in()
        te = tokens["access_token"]
        session = kit.open_session(te)
        for name in REPLICAS:
            assert kit.whoami_at(name, te, session)["login"] == kit.upstream_login
        refreshed = kit.assert_token_response(kit.refresh(client, tokens["refresh_token"]))
        kit.tes.append(refreshed["access_token"])
        assert kit.whoami(refreshed["access_token"], session)["login"] == kit.upstream_login
        _keys_stay_under_the_prefix(ha)
        for name, replica in ha.replicas.items():
            assert password not in replica.log(), f"replica {name} logged the etcd password"

        # The same replicas with a wrong password.
        offsets = {name: len(r.log()) for name, r in ha.replicas.items()}
        ha.restart_replicas(store=etcd_store(ha.etcd, username=user, password=password + "-wrong"))
        for name in REPLICAS:
            _assert_unavailable_mcp(kit.call_at(name, refreshed["access_token"], session, "whoami"))
            r = kit.refresh_at(name, client, refreshed["refresh_token"])
            assert r.status_code == 503, describe(r)
            assert oauth_error(r)["error"] == "temporarily_unavailable", describe(r)
        for name, replica in ha.replicas.items():
            lines, _ = _poll(f"replica {name} logs store.etcd.password",
                             lambda: [ln for ln in replica.log()[offsets[name]:].splitlines()
                                      if "store.etcd.password" in ln], 5.0)
            print(f"\n[ha] {name}: {lines[0]}")
        ha.assert_no_panics()
    finally:
        ha.etcd.disable_auth()
        ha.restart_replicas(store=etcd_store(ha.etcd))
