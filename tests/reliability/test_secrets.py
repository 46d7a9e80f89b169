"""Secrets: token values never reach the server's log, and a signing key readable by others stops the start."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest
from bench.soak import ServerProcess

from auditledger import AuditLog
from auditledger import checkpoint as ck
from auditledger.errors import ConfigError
from auditledger.server import create_app
from auditledger.server.auth import Tokens
from auditledger.settings import Settings


@pytest.mark.slow
def test_token_values_never_logged(tmp_path: Path) -> None:
    """At debug level, requests with valid, unknown, revoked and form-posted tokens leave no token value in the log."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with AuditLog.open(url) as ledger:
        tokens = Tokens(ledger.store)
        admin, _ = tokens.create("admin", "*")
        revoked, info = tokens.create("auditor", "acme")
        tokens.revoke(info.id)
    log = tmp_path / "server.log"
    server = ServerProcess(url, env={"AUDITLEDGER_LOG_LEVEL": "debug"}, log=log)
    server.start()
    guess = "alt_" + "G" * 43
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for secret in (admin, guess, revoked):
                headers = {"Authorization": f"Bearer {secret}"}
                http.get("/api/v1/acme/auditlogs/search", headers=headers)
                http.post("/api/v1/acme/auditlogs", headers=headers, json={
                    "resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "a"}})
                http.post("/ui/signin", data={"token": secret, "csrf": "x"})
            created = http.post("/ui/admin/tokens", headers={"Authorization": f"Bearer {admin}"},
                                data={"role": "auditor", "tenant": "acme"})
            assert created.status_code < 500
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert "authentication failed from 127.0.0.1: unknown API token" in text, "the log was captured"
    assert '"GET /api/v1/acme/auditlogs/search HTTP/1.1"' in text
    for secret in (admin, guess, revoked):
        assert secret not in text
        assert secret[4:16] not in text, "not even a fragment of it"
    assert re.search(r"alt_[A-Za-z0-9_-]{20,}", text) is None


def test_signing_key_readable_by_others_stops_the_start(tmp_path: Path) -> None:
    """A signing key file with mode 0644 makes the server's start fail with the chmod to run; 0600 starts."""
    key = tmp_path / "signing.pem"
    ck.save_private_key(ck.generate_key(), key)
    assert os.stat(key).st_mode & 0o777 == 0o600, "keys are written owner-only"

    async def start(app: object) -> None:
        async with app.router.lifespan_context(app):  # type: ignore[attr-defined]
            pass

    settings = Settings(db=f"sqlite:///{tmp_path / 'ledger.db'}", signing_key_file=str(key))
    asyncio.run(start(create_app(settings)))
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"accessible by group or others \(mode 0644\); run: chmod 600"):
        asyncio.run(start(create_app(settings)))
