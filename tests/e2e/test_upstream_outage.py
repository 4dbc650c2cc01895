"""The upstream token vault (issue 4) when the provider's token endpoint
misbehaves: down (503, connection reset, no answer within timeout_ms), and
slow (every request waits for the one refresh in flight).

Route `flaky`: 3-second tokens refreshed 1 s before expiry, refresh_timeout_ms
and refresh_wait_ms 1000.
Route `slow`: the provider takes 800 ms to answer a refresh.
"""

from __future__ import annotations

import time

import pytest

from harness.http import media_type
from harness.mcp_server import fingerprint
from harness.oauth import describe
from harness.upstream import UpstreamKit, spread_over_workers, whoami_burst

BACKOFF_S = 5  # the filter's FAILURE_BACKOFF_SECONDS


def _my_token_requests(kit: UpstreamKit) -> int:
    """Token-endpoint requests for this kit's user: the app's counter also
    counts the maintenance tick's refreshes of other tests' users."""
    return sum(1 for e in kit.my_token_log() if e["grant_type"] == "refresh_token")


def _assert_unavailable(r) -> None:
    assert r.status_code == 503, describe(r)
    assert media_type(r.headers.get("content-type")) == "application/json", describe(r)
    body = r.json()
    assert body["error"] == "temporarily_unavailable" and body.get("error_description"), describe(r)
    assert r.headers.get("retry-after") == str(BACKOFF_S), describe(r)


@pytest.mark.parametrize("outage", ["503", "reset", "hang"])
def test_provider_down_is_a_clear_503_and_service_resumes(upstream, outage: str) -> None:
    """The refresh fails for want of an answer: 503 temporarily_unavailable
    with Retry-After; the stale token is never sent; for 5 s requests fail at
    once without calling the provider; once it is back, service resumes by
    itself with a refreshed token."""
    kit: UpstreamKit = upstream.kit("flaky")
    app = kit.spec.client_id
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    stale = kit.latest_ti()
    kit.stack.gh.configure(app, outage=outage)
    try:
        kit.sleep_until_expired()
        forwarded = len(kit.seen())
        calls = _my_token_requests(kit)
        t0 = time.monotonic()
        r = kit.call(te, session, "whoami")
        failed_at, took = time.time(), time.monotonic() - t0
        _assert_unavailable(r)
        # The refresh that failed is this request's, or the maintenance
        # tick's (tokens in use are refreshed before they expire; with
        # 3-second tokens, on every tick): either way one call, and a request
        # never waits longer than the refresh's timeout (1 s).
        assert _my_token_requests(kit) <= calls + 1
        calls = _my_token_requests(kit)
        assert took < 2.5, f"the request should give up after refresh_timeout_ms (1 s), took {took:.2f} s"
        # Fail fast meanwhile: no call to the provider, no waiting.
        t0 = time.monotonic()
        _assert_unavailable(kit.call(te, session, "whoami"))
        fast = time.monotonic() - t0
        # A request that waited would take the 1 s refresh_wait_ms at least.
        assert fast < 0.9
        assert _my_token_requests(kit) == calls, "the provider was called during the backoff"
        assert len(kit.seen()) == forwarded, "a request went to the MCP server without a fresh upstream token"
    finally:
        kit.stack.gh.configure(app, outage=None)
    time.sleep(max(0.0, failed_at + BACKOFF_S + 0.3 - time.time()))
    t0 = time.monotonic()
    assert kit.whoami(te, session)["login"] == kit.upstream_login
    print(f"\n[measured] outage {outage}: the failing refresh answered 503 after {took * 1000:.0f} ms, a request "
          f"during the backoff after {fast * 1000:.1f} ms; {BACKOFF_S} s later the first request refreshed and "
          f"succeeded in {(time.monotonic() - t0) * 1000:.0f} ms")
    fresh = kit.latest_ti()
    assert fresh["access_token"] != stale["access_token"]
    assert kit.seen()[-1]["authorization_sha256"] == fingerprint(fresh["access_token"])


def test_requests_wait_for_the_one_slow_refresh(upstream) -> None:
    """The refresh takes 800 ms: 8 requests arriving meanwhile on both
    workers are parked, not sent to the provider, and go on together with
    the new token as soon as it is stored."""
    kit: UpstreamKit = upstream.kit("slow")
    _, tokens = kit.sign_in()
    te = tokens["access_token"]
    session = kit.open_session(te)
    pinned = kit.pinned_clients(te, session, 12)
    clients = spread_over_workers(pinned, 8)
    workers = {w for c, w in pinned if c in clients}
    expired = fingerprint(kit.latest_ti()["access_token"])
    kit.sleep_until_expired()
    before = _my_token_requests(kit)
    burst = whoami_burst(kit, te, session, clients)
    assert all(a["login"] == kit.upstream_login for a in burst.answers), burst.answers
    assert _my_token_requests(kit) == before + 1
    assert len(burst.holds) == 8, "the access log lacks the burst's requests"
    assert min(burst.holds) >= 0.75, f"a request went on before the 800 ms refresh ended: {burst.summary()}"
    assert max(burst.resumes) - min(burst.resumes) < 0.25, f"parked requests were slow to wake: {burst.summary()}"
    arrived = [r for r in kit.seen() if r["x-test-id"] in set(burst.test_ids)]
    # One new token (the tick may refresh it again after the burst, so not
    # necessarily the latest).
    sent = {r["authorization_sha256"] for r in arrived}
    assert len(sent) == 1 and expired not in sent, arrived
    assert sent <= {fingerprint(t["access_token"]) for t in kit.my_issued()}, arrived
    print(f"\n[measured] route slow (800 ms refresh), 8 concurrent requests on an expired token over workers "
          f"{sorted(workers)}: 1 refresh; {burst.summary()}")
    for c, _ in pinned:
        c.close()
