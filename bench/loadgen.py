"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, each
sending the same pre-built request again as soon as the previous answer is
complete, for a fixed time. One thread, non-blocking sockets and a selector,
so the generator's own cost per request stays small (a few syscalls); its CPU
is not what the benchmark measures anyway (Envoy's is).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

RECV_SIZE = 256 * 1024


@dataclass
class LoadResult:
    requests: int = 0
    elapsed: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    reconnects: int = 0  # connections Envoy closed without saying so first
    closes: int = 0  # answers with "connection: close" (a new connection each)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


class _Conn:
    __slots__ = ("buf", "chunked", "close", "need", "out", "sent", "sock", "status")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = memoryview(b"")
        self.sent = 0
        self.buf = bytearray()
        self.need = -1  # total bytes of the current response, once its head is read
        self.status = 0
        self.chunked = False
        self.close = False


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    return s


def _chunked_end(buf: bytearray, start: int) -> int:
    """Offset just past a complete chunked body starting at `start`, or -1."""
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # trailers, if any, end with an empty line
            return -1 if end < 0 else end + 4
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return -1


def _response_complete(c: _Conn) -> bool:
    if c.need < 0:
        head_end = c.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = bytes(c.buf[:head_end]).lower()
        c.status = int(head[9:12])
        c.chunked = b"\r\ntransfer-encoding: chunked" in head
        c.close = b"\r\nconnection: close" in head
        length = 0
        if not c.chunked:
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                eol = head.find(b"\r\n", i + 2)
                length = int(head[i + 17:eol if eol > 0 else len(head)])
        c.need = head_end + 4 + length
    if c.chunked:
        end = _chunked_end(c.buf, c.need)
        if end < 0:
            return False
        del c.buf[:end]
        return True
    if len(c.buf) < c.need:
        return False
    del c.buf[:c.need]
    return True


def run(port: int, request: bytes, *, duration: float, connections: int) -> LoadResult:
    """Send `request` over `connections` connections for `duration` seconds."""
    result = LoadResult()
    sel = selectors.DefaultSelector()
    payload = memoryview(request)

    def start(c: _Conn) -> None:
        c.out, c.sent, c.need, c.chunked, c.close = payload, 0, -1, False, False
        write(c)

    def write(c: _Conn) -> None:
        try:
            while c.sent < len(c.out):
                c.sent += c.sock.send(c.out[c.sent:])
        except BlockingIOError:
            sel.modify(c.sock, selectors.EVENT_WRITE, c)
            return
        sel.modify(c.sock, selectors.EVENT_READ, c)

    conns = []
    for _ in range(connections):
        c = _Conn(_connect(port))
        sel.register(c.sock, selectors.EVENT_READ, c)
        conns.append(c)
    t0 = time.perf_counter()
    deadline = t0 + duration
    for c in conns:
        start(c)
    open_conns = len(conns)
    while open_conns:
        for key, events in sel.select(timeout=5.0):
            c = key.data
            if events & selectors.EVENT_WRITE:
                write(c)
                continue
            try:
                data = c.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                data = b""
            if not data:  # closed by Envoy: count it, and carry on over a new connection
                sel.unregister(c.sock)
                c.sock.close()
                result.reconnects += 1
                if time.perf_counter() < deadline:
                    c.sock, c.buf = _connect(port), bytearray()
                    sel.register(c.sock, selectors.EVENT_READ, c)
                    start(c)
                else:
                    open_conns -= 1
                continue
            c.buf += data
            if not _response_complete(c):
                continue
            result.requests += 1
            result.statuses[c.status] += 1
            more = time.perf_counter() < deadline
            result.closes += c.close
            if c.close or not more:
                sel.unregister(c.sock)
                c.sock.close()
                if not more:
                    open_conns -= 1
                    continue
                c.sock, c.buf = _connect(port), bytearray()
                sel.register(c.sock, selectors.EVENT_READ, c)
            start(c)
    result.elapsed = time.perf_counter() - t0
    sel.close()
    return result


def http_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
