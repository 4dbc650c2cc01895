"""HTTP/1.1 and HTTP/2 requests sent exactly as written, for the attacks
that client libraries normalise or refuse: absolute-form and asterisk-form
request targets, odd or repeated Host / :authority values, duplicate
headers, control characters, chunked bodies with trailers, HTTP/2 trailers,
and a chosen source address (any of 127/8: Linux routes all of it to lo).

Every answer is handed to harness.leakwatch, like those of the httpx
clients, so the session-wide leak checks see it too.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from . import leakwatch

HeaderList = Sequence[tuple[bytes | str, bytes | str]]


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


@dataclass
class RawResponse:
    """One answer as it came off the wire."""

    protocol: str  # "HTTP/1.1" or "HTTP/2"
    status: int | None  # None: no response (stream reset, connection closed)
    headers: list[tuple[str, str]] = field(default_factory=list)  # names lower-case, values latin-1
    body: bytes = b""
    head: bytes = b""  # HTTP/1.1: the status line and header block exactly as received
    reset: bool = False  # HTTP/2: RST_STREAM or GOAWAY instead of (the end of) a response
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.header_list(name)
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def refused(self) -> bool:
        """No answer at all, or a 4xx."""
        return self.status is None or 400 <= self.status < 500

    def __str__(self) -> str:
        head = "\n".join(f"  {n}: {v}" for n, v in self.headers)
        reset = " (stream reset)" if self.reset else ""
        return f"{self.protocol} {self.status}{reset}\n{head}\n  ---\n  {self.text[:1500]}"


def _connect(port: int, source: str | None, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


# --- HTTP/1.1 ---------------------------------------------------------------


def build_http1(method: str, target: str | bytes, headers: HeaderList, body: bytes = b"", *,
                version: str = "HTTP/1.1", content_length: bool = True, chunked: bool = False,
                chunk_size: int = 16, trailers: HeaderList = (), close: bool = True) -> bytes:
    """The bytes of one request. With chunked, the body goes in chunks of
    chunk_size, then the trailers; otherwise Content-Length is added (unless
    content_length=False or the headers have one)."""
    lines = [_b(method) + b" " + _b(target) + b" " + _b(version)]
    names = {_b(n).lower() for n, _ in headers}
    lines += [_b(n) + b": " + _b(v) for n, v in headers]
    if chunked:
        if b"transfer-encoding" not in names:
            lines.append(b"Transfer-Encoding: chunked")
    elif content_length and b"content-length" not in names and (body or method.upper() in ("POST", "PUT")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if close and b"connection" not in names:
        lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    if chunked:
        for i in range(0, len(body), max(1, chunk_size)):
            piece = body[i:i + chunk_size]
            data += f"{len(piece):x}".encode() + b"\r\n" + piece + b"\r\n"
        data += b"0\r\n" + b"".join(_b(n) + b": " + _b(v) + b"\r\n" for n, v in trailers) + b"\r\n"
    else:
        data += body
    return data


def _parse_chunked(data: bytes) -> bytes | None:
    """The body of a complete chunked message, or None if incomplete."""
    out, rest = b"", data
    while True:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            return out
        if size == 0:
            return out if b"\r\n" in rest or rest == b"" else None
        if len(rest) < size + 2:
            return None
        out, rest = out + rest[:size], rest[size + 2:]


def send_http1(port: int, data: bytes, *, source: str | None = None, timeout: float = 10.0,
               what: str = "") -> RawResponse:
    """Send raw request bytes on a new connection; the first response, read by
    its framing (Envoy lingers before closing, so reading to EOF is slow)."""
    return send_http1_pipelined(port, data, 1, source=source, timeout=timeout, what=what)[0]


def send_http1_pipelined(port: int, data: bytes, count: int, *, source: str | None = None, timeout: float = 10.0,
                         what: str = "") -> list[RawResponse]:
    """Send raw bytes holding `count` pipelined requests; their `count`
    responses, in order (fewer if the connection ends first)."""
    out: list[RawResponse] = []
    methods = [line.split(b" ", 1)[0].upper() for line in data.split(b"\r\n") if b" HTTP/1." in line]
    with _connect(port, source, timeout) as s:
        s.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout

        def more() -> bool:
            nonlocal buf
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return False
            buf += chunk
            return bool(chunk) and time.monotonic() < deadline

        for i in range(count):
            while b"\r\n\r\n" not in buf:
                if not more():
                    if not out:
                        out.append(RawResponse(protocol="HTTP/1.1", status=None, head=buf))
                    break
            else:
                head, _, _ = buf.partition(b"\r\n\r\n")
                status_line, *header_lines = head.split(b"\r\n")
                parts = status_line.split()
                status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
                headers = [(n.decode("latin-1").strip().lower(), v.strip().decode("latin-1"))
                           for n, _, v in (h.partition(b":") for h in header_lines)]
                response = RawResponse(protocol="HTTP/1.1", status=status, headers=headers, head=head)
                length = response.header("content-length")
                start = len(head) + 4
                method = methods[i] if i < len(methods) else b"GET"
                if method == b"HEAD" or status in (204, 304):
                    body, used = b"", 0
                elif length is not None and length.isdigit():
                    while len(buf) - start < int(length) and more():
                        pass
                    body, used = buf[start:start + int(length)], int(length)
                elif (response.header("transfer-encoding") or "").lower() == "chunked":
                    while (body := _parse_chunked(buf[start:])) is None and more():
                        pass
                    body = body or b""
                    end = buf.find(b"0\r\n\r\n", start)
                    used = (end + 5 - start) if end >= 0 else len(buf) - start
                else:
                    while more():
                        pass
                    body, used = buf[start:], len(buf) - start
                response.body = body
                buf = buf[start + used:]
                out.append(response)
                leakwatch.record_raw(port, what or _first_line(data), response)
                continue
            break
    if out and out[0].status is None:
        leakwatch.record_raw(port, what or _first_line(data), out[0])
    return out


def _first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("latin-1", errors="replace")


def http1(port: int, method: str, target: str | bytes, headers: HeaderList, body: bytes = b"", *,
          source: str | None = None, timeout: float = 10.0, **build: Any) -> RawResponse:
    """build_http1 + send_http1."""
    data = build_http1(method, target, headers, body, **build)
    return send_http1(port, data, source=source, timeout=timeout)


# --- HTTP/2 -------------------------------------------------------------------

_H2_CONFIG = dict(client_side=True, header_encoding=None, validate_outbound_headers=False,
                  normalize_outbound_headers=False, validate_inbound_headers=False,
                  normalize_inbound_headers=False)


def http2(port: int, method: str, path: str | bytes, authority: str | bytes | None, headers: HeaderList = (),
          body: bytes = b"", *, trailers: HeaderList = (), scheme: str = "http", frame_size: int | None = None,
          source: str | None = None, timeout: float = 10.0, ping_timeout: float = 0.4) -> RawResponse:
    """One request over cleartext HTTP/2 with prior knowledge (h2c), header
    bytes sent as given (the h2 library's checks are off). authority=None
    leaves :authority out. The body goes in DATA frames of at most
    frame_size bytes; trailers, if any, end the stream.

    A PING follows the request: Envoy answers it once its codec has taken
    the frames before it. When its codec refuses the request instead, it
    sends nothing and drops the connection a second later (delayed close);
    no PING answer within ping_timeout means that, and the answer is a
    reset (status None) without waiting for the drop."""
    pseudo: list[tuple[bytes, bytes]] = [(b":method", _b(method)), (b":scheme", _b(scheme)), (b":path", _b(path))]
    if authority is not None:
        pseudo.insert(1, (b":authority", _b(authority)))
    all_headers = pseudo + [(_b(n), _b(v)) for n, v in headers]
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(**_H2_CONFIG))
    response = RawResponse(protocol="HTTP/2", status=None)
    what = f"h2 {method} {_b(path).decode('latin-1')} :authority={authority!r}"
    state = {"ended": False, "pinged": False, "ping_acked": False}
    with _connect(port, source, timeout) as s:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()

        def pump(wait: float) -> None:
            ready, _, _ = select.select([s], [], [], max(0.0, wait))
            if not ready:
                return
            try:
                data = s.recv(65536)
            except OSError:  # reset by peer
                state["ended"], response.reset = True, True
                return
            if not data:
                state["ended"] = True
                return
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                state["ended"], response.reset = True, True
                return
            for event in events:
                if isinstance(event, h2.events.PingAckReceived):
                    state["ping_acked"] = True
                elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    for n, v in event.headers:
                        if n == b":status":
                            response.status = int(v)
                        else:
                            response.headers.append((n.decode("latin-1").lower(), v.decode("latin-1")))
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    response.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == sid:
                    response.trailers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    state["ended"] = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    state["ended"], response.reset = True, True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    state["ended"] = True
            out = conn.data_to_send()
            if out:
                try:
                    s.sendall(out)
                except OSError:
                    state["ended"], response.reset = True, True

        try:
            conn.send_headers(sid, all_headers, end_stream=not body and not trailers)
            s.sendall(conn.data_to_send())
            sent = 0
            while sent < len(body) and not state["ended"]:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                             frame_size or len(body))
                if window <= 0:
                    pump(timeout)
                    continue
                piece = body[sent:sent + window]
                sent += len(piece)
                conn.send_data(sid, piece, end_stream=sent >= len(body) and not trailers)
                s.sendall(conn.data_to_send())
            if trailers and not state["ended"]:
                conn.send_headers(sid, [(_b(n), _b(v)) for n, v in trailers], end_stream=True)
                s.sendall(conn.data_to_send())
            conn.ping(b"attack!!")
            s.sendall(conn.data_to_send())
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
            pass
        started = time.monotonic()
        deadline = started + timeout
        while not state["ended"] and time.monotonic() < deadline:
            if not state["ping_acked"] and response.status is None and time.monotonic() - started > ping_timeout:
                response.reset = True
                break
            pump(0.05)
    if response.status is None:
        response.reset = True
    leakwatch.record_raw(port, what, response)
    return response
