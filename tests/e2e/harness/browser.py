"""A headless "browser" for the OAuth steps a person does: follow redirects
with a cookie jar, read HTML forms, submit them as served, and stop where the
authorization server sends the browser back to the client's redirect_uri
(where nothing listens: the test takes the code from the Location).

Every response it gets is kept in a Transcript, together with those of the
raw-HTTP clients the tests use, so a test can check that nothing the servers
sent to the client side carries a secret it must not (the IdP's tokens).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

from .forms import Form, parse_forms

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_HOPS = 25


@dataclass
class Hop:
    method: str
    url: str
    status: int
    location: str | None
    response: httpx.Response = field(repr=False, compare=False)

    def __str__(self) -> str:
        to = f" -> {self.location}" if self.location else ""
        return f"{self.method} {self.url} {self.status}{to}"


class Transcript:
    """Everything the client side received: status line, headers, body (bodies
    of event streams are left out: reading them in a hook would wait for the
    stream's end). Thread-safe: the SDK tests run the browser in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, str]] = []  # (request line, response as text)

    def add(self, response: httpx.Response, body: str) -> None:
        req = response.request
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        with self._lock:
            self.entries.append((f"{req.method} {req.url}", f"{response.status_code}\n{head}\n\n{body}"))

    def sync_hook(self, response: httpx.Response) -> None:
        if _is_stream(response):
            self.add(response, "")
            return
        response.read()
        self.add(response, response.text)

    async def async_hook(self, response: httpx.Response) -> None:
        if _is_stream(response):
            self.add(response, "")
            return
        await response.aread()
        self.add(response, response.text)

    def containing(self, secret: str) -> list[str]:
        """Request lines of the responses whose text contains `secret`."""
        with self._lock:
            return [line for line, text in self.entries if secret and secret in text]


def _is_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def http_client(transcript: Transcript | None = None, **kwargs) -> httpx.Client:
    """A plain client for raw requests: no proxies from the environment, no
    redirects followed, every response recorded."""
    hooks = {"response": [transcript.sync_hook]} if transcript else {}
    return httpx.Client(trust_env=False, follow_redirects=False, timeout=kwargs.pop("timeout", 10.0),
                        event_hooks=hooks, **kwargs)


def query(url: str) -> dict[str, str]:
    """The query parameters of url (each name once)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def same_endpoint(url: str, endpoint: str) -> bool:
    """url is endpoint (scheme, host, port, path), whatever its query."""
    a, b = urlsplit(url), urlsplit(endpoint)
    return (a.scheme, a.hostname, a.port, a.path) == (b.scheme, b.hostname, b.port, b.path)


@dataclass
class Browser:
    transcript: Transcript = field(default_factory=Transcript)
    timeout: float = 10.0
    history: list[Hop] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = http_client(self.transcript, timeout=self.timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, url: str, data: list[tuple[str, str]] | dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        """One request, redirects not followed (but recorded)."""
        content = None
        if data is not None:
            # A form's entry list may repeat names: encode it ourselves, in order.
            items = list(data.items()) if isinstance(data, dict) else list(data)
            content = urlencode(items)
            headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        response = self.http.request(method, url, content=content, headers=headers)
        location = response.headers.get("location")
        self.history.append(Hop(method, url, response.status_code,
                                urljoin(url, location) if location else None, response))
        return response

    def go(self, method: str, url: str, data: list[tuple[str, str]] | dict[str, str] | None = None,
           stop: Callable[[str], bool] | None = None) -> httpx.Response:
        """Request url and follow redirects as a browser does (303, and 301/302
        after a POST, become GET), until a response that is not a redirect, or a
        redirect whose target satisfies stop(url) (that redirect is returned)."""
        for _ in range(MAX_HOPS):
            response = self.request(method, url, data)
            if response.status_code not in REDIRECT_STATUSES or "location" not in response.headers:
                return response
            target = urljoin(url, response.headers["location"])
            if stop is not None and stop(target):
                return response
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, data = "GET", None
            url = target
        raise AssertionError(f"more than {MAX_HOPS} redirects:\n{self.trail()}")

    def submit(self, page: httpx.Response, form: Form, *, button: int | None = 0,
               overrides: dict[str, str] | None = None, stop: Callable[[str], bool] | None = None) -> httpx.Response:
        """Submit `form` of `page` with button number `button`, following redirects."""
        entries = form.entries(button=button, overrides=overrides)
        target = form.url(str(page.url))
        if form.method == "GET":
            target = target.split("?", 1)[0] + "?" + urlencode(entries)
            return self.go("GET", target, stop=stop)
        return self.go("POST", target, data=entries, stop=stop)

    def hops_to(self, path: str) -> list[Hop]:
        """The hops whose request URL has this path."""
        return [hop for hop in self.history if urlsplit(hop.url).path == path]

    def trail(self) -> str:
        """The hops so far, for assertion messages."""
        return "\n".join(f"  {hop}" for hop in self.history)


def forms_of(page: httpx.Response) -> list[Form]:
    return parse_forms(page.text)
