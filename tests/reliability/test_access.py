"""Access: revocation and expiry act at once, guessing tokens is rate-limited, token changes and (optionally)
reads are audit events."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from auditledger import AuditLog
from auditledger.jobs import Jobs
from auditledger.model import Actor
from auditledger.retention import PurgeFilter, Retention
from auditledger.server.auth import ACCESS_TENANT, Tokens
from tests.jobs.test_jobs import KESTRA_EXAMPLE
from tests.reliability.conftest import Live

SEARCH = "/api/v1/acme/auditlogs/search"


def test_revocation_takes_effect_at_once(make_live: Callable[..., Live]) -> None:
    """A token revoked by another process (the CLI) is refused on the very next request."""
    live = make_live()
    secret, info = Tokens(live.ledger.store).create("auditor", "acme")
    headers = {"Authorization": f"Bearer {secret}"}
    with live.client(None) as http:
        assert http.get(SEARCH, headers=headers).status_code == 200
        with AuditLog.open(live.settings.db) as cli:  # a second connection, as `auditledger token revoke` has
            Tokens(cli.store).revoke(info.id)
        answer = http.get(SEARCH, headers=headers)
        assert answer.status_code == 401 and "revoked" in answer.json()["message"]


def test_expiry_takes_effect_at_once(make_live: Callable[..., Live]) -> None:
    """A token works until its expiry and is refused right after it."""
    live = make_live()
    expires = datetime.now(UTC) + timedelta(seconds=3)
    secret, _ = Tokens(live.ledger.store).create("auditor", "acme", expires_at=expires)
    with live.client(None) as http:
        headers = {"Authorization": f"Bearer {secret}"}
        assert http.get(SEARCH, headers=headers).status_code == 200
        assert datetime.now(UTC) < expires, "the first request was answered before the expiry"
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
        answer = http.get(SEARCH, headers=headers)
        assert answer.status_code == 401 and "expired" in answer.json()["message"]


def test_guessing_tokens_is_rate_limited(make_live: Callable[..., Live]) -> None:
    """After the allowed number of unknown tokens a source gets 429 with Retry-After, even with a valid token."""
    live = make_live(auth_failures_per_minute=5)
    with live.client(None) as http:
        for i in range(5):
            answer = http.get(SEARCH, headers={"Authorization": f"Bearer alt_guess{i}"})
            assert answer.status_code == 401
        answer = http.get(SEARCH, headers={"Authorization": "Bearer alt_guess5"})
        assert answer.status_code == 429
        assert int(answer.headers["retry-after"]) >= 1
        assert "too many failed authentications" in answer.json()["message"]
        valid = http.get(SEARCH, headers={"Authorization": f"Bearer {live.tokens['auditor@acme']}"})
        assert valid.status_code == 429, "a blocked source is refused before its token is looked at"


def test_stale_credentials_are_not_counted_as_guesses(make_live: Callable[..., Live]) -> None:
    """Revoked tokens and malformed headers get 401 each time without locking the source out."""
    live = make_live(auth_failures_per_minute=3)
    secret, info = Tokens(live.ledger.store).create("auditor", "acme")
    Tokens(live.ledger.store).revoke(info.id)
    with live.client(None) as http:
        for _ in range(6):
            assert http.get(SEARCH, headers={"Authorization": f"Bearer {secret}"}).status_code == 401
            assert http.get(SEARCH, headers={"Authorization": "Basic abc"}).status_code == 401
        assert http.get(SEARCH, headers={"Authorization": f"Bearer {live.tokens['auditor@acme']}"}).status_code == 200


def test_token_changes_are_audit_events(make_live: Callable[..., Live]) -> None:
    """Creating and revoking a token records CREDENTIAL CREATE/DELETE in the access tenant, without the secret."""
    live = make_live()
    tokens = Tokens(live.ledger.store)
    secret, info = tokens.create("auditor", "acme", name="ci reader")
    tokens.revoke(info.id)
    events = [e for e in live.ledger.iter_search(tenant=ACCESS_TENANT) if e.details.get("id") == info.id]
    assert sorted(e.action for e in events) == ["CREATE", "DELETE"]
    for event in events:
        assert event.resource_type == "CREDENTIAL"
        assert event.details == {"id": info.id, "role": "auditor", "tenant": "acme", "kind": "api_token"}
        assert event.actor.id == "auditledger-cli"
        body = str(event.to_dict())
        assert secret not in body and secret[4:20] not in body
    # Six tokens from the fixture, one here: seven creations, one revocation, and the ledger verifies.
    assert live.ledger.verify(tenant=ACCESS_TENANT).sizes[ACCESS_TENANT] == 8
    with live.client("admin@*") as http:
        answer = http.get(f"/api/v1/{ACCESS_TENANT}/auditlogs/search", params={"q": "resource:CREDENTIAL"})
        assert answer.status_code == 200 and answer.json()["total"] == 8


def test_reads_are_audited_when_the_setting_is_on(make_live: Callable[..., Live]) -> None:
    """With audit_reads each read is an AUDITLOG/READ event by the reading token; without it nothing is added."""
    quiet, loud = make_live(), make_live(audit_reads=True)
    for live in (quiet, loud):
        with live.client("auditor@acme") as http:
            assert http.get(SEARCH, params={"q": "resource:FLOW"}).status_code == 200
            assert http.get(SEARCH).status_code == 200
    assert quiet.ledger.verify().sizes.get("acme", 0) == 0
    reads = list(loud.ledger.iter_search(tenant="acme"))
    assert [(e.resource_type, e.action) for e in reads] == [("AUDITLOG", "READ")] * 2
    reader = next(t.id for t in Tokens(loud.ledger.store).list() if (t.role, t.tenant) == ("auditor", "acme"))
    assert all(e.actor.type == "SERVICE_ACCOUNT" and e.actor.id == reader for e in reads)
    assert {e.details.get("query") for e in reads} == {"q=resource%3AFLOW", None}


def test_every_administrative_action_is_an_audit_event(tmp_path: Path) -> None:
    """Token created/revoked, job created/changed, legal hold placed/released and purge each append their event."""
    with AuditLog.open(f"sqlite:///{tmp_path / 'admin.db'}") as ledger:
        admin = Actor.user("root@acme.io")
        ledger.record("FLOW", "UPDATE", {"type": "USER", "id": "anna"}, details={"namespace": "company.team"})
        tokens = Tokens(ledger.store)
        _, info = tokens.create("auditor", "main", actor=admin)
        tokens.revoke(info.id, actor=admin)
        jobs = Jobs(ledger)
        jobs.apply(KESTRA_EXAMPLE, actor=admin)
        jobs.apply(KESTRA_EXAMPLE.replace("1 month", "one month"), actor=admin)
        retention = Retention(ledger, min_age=timedelta(0))
        hold = retention.create_hold("namespace:company.team", "case 42", actor=admin)
        retention.release_hold(hold.id, actor=admin)
        retention.purge(PurgeFilter(end_date=datetime.now(UTC) + timedelta(seconds=1), namespace="company.team"),
                        actor=admin, force=True)
        seen = [(e.tenant, e.resource_type, e.action) for e in ledger.iter_search(tenant=None)
                if e.actor.id == "root@acme.io"]
        assert sorted(seen) == sorted([
            (ACCESS_TENANT, "CREDENTIAL", "CREATE"), (ACCESS_TENANT, "CREDENTIAL", "DELETE"),
            ("main", "FLOW", "CREATE"), ("main", "FLOW", "UPDATE"),
            ("main", "LEGAL_HOLD", "CREATE"), ("main", "LEGAL_HOLD", "DELETE"),
            ("main", "AUDITLOG", "DELETE"),
        ])
        ledger.verify()

