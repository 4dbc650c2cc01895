"""The real MCP SDK client (PyPI `mcp` 1.30: mcp.client.auth.OAuthClientProvider
with streamable_http_client) through the filter's authorization server.

The SDK does discovery (the 401's resource_metadata, protected-resource and
authorization-server metadata), registration (RFC 7591, or a Client ID
Metadata Document when given client_metadata_url and the server advertises
client_id_metadata_document_supported), PKCE, the token request and, when its
token is about to expire (it tracks expires_in itself), the refresh. The
person's part, its redirect_handler and callback_handler, is done by the
headless browser: it opens the authorize URL, submits the IdP's login form
and the consent page's first form as served, and hands (code, state) from
the redirect back to the SDK.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio

from harness.browser import query
from harness.cimd import CimdServer
from harness.oauth import OAuthKit, jwt_parts
from harness.procs import free_port
from harness.sdk import HeadlessUser, MemoryStorage, sdk_client, text_of

TIMEOUT_S = 45.0


async def _run(kit: OAuthKit, test_id: str, *, client_metadata_url: str | None = None,
               redirect_uri: str, wait_for_refresh: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with sdk_client(kit, test_id, redirect_uri=redirect_uri, client_metadata_url=client_metadata_url) as c:
        out["storage"], out["user"] = c.storage, c.user
        session, storage = c.session, c.storage
        out["server_name"] = c.init.serverInfo.name
        tools = await session.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        out["echo"] = text_of(await session.call_tool("echo", {"text": "hello"}))
        out["first_token"] = storage.tokens[-1] if storage.tokens else None
        if wait_for_refresh:
            _, claims = jwt_parts(storage.tokens[-1].access_token)
            # Past the TE's expiry (and so past the SDK's own reckoning of expires_in).
            await anyio.sleep(max(0.0, claims["exp"] - time.time()) + 1.2)
            out["echo_after"] = text_of(await session.call_tool("echo", {"text": "after expiry"}))
            # No upstream_oauth2 on this route: the server got no token, and says so.
            out["whoami"] = await session.call_tool("whoami", {})
    return out


def _common_checks(kit: OAuthKit, result: dict[str, Any], test_id: str) -> list[str]:
    storage: MemoryStorage = result["storage"]
    user: HeadlessUser = result["user"]
    assert result["server_name"] == "mcp-oauth-filter demo"
    assert result["tools"] == ["admin_reset", "echo", "whoami"], result["tools"]
    assert result["echo"] == "hello"
    assert len(user.authorize_urls) == 1, f"the SDK authorized {len(user.authorize_urls)} times:\n" + "\n".join(
        user.trails)
    asked = query(user.authorize_urls[0])
    assert asked["code_challenge_method"] == "S256", asked
    assert asked.get("resource") == kit.resource, f"the SDK asked for resource {asked.get('resource')!r}: {asked}"
    tes = [t.access_token for t in storage.tokens]
    for te in tes:
        kit.assert_te(te)
    # The MCP server got the SDK's MCP requests, none with an Authorization header.
    seen = kit.mcp_server.saw_test_id(test_id)
    assert any(req["method"] == "POST" and req["path"] == "/mcp" for req in seen), seen
    assert all(req.get("authorization") is None for req in seen), [r for r in seen if r.get("authorization")]
    kit.assert_no_leaks(*tes)
    return tes


def test_sdk_client_with_dynamic_registration_and_refresh(oauth_short_ttl: OAuthKit, test_id: str) -> None:
    """DCR, ES256 sign-in, 3-second TEs: the SDK refreshes and keeps working."""
    kit = oauth_short_ttl
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"

    async def main() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT_S):
            return await _run(kit, test_id, redirect_uri=redirect_uri, wait_for_refresh=True)

    result = anyio.run(main)
    tes = _common_checks(kit, result, test_id)
    storage: MemoryStorage = result["storage"]
    assert storage.client_info is not None and not storage.client_info.client_id.startswith("https://")
    assert result["echo_after"] == "after expiry"
    whoami = result["whoami"]
    assert whoami.isError and "no upstream token received" in whoami.content[0].text, whoami
    assert len(storage.tokens) >= 2, f"no refresh happened: {len(storage.tokens)} token answer(s)"
    first, last = storage.tokens[0], storage.tokens[-1]
    assert last.access_token != first.access_token
    assert last.refresh_token and last.refresh_token != first.refresh_token, "the refresh token did not rotate"
    # The expired TE is refused now; the refreshed one is still good.
    kit.assert_refused(tes[0], test_id + "-old")


def test_sdk_client_with_client_id_metadata_document(oauth: OAuthKit, cimd_server: CimdServer,
                                                     test_id: str) -> None:
    """CIMD: the SDK uses client_metadata_url as its client_id instead of registering."""
    kit = oauth
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    path = f"/sdk/{uuid.uuid4().hex}/client.json"
    url = cimd_server.publish(path, {
        "client_id": cimd_server.url(path),
        "client_name": "mcp-oauth-filter e2e SDK client (CIMD)",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })

    async def main() -> dict[str, Any]:
        with anyio.fail_after(TIMEOUT_S):
            return await _run(kit, test_id, client_metadata_url=url, redirect_uri=redirect_uri,
                              wait_for_refresh=False)

    result = anyio.run(main)
    _common_checks(kit, result, test_id)
    user: HeadlessUser = result["user"]
    assert query(user.authorize_urls[0])["client_id"] == url
    assert cimd_server.requests_for(path), "the filter never fetched the SDK's metadata document"
    registrations = [line for line, _ in kit.transcript.entries if "/.oauth/register" in line]
    assert not registrations, f"the SDK registered although it had a metadata document: {registrations}"
