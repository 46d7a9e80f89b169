"""The example app auditing through a transactional outbox in its own database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from examples.workflow_platform.__main__ import main, open_sink
from examples.workflow_platform.app import app_engine, create_app
from tests.examples.platform_calls import ADMIN, assert_the_update, call, create_and_change

from auditledger import AuditLog
from auditledger.integrations.outbox import Outbox
from auditledger.testing import recorded


def outbox_rows(app_db: Path) -> list[tuple[str, int, bytes]]:
    with sqlite3.connect(app_db) as conn:
        return conn.execute("SELECT tenant, count, events FROM auditledger_outbox ORDER BY id").fetchall()


def test_each_commit_s_events_are_a_row_of_the_app_s_database_until_drained(tmp_path: Path) -> None:
    """Create and change a flow: each commit leaves one outbox row in the app's file, a refused request none;
    once drained the ledger holds exactly the expected events, and the outbox is empty."""
    app_db = tmp_path / "app.db"
    ledger = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    engine = app_engine(f"sqlite:///{app_db}")
    outbox = Outbox(engine, ledger, flush_interval=3600)  # nothing drains until flush()
    app = create_app(f"sqlite:///{app_db}", sink=outbox, admin_token=ADMIN, engine=engine)

    async def steps(http: httpx.AsyncClient) -> None:
        await create_and_change(http)
        refused = await http.put("/api/v1/flows/company.team/hello", content="id: hello\n")
        assert refused.status_code == 422  # no namespace, no tasks: nothing changes, nothing is written

    call(app, steps)
    rows = outbox_rows(app_db)
    assert [(tenant, count) for tenant, count, _ in rows] == [("main", 1)] * 3  # the bootstrap admin, CREATE, UPDATE
    assert not any(ADMIN.encode() in blob for _, _, blob in rows)  # the secret columns are masked before they leave
    assert outbox.pending == 3 and ledger.count() == 0
    outbox.flush()
    assert outbox_rows(app_db) == [] and outbox.pending == 0
    events = recorded(ledger)
    assert [(e["resource_type"], e["action"]) for e in events] == [
        ("USER", "CREATE"),
        ("FLOW", "CREATE"),
        ("FLOW", "UPDATE"),
    ]
    update = events[-1]
    assert_the_update(update)
    assert update["occurred_at"] <= update["date"]
    created = events[0]["after"]
    assert created["email"] == "admin@example.com"
    assert created["password_hash"] == "[masked]" and created["api_token"] == "[masked]"
    outbox.close()
    assert ledger.verify().sizes == {"main": 3}
    ledger.close()


def test_the_example_s_command_line_opens_an_outbox_and_refuses_it_beside_another_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--outbox`` puts the outbox in the platform's database in front of the ledger; with --spool or
    --ledger-in-db it is an error that names both."""
    engine = app_engine(f"sqlite:///{tmp_path / 'app.db'}")
    sink = open_sink(f"sqlite:///{tmp_path / 'audit.db'}", None, outbox=engine)
    assert isinstance(sink, Outbox) and isinstance(sink.sink, AuditLog)
    assert sink.engine is engine
    sink.close()
    sink.sink.close()
    app_db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["--outbox", "--spool", "--db", app_db]) == 2
    assert "--spool and --outbox exclude each other" in capsys.readouterr().err
    assert main(["--ledger-in-db", "--outbox", "--db", app_db]) == 2
    assert "--ledger-in-db and --outbox exclude each other" in capsys.readouterr().err
