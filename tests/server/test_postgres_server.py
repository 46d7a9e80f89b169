"""The same server on PostgreSQL: tokens (migration 0003), ingest, idempotent retry, search and facets."""

from __future__ import annotations

import pytest

from auditledger import AuditLog
from auditledger.server import Tokens, create_app
from auditledger.settings import Settings
from tests.server.conftest import start
from tests.store.pg import pg_schema

pytestmark = pytest.mark.postgres


def test_server_on_postgres() -> None:
    """Tokens authenticate, a retried batch is stored once, and Kestra search answers on PostgreSQL."""
    import httpx

    with pg_schema() as url:
        ledger = AuditLog.open(url)
        tokens = Tokens(ledger.store)
        ingest, _ = tokens.create("ingest", "acme")
        auditor, _ = tokens.create("auditor", "acme")
        server, thread, base = start(create_app(Settings(db=url), ledger))
        try:
            with httpx.Client(base_url=base, timeout=30) as http:
                batch = [
                    {"resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "anna"},
                     "details": {"namespace": "company.team", "id": f"f{i}"}, "idempotency_key": f"k{i}"}
                    for i in range(5)
                ]
                h_in = {"Authorization": f"Bearer {ingest}"}
                first = http.post("/api/v1/acme/auditlogs", json=batch, headers=h_in).json()
                again = http.post("/api/v1/acme/auditlogs", json=batch, headers=h_in).json()
                assert again["ids"] == first["ids"] and first["seqs"] == [0, 1, 2, 3, 4]
                h_read = {"Authorization": f"Bearer {auditor}"}
                assert http.get("/api/v1/acme/auditlogs/search", headers=h_in).status_code == 403
                answer = http.get(
                    "/api/v1/acme/auditlogs/search",
                    params={"filters[namespace][PREFIX]": "company", "facets": "true", "size": 2},
                    headers=h_read,
                ).json()
                assert answer["total"] == 5 and len(answer["results"]) == 2 and answer["cursor"]
                assert answer["facets"]["action"] == {"UPDATE": 5}
                tokens.revoke(tokens.list()[1].id)
                assert http.get("/api/v1/acme/auditlogs/search", headers=h_read).status_code == 401
        finally:
            server.should_exit = True
            thread.join(10)
            ledger.close()
