"""Syslog exporter against real socket receivers: RFC 5424 messages, octet counting on TCP and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auditledger import AuditLog
from auditledger.ship import run_shipper
from tests.ship.conftest import FAST_RETRY

# RFC 5424 §6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,6}Z) (?P<host>[!-~]{1,255}) "
    rb"(?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    rb"(?P<sd>\[[!-~]+@\d+(?: [^ =\]\"]+=\"(?:[^\"\\\]]|\\.)*\")*\]) \xef\xbb\xbf(?P<msg>.*)",
    re.DOTALL,
)


def read_octet_counted(conn: socket.socket | ssl.SSLSocket) -> list[bytes]:
    """Parse RFC 6587 octet-counted frames until the peer closes."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    frames = []
    while data:
        length, sep, rest = data.partition(b" ")
        assert sep and length.isdigit(), f"bad frame header {data[:20]!r}"
        n = int(length)
        assert len(rest) >= n, "frame cut short"
        frames.append(rest[:n])
        data = rest[n:]
    return frames


class TcpReceiver:
    def __init__(self, tls: ssl.SSLContext | None = None, read_after: float = 0.0, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.frames: list[bytes] = []
        self.tls = tls
        self.read_after = read_after  # seconds a connection's bytes wait unread (a slow receiver)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                time.sleep(self.read_after)
                with conn:
                    self.frames += read_octet_counted(conn)
            except (ssl.SSLError, OSError):
                conn.close()  # a refused handshake: the client reports it

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tcp() -> Iterator[TcpReceiver]:
    rec = TcpReceiver()
    yield rec
    rec.close()


def _check(frame: bytes) -> tuple[re.Match[bytes], bytes]:
    match = RFC5424.fullmatch(frame)
    assert match is not None, frame[:200]
    return match, match.group("msg")


def _wait(rec: TcpReceiver, n: int) -> None:
    for _ in range(200):
        if len(rec.frames) >= n:
            return
        threading.Event().wait(0.02)


def test_tcp_octet_counting_rfc5424(filled: tuple[AuditLog, list[str]], tcp: TcpReceiver) -> None:
    """Every event arrives as one octet-counted RFC 5424 message with the id in structured data."""
    log, ids = filled
    out = run_shipper(log, {"logExporters": [{"id": "s", "type": "syslog", "host": "127.0.0.1", "port": tcp.port,
                                              "protocol": "tcp", "hostname": "auditor"}], **FAST_RETRY})
    assert out["errors"] == {}
    _wait(tcp, 120)
    assert len(tcp.frames) == 120
    got = []
    for frame in tcp.frames:
        match, msg = _check(frame)
        assert int(match.group("pri")) in (13 * 8 + 6, 13 * 8 + 4)  # facility 13 (log audit)
        assert match.group("host") == b"auditor" and match.group("app") == b"auditledger"
        record = orjson.loads(msg)
        assert f'id="{record["id"]}"'.encode() in match.group("sd")
        assert match.group("msgid") == record["action"].encode()
        got.append(record["id"])
    assert got == ids


def test_udp_one_message_per_datagram(filled: tuple[AuditLog, list[str]]) -> None:
    """Over UDP each datagram is exactly one RFC 5424 message (RFC 5426), CEF as the MSG."""
    log, ids = filled
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.settimeout(2)
    try:
        out = run_shipper(log, {"logExporters": [{"id": "u", "type": "syslog", "host": "127.0.0.1",
                                                  "port": sock.getsockname()[1], "protocol": "udp",
                                                  "format": "cef"}]})
        assert out["errors"] == {}
        msgs = [_check(sock.recv(65535))[1] for _ in ids]
    finally:
        sock.close()
    assert all(m.startswith(b"CEF:0|auditledger|auditledger|1|") for m in msgs)
    found = [re.search(rb"externalId=(\S+)", m) for m in msgs]
    assert [f.group(1).decode() for f in found if f is not None] == ids


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("read_after", [0.0, 0.5], ids=["prompt", "slow-receiver"])
def test_tls_with_a_verified_certificate(
    filled: tuple[AuditLog, list[str]], tmp_path: Path, read_after: float
) -> None:
    """Over TLS (RFC 5425) the server certificate is verified against caFile and framing is octet counting.

    A receiver that reads only after the shipper has finished still gets every frame: the
    shipper's close must not reset the connection (it holds the server's unread session tickets).
    """
    log, ids = filled
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    rec = TcpReceiver(tls=ctx, read_after=read_after)
    try:
        out = run_shipper(log, {"logExporters": [{"id": "t", "type": "syslog", "host": "127.0.0.1", "port": rec.port,
                                                  "protocol": "tls", "caFile": str(cert), "format": "ecs"}]})
        assert out["errors"] == {}
        _wait(rec, 120)
        assert [orjson.loads(_check(f)[1])["event"]["id"] for f in rec.frames] == ids
    finally:
        rec.close()


def test_tls_refuses_an_unknown_certificate(filled: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    """Without the CA the handshake fails: an error is reported and nothing is counted as shipped."""
    log, _ = filled
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    rec = TcpReceiver(tls=ctx)
    try:
        out = run_shipper(log, {"logExporters": [{"id": "t", "type": "syslog", "host": "127.0.0.1", "port": rec.port,
                                                  "protocol": "tls", "timeout": "PT1S"}], "maxRetries": 0})
        assert "cannot connect" in out["errors"]["t"] and out["offsets"] == {"t": 0}
    finally:
        rec.close()


def test_connection_refused_then_receiver_appears(filled: tuple[AuditLog, list[str]]) -> None:
    """A receiver that is down fails the run without moving the offset; the next run ships everything."""
    log, ids = filled
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    spec = {"logExporters": [{"id": "s", "type": "syslog", "host": "127.0.0.1", "port": port}], **FAST_RETRY}
    out = run_shipper(log, spec)
    assert out["offsets"] == {"s": 0} and "cannot connect" in out["errors"]["s"]
    rec = TcpReceiver(port=port)
    try:
        out = run_shipper(log, spec)
        assert out["errors"] == {} and out["offsets"] == {"s": 120}
        _wait(rec, 120)
        assert [orjson.loads(_check(f)[1])["id"] for f in rec.frames] == ids
    finally:
        rec.close()
