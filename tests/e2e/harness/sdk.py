"""The real MCP SDK client (PyPI `mcp` 1.30: mcp.client.auth.OAuthClientProvider
with streamable_http_client), with the person's part played headlessly.

The SDK does discovery (the 401's resource_metadata, protected-resource and
authorization-server metadata), registration (RFC 7591, or a Client ID
Metadata Document when given client_metadata_url and the server advertises
client_id_metadata_document_supported), PKCE, the token request, the
refresh when its token is about to expire (it tracks expires_in itself), and
a whole new authorization when a request gets 401. The person's part, its
redirect_handler and callback_handler, is done by the headless browser
(OAuthKit.drive): it opens the authorize URL, signs in at the IdP, approves
the consent page, gets through the upstream provider's pages when the route
has one, and hands (code, state) from the redirect back to the SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from .browser import query
from .oauth import OAuthKit


@dataclass
class MemoryStorage:
    """mcp.client.auth.TokenStorage in memory, remembering every token set."""

    tokens: list[OAuthToken] = field(default_factory=list)
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens[-1] if self.tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class HeadlessUser:
    """The SDK's redirect_handler and callback_handler, played by the browser."""

    def __init__(self, kit: OAuthKit, redirect_uri: str, login: str | None = None) -> None:
        self.kit = kit
        self.redirect_uri = redirect_uri
        self.login = login
        self.authorize_urls: list[str] = []
        self.redirects: list[dict[str, str]] = []
        self.trails: list[str] = []
        self.browsers: list = []
        self._pending: tuple[str, str | None] | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorize_urls.append(authorization_url)
        browser = self.kit.browser()
        self.browsers.append(browser)

        def person() -> dict[str, str]:
            final, _ = self.kit.drive(browser, authorization_url, self.redirect_uri, login=self.login)
            return query(str(final.url.join(final.headers["location"])))

        try:
            params = await anyio.to_thread.run_sync(person)
        finally:
            self.trails.append(browser.trail())
        self.redirects.append(params)
        assert params.get("iss") == self.kit.issuer, f"iss {params.get('iss')!r} in the redirect: {params}"
        assert "code" in params, f"no code in the redirect: {params}\n{browser.trail()}"
        self._pending = (params["code"], params.get("state"))

    async def callback_handler(self) -> tuple[str, str | None]:
        assert self._pending is not None, "callback_handler called before the redirect"
        pending, self._pending = self._pending, None
        return pending


@dataclass
class SdkClient:
    """A connected SDK client: the session, its token storage and its user."""

    session: ClientSession
    storage: MemoryStorage
    user: HeadlessUser
    init: Any = None  # the InitializeResult


@asynccontextmanager
async def sdk_client(kit: OAuthKit, test_id: str, *, redirect_uri: str, login: str | None = None,
                     client_metadata_url: str | None = None, client_name: str = "mcp-oauth-filter e2e SDK client",
                     headers: dict[str, str] | None = None) -> AsyncIterator[SdkClient]:
    """An initialized ClientSession to kit.resource, authorized as a person would
    (signing in as `login`, or as the IdP's login form is served)."""
    storage = MemoryStorage()
    user = HeadlessUser(kit, redirect_uri, login=login)
    provider = OAuthClientProvider(
        server_url=kit.resource,
        client_metadata=OAuthClientMetadata(redirect_uris=[AnyUrl(redirect_uri)], client_name=client_name),
        storage=storage,
        redirect_handler=user.redirect_handler,
        callback_handler=user.callback_handler,
        timeout=30.0,
        client_metadata_url=client_metadata_url,
    )
    async with httpx.AsyncClient(auth=provider, headers={"x-test-id": test_id, **(headers or {})}, trust_env=False,
                                 timeout=httpx.Timeout(10.0, read=30.0),
                                 event_hooks={"response": [kit.transcript.async_hook]}) as http:
        async with streamable_http_client(kit.resource, http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                yield SdkClient(session=session, storage=storage, user=user, init=init)


def text_of(result: Any) -> str:
    """The text of a successful tool result."""
    assert not result.isError, result
    return result.content[0].text
