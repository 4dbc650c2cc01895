"""Raw-HTTP OAuth client steps against the filter's authorization server, for
the tests that check each answer exactly (the SDK tests drive the same steps
through mcp.client.auth).

OAuthKit holds, for one test, a recorded HTTP client, the browsers it opened
and what it needs to know about the stack (Envoy, IdP, MCP server), and
offers the steps: register, authorize through the IdP login and the consent
page, token, refresh, revoke, an MCP request with a token, and the checks
every test holding a TE makes (see assert_te / assert_no_leaks).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx

from . import www_authenticate
from .browser import Browser, Transcript, forms_of, http_client, query, same_endpoint
from .envoy import IDP_CLIENT_SECRET, Envoy
from .http import INITIALIZE_BODY, POST_HEADERS, media_type
from .idp import Idp
from .mcp_server import McpServer

SCOPE = "mcp"
CONSENT_PATH = "/.oauth/consent"
CALLBACK_PATH = "/.oauth/callback"
SESSION_COOKIE = "mcpof_session"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _b64url_json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWS compact token, signature NOT checked."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"not a JWS compact serialization ({len(parts)} parts)")
    return _b64url_json(parts[0]), _b64url_json(parts[1])


def tamper(token: str) -> str:
    """The token with one claim changed and the signature kept: what an
    attacker who cannot sign would try (here: a later expiry)."""
    header, payload, signature = token.split(".")
    claims = _b64url_json(payload)
    claims["exp"] = int(claims.get("exp", 0)) + 86400
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def describe(response: httpx.Response, body_chars: int = 1500) -> str:
    """A response as evidence for an assertion message."""
    req = response.request
    head = "\n".join(f"  {k}: {v}" for k, v in response.headers.multi_items())
    try:
        body = response.text[:body_chars]
    except httpx.ResponseNotRead:
        body = "(body not read)"
    return f"{req.method} {req.url}\n-> {response.status_code}\n{head}\n  ---\n  {body}"


def oauth_error(response: httpx.Response) -> dict[str, Any]:
    """The RFC 6749 5.2 error object of a JSON error response."""
    assert media_type(response.headers.get("content-type")) == "application/json", describe(response)
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], describe(response)
    return body


class ProviderPages(Protocol):
    """The pages of an upstream OAuth provider the browser passes through
    during authorization (its sign-in and consent), played by a person."""

    def handles(self, page: httpx.Response) -> bool: ...

    def act(self, browser: Browser, page: httpx.Response, stop: Callable[[str], bool]) -> httpx.Response:
        """Do what the person does on this page; the response it leads to."""
        ...


@dataclass
class Client:
    """A client the authorization server knows: registered, or a metadata document URL."""

    client_id: str
    redirect_uri: str
    client_secret: str | None = None
    auth_method: str = "none"
    registration: dict[str, Any] = field(default_factory=dict)


@dataclass
class Authorization:
    """What the browser brought back to the client's redirect_uri."""

    client: Client
    redirect_uri: str  # as sent to /authorize
    resource: str
    verifier: str
    state: str
    params: dict[str, str]  # the redirect's query: code, state, iss (or error...)
    browser: Browser
    consent_page: httpx.Response | None
    final: httpx.Response | None = None  # the redirect back (or, with stop_at_error, the error page)

    @property
    def code(self) -> str:
        assert "code" in self.params, f"no code in the redirect: {self.params}\n{self.browser.trail()}"
        return self.params["code"]


class OAuthKit:
    def __init__(self, envoy: Envoy, idp: Idp, mcp_server: McpServer) -> None:
        self.envoy = envoy
        self.idp = idp
        self.mcp_server = mcp_server
        self.transcript = Transcript()
        self.http = http_client(self.transcript)
        self._browsers: list[Browser] = []
        # Upstream providers' pages drive() knows how to get through.
        self.provider_pages: list[ProviderPages] = []

    # --- the stack --------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self.envoy.base_url

    @property
    def resource(self) -> str:
        return self.envoy.mcp_url

    @property
    def other_origin(self) -> str:
        """The second route's origin (same listener, :authority localhost:<port>)."""
        return f"http://localhost:{self.envoy.listen_port}"

    @property
    def other_resource(self) -> str:
        return f"{self.other_origin}/mcp"

    def endpoint(self, name: str) -> str:
        return f"{self.issuer}/.oauth/{name}"

    def close(self) -> None:
        for browser in self._browsers:
            browser.close()
        self.http.close()

    def browser(self) -> Browser:
        """A new browser (empty cookie jar) whose responses go to this kit's transcript."""
        b = Browser(transcript=self.transcript)
        self._browsers.append(b)
        return b

    # --- registration -----------------------------------------------------

    def register(self, metadata: dict[str, Any], base_url: str | None = None) -> httpx.Response:
        return self.http.post(f"{base_url or self.issuer}/.oauth/register", json=metadata)

    def client_metadata(self, *, redirect_uri: str | None = None, auth_method: str = "none",
                        name: str | None = None) -> dict[str, Any]:
        return {
            "redirect_uris": [redirect_uri or f"http://127.0.0.1:{49152 + secrets.randbelow(16000)}/callback"],
            "client_name": name or f"e2e client {uuid.uuid4().hex[:8]}",
            "token_endpoint_auth_method": auth_method,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }

    def register_client(self, *, redirect_uri: str | None = None, auth_method: str = "none",
                        name: str | None = None) -> Client:
        metadata = self.client_metadata(redirect_uri=redirect_uri, auth_method=auth_method, name=name)
        r = self.register(metadata)
        assert r.status_code == 201, f"registration failed:\n{describe(r)}"
        body = r.json()
        assert isinstance(body.get("client_id"), str) and body["client_id"], describe(r)
        if auth_method != "none":
            assert body.get("client_secret"), f"a confidential client gets a secret:\n{describe(r)}"
        return Client(client_id=body["client_id"], redirect_uri=metadata["redirect_uris"][0],
                      client_secret=body.get("client_secret"), auth_method=auth_method, registration=body)

    # --- authorization ------------------------------------------------------

    def authorize_url(self, client: Client, *, challenge: str | None, state: str, resource: str | None,
                      redirect_uri: str | None = None, scope: str | None = SCOPE, method: str | None = "S256",
                      base_url: str | None = None, **extra: str) -> str:
        params: dict[str, str] = {"response_type": "code", "client_id": client.client_id,
                                  "redirect_uri": redirect_uri or client.redirect_uri, "state": state}
        if challenge is not None:
            params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
        if resource is not None:
            params["resource"] = resource
        if scope is not None:
            params["scope"] = scope
        params.update(extra)
        return f"{base_url or self.issuer}/.oauth/authorize?{urlencode(params)}"

    def drive(self, browser: Browser, url: str, redirect_uri: str, *, login: str | None = None,
              decision: str | None = "approve",
              stop_at_error: bool = False) -> tuple[httpx.Response, httpx.Response | None]:
        """Open url in the browser and do what a person does: sign in at the IdP
        (the login form as served, or with `login` typed in), and on the consent
        page approve (the first form as served) or deny (the form whose button
        is decision=deny), and get through the pages of the upstream providers
        in self.provider_pages. Returns (the redirect to redirect_uri, the consent
        page if one was shown). With decision=None, stops at the consent page
        and returns (consent page, consent page). With stop_at_error, an error
        page of the filter (4xx/5xx HTML) is returned as (page, consent page)."""
        stop = lambda target: same_endpoint(target, redirect_uri)  # noqa: E731
        page = browser.go("GET", url, stop=stop)
        consent: httpx.Response | None = None
        for _ in range(10):
            location = page.headers.get("location")
            if page.status_code in (301, 302, 303, 307, 308) and location and stop(str(page.url.join(location))):
                return page, consent
            handler = next((h for h in self.provider_pages if h.handles(page)), None)
            if handler is not None:
                page = handler.act(browser, page, stop)
                continue
            where = urlsplit(str(page.url))
            if page.status_code == 200 and where.port == self.idp.port and where.path.startswith("/interaction/"):
                forms = forms_of(page)
                assert forms, f"the IdP's sign-in page has no form:\n{describe(page)}"
                page = browser.submit(page, forms[0], overrides={"login": login} if login else None, stop=stop)
                continue
            if page.status_code == 200 and where.path == CONSENT_PATH:
                consent = page
                if decision is None:
                    return page, page
                forms = forms_of(page)
                if decision == "approve":
                    assert forms, f"the consent page has no form:\n{describe(page)}"
                    form = forms[0]
                else:
                    candidates = [f for f in forms if ("decision", decision) in f.buttons
                                  or ("decision", decision) in f.fields]
                    assert candidates, f"no consent form with decision={decision}:\n{describe(page)}"
                    form = candidates[0]
                    button = next((i for i, b in enumerate(form.buttons) if b == ("decision", decision)), 0)
                    page = browser.submit(page, form, button=button, stop=stop)
                    continue
                page = browser.submit(page, form, stop=stop)
                continue
            if stop_at_error and page.status_code >= 400 and urlsplit(str(page.url)).netloc == urlsplit(url).netloc:
                return page, consent
            raise AssertionError(
                f"the browser did not get back to {redirect_uri}; hops:\n{browser.trail()}\nlast:\n{describe(page)}")
        raise AssertionError(f"sign-in did not finish; hops:\n{browser.trail()}")

    def authorize(self, client: Client, *, browser: Browser | None = None, login: str | None = None,
                  resource: str | None = None, redirect_uri: str | None = None, scope: str | None = SCOPE,
                  decision: str | None = "approve", stop_at_error: bool = False) -> Authorization:
        """The whole authorization request, through sign-in and consent, up to
        the redirect back to the client (whose query is in .params)."""
        browser = browser or self.browser()
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        resource = self.resource if resource is None else resource
        redirect_uri = redirect_uri or client.redirect_uri
        url = self.authorize_url(client, challenge=challenge, state=state, resource=resource,
                                 redirect_uri=redirect_uri, scope=scope)
        final, consent = self.drive(browser, url, redirect_uri, login=login, decision=decision,
                                    stop_at_error=stop_at_error)
        params = (query(str(final.url.join(final.headers["location"])))
                  if decision is not None and "location" in final.headers else {})
        return Authorization(client=client, redirect_uri=redirect_uri, resource=resource, verifier=verifier,
                             state=state, params=params, browser=browser, consent_page=consent, final=final)

    # --- token endpoint -----------------------------------------------------

    def token_request(self, client: Client, data: dict[str, str]) -> httpx.Response:
        """POST /.oauth/token as the client authenticates (RFC 6749 2.3)."""
        data, headers = client_auth(client, data)
        return self.http.post(self.endpoint("token"), data=data, headers=headers)

    def exchange(self, auth: Authorization, **overrides: str | None) -> httpx.Response:
        """The authorization_code grant for auth; overrides change or (None) drop parameters."""
        data: dict[str, str | None] = {
            "grant_type": "authorization_code", "code": auth.code, "redirect_uri": auth.redirect_uri,
            "code_verifier": auth.verifier, "resource": auth.resource,
        }
        data.update(overrides)
        return self.token_request(auth.client, {k: v for k, v in data.items() if v is not None})

    def refresh(self, client: Client, refresh_token: str, **extra: str) -> httpx.Response:
        return self.token_request(client, {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})

    def revoke(self, client: Client, token: str, hint: str | None = None) -> httpx.Response:
        """POST /.oauth/revoke (RFC 7009), authenticated as at the token endpoint."""
        data = {"token": token}
        if hint:
            data["token_type_hint"] = hint
        data, headers = client_auth(client, data)
        return self.http.post(self.endpoint("revoke"), data=data, headers=headers)

    def tokens(self, auth: Authorization) -> dict[str, Any]:
        """Exchange the code and check the successful token response (RFC 6749 5.1)."""
        r = self.exchange(auth)
        return self.assert_token_response(r)

    def assert_token_response(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 200, f"token request failed:\n{describe(r)}"
        assert media_type(r.headers.get("content-type")) == "application/json", describe(r)
        assert "no-store" in r.headers.get("cache-control", "").lower(), f"no Cache-Control: no-store:\n{describe(r)}"
        body = r.json()
        assert isinstance(body.get("access_token"), str) and body["access_token"], describe(r)
        assert body.get("token_type", "").lower() == "bearer", describe(r)
        assert isinstance(body.get("expires_in"), int) and body["expires_in"] > 0, describe(r)
        assert isinstance(body.get("refresh_token"), str) and body["refresh_token"], describe(r)
        assert SCOPE in str(body.get("scope", "")).split(), describe(r)
        self.assert_te(body["access_token"])
        return body

    def get_te(self, *, login: str | None = None, client: Client | None = None) -> tuple[Client, dict[str, Any]]:
        """Register a public client, authorize, exchange: (client, token response)."""
        client = client or self.register_client()
        auth = self.authorize(client, login=login)
        return client, self.tokens(auth)

    # --- the MCP endpoint ---------------------------------------------------

    def mcp_post(self, token: str | None, test_id: str, *, origin: str | None = None,
                 body: str = INITIALIZE_BODY) -> httpx.Response:
        """An MCP initialize to a route (default: the first), with Bearer token.
        Sent to 127.0.0.1 whatever the route's host, with its :authority, at
        the path of this kit's resource."""
        origin = origin or self.issuer
        headers = {**POST_HEADERS, "x-test-id": test_id, "Host": urlsplit(origin).netloc}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post(f"{self.envoy.base_url}{urlsplit(self.resource).path}", content=body, headers=headers)

    def assert_accepted(self, token: str, test_id: str, *, origin: str | None = None) -> httpx.Response:
        """The token works: the MCP server answers, and got the request without the token."""
        r = self.mcp_post(token, test_id, origin=origin)
        assert r.status_code == 200, f"a valid TE was refused:\n{describe(r)}"
        seen = self.mcp_server.saw_test_id(test_id)
        assert seen, f"the MCP server did not receive the request (test id {test_id})"
        for req in seen:
            assert req.get("authorization") is None, (
                f"the MCP server received an Authorization header ({req.get('authorization_scheme')}): {req}")
        assert not self.mcp_server.requests_with_token(token), "the TE reached the MCP server"
        return r

    def assert_refused(self, token: str, test_id: str, *, origin: str | None = None) -> www_authenticate.Challenge:
        """401 with Bearer error="invalid_token" and resource_metadata, not forwarded."""
        origin = origin or self.issuer
        r = self.mcp_post(token, test_id, origin=origin)
        assert r.status_code == 401, f"expected 401 for the token:\n{describe(r)}"
        values = r.headers.get_list("www-authenticate")
        assert len(values) == 1, f"expected one WWW-Authenticate:\n{describe(r)}"
        challenge = www_authenticate.bearer(values[0])
        assert challenge.params.get("error") == "invalid_token", describe(r)
        assert challenge.params.get("resource_metadata") == (
            f"{origin}/.well-known/oauth-protected-resource{urlsplit(self.resource).path}"), describe(r)
        assert not self.mcp_server.saw_test_id(test_id), "a refused request reached the MCP server"
        return challenge

    # --- checks for every test holding a TE ---------------------------------

    def assert_te(self, token: str, *, resource: str | None = None) -> dict[str, Any]:
        """The TE is the filter's own JWT (iss: the route origin, aud: its
        resource), not something passed on from the IdP."""
        try:
            header, claims = jwt_parts(token)
        except ValueError as e:
            raise AssertionError(f"the access token is not a JWT ({e}): {token[:40]}...") from e
        assert claims.get("iss") == self.issuer, f"TE iss {claims.get('iss')!r} != {self.issuer!r}: {claims}"
        aud = claims.get("aud")
        expected = resource or self.resource
        assert aud == expected or (isinstance(aud, list) and expected in aud), f"TE aud {aud!r} != {expected!r}"
        assert header.get("alg") != "none", header
        return claims

    def assert_no_leaks(self, *tokens: str) -> None:
        """Nothing the client side received carries the IdP's tokens, the
        filter's IdP client secret or its keys; the MCP server never got a TE."""
        for secret in self.idp.issued_tokens():
            found = self.transcript.containing(secret)
            assert not found, f"an IdP token was sent to the client side in: {found}"
        plugin = self.envoy.plugin if isinstance(self.envoy.plugin, dict) else {}
        secrets_ = [IDP_CLIENT_SECRET]
        for key in plugin.get("keys", {}).get("token_signing", []):
            secrets_.append(key["secret"])
        for key in plugin.get("keys", {}).get("encryption", []):
            secrets_.append(key["key"])
        for secret in secrets_:
            found = self.transcript.containing(secret)
            assert not found, f"a filter secret was sent to the client side in: {found}"
        for token in tokens:
            got = self.mcp_server.requests_with_token(token)
            assert not got, f"the MCP server received a TE: {got}"

    def route_requests_at_mcp_server(self) -> list[dict[str, Any]]:
        """What the MCP server received for this kit's routes, outside the MCP endpoint."""
        hosts = {urlsplit(self.issuer).netloc, urlsplit(self.other_origin).netloc}
        return [req for req in self.mcp_server.requests_seen() if req.get("host") in hosts and req["path"] != "/mcp"]


def client_auth(client: Client, data: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(form, headers) for a token or revocation request by client: Basic
    credentials (form-urlencoded first, RFC 6749 2.3.1), the secret in the
    form, or the client_id alone for a public client."""
    data = dict(data)
    headers: dict[str, str] = {}
    if client.auth_method == "client_secret_basic" and client.client_secret:
        creds = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
    else:
        data.setdefault("client_id", client.client_id)
        if client.auth_method == "client_secret_post" and client.client_secret:
            data["client_secret"] = client.client_secret
    return data, headers
