"""Fixtures for shipping tests: a filled ledger and a local HTTP receiver that can be told to fail."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes  # as received
    body: bytes  # decompressed when Content-Encoding: gzip


Responder = Callable[[Request], tuple[int, bytes] | tuple[int, bytes, dict[str, str]]]


@dataclass
class Receiver:
    """Records every request; ``respond`` decides the answer; ``fail``/``hang`` inject faults first."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    respond: Responder = lambda r: (200, b"{}")
    failures: list[int] = field(default_factory=list)  # statuses to answer, one per request, before respond
    hangs: int = 0  # the next N requests sleep ``hang_seconds`` before answering
    hang_seconds: float = 2.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, req: Request) -> tuple[int, bytes] | tuple[int, bytes, dict[str, str]]:
        with self.lock:
            self.requests.append(req)
            status = self.failures.pop(0) if self.failures else None
            hang = self.hangs > 0
            if hang:
                self.hangs -= 1
        if hang:
            time.sleep(self.hang_seconds)
        if status is not None:
            return status, b'{"error": "injected failure"}'
        return self.respond(req)


def _server(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw, body)
            headers: dict[str, str] = {}
            try:
                answer = receiver.handle(req)
                status, payload = answer[0], answer[1]
                if len(answer) > 2:
                    headers = answer[2]
            except AssertionError as exc:  # a wire-format check failed: answer 400 so the test sees it
                status, payload = 400, f"wire check failed: {exc}".encode()
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout test)

        do_POST = do_PUT = do_GET = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    server = _server(rec)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rec
    server.shutdown()
    server.server_close()


def fill(log: AuditLog, n: int, *, tenant: str = "main", seed: int = 3) -> list[str]:
    """Record ``n`` demo events; returns their ids in seq order."""
    events = list(demo_events(n, seed=seed))
    ids: list[str] = []
    for start in range(0, n, 1000):
        ids += [r.id for r in log.record_many(events[start : start + 1000], tenant=tenant)]
    return ids


@pytest.fixture
def filled(ledger: AuditLog) -> tuple[AuditLog, list[str]]:
    return ledger, fill(ledger, 120)


FAST_RETRY = {"maxRetries": 4, "retryDelay": "PT0.01S", "maxRetryDelay": "PT0.05S"}
