"""A real server for the HTTP tests: uvicorn in a thread on 127.0.0.1, a random port, a fresh SQLite file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from auditledger import AuditLog
from auditledger.server import Tokens, create_app
from auditledger.settings import Settings


class Session:
    """Requests as one token over the module's shared connection pool (an httpx.Client is costly to make)."""

    def __init__(self, http: httpx.Client, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@dataclass
class Live:
    url: str
    ledger: AuditLog
    settings: Settings
    http: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)  # "role@tenant" -> secret

    def client(self, who: str | None = "admin@*") -> Session:
        return Session(self.http, {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"})

    def as_header(self, secret: str | None) -> dict[str, str]:
        return {} if secret is None else {"Authorization": f"Bearer {secret}"}


def start(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def make_tokens(ledger: AuditLog) -> dict[str, str]:
    tokens = Tokens(ledger.store)
    out: dict[str, str] = {}
    for role in ("ingest", "auditor", "admin"):
        for tenant in ("acme", "globex", "*"):
            out[f"{role}@{tenant}"] = tokens.create(role, tenant)[0]
    secret, info = tokens.create("admin", "*", name="revoked")
    tokens.revoke(info.id)
    out["revoked"] = secret
    secret, info = tokens.create("admin", "*", expires_at=datetime.now(UTC) + timedelta(seconds=1))
    out["expiring"] = secret
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    path: Path = tmp_path_factory.mktemp("server") / "ledger.db"
    settings = Settings(db=f"sqlite:///{path}", max_body_bytes=2 << 20, max_batch=1000, count_cap=1000)
    ledger = AuditLog.open(settings.db)
    tokens = make_tokens(ledger)
    server, thread, url = start(create_app(settings, ledger))
    http = httpx.Client(base_url=url, timeout=30)
    yield Live(url, ledger, settings, http, tokens)
    http.close()
    server.should_exit = True
    thread.join(10)
    ledger.close()
