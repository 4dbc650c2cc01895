"""An HTTPS server for Client ID Metadata Documents, in the test process.

It serves whatever documents a test puts in `documents` (path -> JSON value)
at https://localhost:<port><path>, with a certificate for localhost and
127.0.0.1 issued by a throw-away test CA (made with `cryptography`, a
dependency of `mcp`). Envoy's `cimd` cluster trusts that CA and sends SNI
`localhost`, so the TLS check is real. Every request is remembered (path,
Host, User-Agent), so a test can tell that the filter fetched a document.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .procs import free_port

HOST = "localhost"


@dataclass
class TestCA:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_certificates(directory: Path) -> TestCA:
    """A CA and a server certificate for localhost / 127.0.0.1, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-oauth-filter e2e test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = TestCA(ca_pem=directory / "ca.pem", cert_pem=directory / "server.pem", key_pem=directory / "server.key")
    paths.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return paths


@dataclass
class CimdServer:
    port: int
    certs: TestCA
    documents: dict[str, Any] = field(default_factory=dict)  # path -> JSON value (or raw bytes)
    seen: list[dict[str, str | None]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"https://{HOST}:{self.port}{path}"

    def publish(self, path: str, document: Any) -> str:
        with self._lock:
            self.documents[path] = document
        return self.url(path)

    def requests_for(self, path: str) -> list[dict[str, str | None]]:
        with self._lock:
            return [r for r in self.seen if r["path"] == path]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_cimd_server(workdir: Path) -> CimdServer:
    certs = make_certificates(workdir / "cimd-tls")
    server = CimdServer(port=free_port(), certs=certs)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            with server._lock:
                server.seen.append({"path": path, "host": self.headers.get("Host"),
                                    "user-agent": self.headers.get("User-Agent")})
                document = server.documents.get(path)
            if document is None:
                body, status, ctype = b'{"error":"not found"}', 404, "application/json"
            elif isinstance(document, bytes):
                body, status, ctype = document, 200, "application/json"
            else:
                body, status, ctype = json.dumps(document).encode(), 200, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # requests are kept in server.seen

    httpd = ThreadingHTTPServer(("127.0.0.1", server.port), Handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert_pem, certs.key_pem)
    # The handshake happens in the handler's thread, on first read, so a slow
    # client cannot hold up the accept loop.
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    server._server = httpd
    threading.Thread(target=httpd.serve_forever, name="cimd-https", daemon=True).start()
    return server
