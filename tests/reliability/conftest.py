"""Servers for the reliability tests: uvicorn in a thread on 127.0.0.1 with a fresh SQLite file and tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from auditledger import AuditLog
from auditledger.server import create_app
from auditledger.server.auth import Tokens
from auditledger.settings import Settings

ROLES = ("ingest", "auditor", "admin")


@dataclass
class Live:
    """A running server: its URL, its ledger (shared with the test) and one token per ``role@scope``."""

    url: str
    ledger: AuditLog
    settings: Settings
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def stop(self) -> None:
        """Stop the server and close the ledger (again at teardown is harmless)."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(15)
            self.server = None
        self.ledger.close()

    def client(self, who: str | None = "admin@*", **kwargs: Any) -> httpx.Client:
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


def serve(settings: Settings, ledger: AuditLog) -> tuple[Any, uvicorn.Server, threading.Thread, str]:
    app = create_app(settings, ledger)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return app, server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def make_live(tmp_path: Path) -> Iterator[Callable[..., Live]]:
    """A factory: ``make_live(**settings)`` starts a server on a fresh SQLite file; all stop at teardown."""
    running: list[Live] = []

    def make(**overrides: Any) -> Live:
        path = tmp_path / f"ledger{len(running)}.db"
        settings = Settings(**{"db": f"sqlite:///{path}", **overrides})
        ledger = AuditLog.open(settings.db)
        tokens = Tokens(ledger.store)
        secrets = {f"{role}@{scope}": tokens.create(role, scope)[0] for role in ROLES for scope in ("acme", "*")}
        app, server, thread, url = serve(settings, ledger)
        live = Live(url, ledger, settings, app, secrets, server, thread)
        running.append(live)
        return live

    yield make
    for live in running:
        live.stop()
