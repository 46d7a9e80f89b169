"""The example app auditing into an embedded ledger behind a durable spool."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from examples.workflow_platform.__main__ import main, open_sink
from examples.workflow_platform.app import create_app
from tests.examples.platform_calls import ADMIN, FLOW_V1, assert_the_update, call, create_and_change

from auditledger import AuditLog
from auditledger.errors import ConfigError
from auditledger.spool import Spooled
from auditledger.testing import recorded


def test_a_put_ends_in_the_ledger_with_exactly_its_events_once_flushed(tmp_path: Path) -> None:
    """Create and change a flow through the API: once flushed the ledger holds exactly the expected events, once."""
    ledger = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    spool = Spooled(ledger, flush_interval=3600)  # nothing drains until flush()
    app = create_app(f"sqlite:///{tmp_path / 'app.db'}", sink=spool, admin_token=ADMIN)

    async def steps(http: httpx.AsyncClient) -> None:
        await create_and_change(http)
        same = await http.put("/api/v1/flows/company.team/hello", content=FLOW_V1 + "# v2\n")
        assert same.status_code == 200  # unchanged source: no revision, no event

    call(app, steps)
    assert spool.pending == 3 and ledger.count() == 0  # the bootstrap admin, the flow's CREATE and UPDATE
    spool.flush()
    spool.flush()  # a second drain finds nothing more to place
    events = recorded(ledger)
    assert [(e["resource_type"], e["action"]) for e in events] == [("USER", "CREATE"), ("FLOW", "CREATE"),
                                                                     ("FLOW", "UPDATE")]
    update = events[-1]
    assert_the_update(update)
    assert update["occurred_at"] <= update["date"]
    spool.close()
    assert ledger.verify().sizes == {"main": 3}
    ledger.close()


def test_the_example_s_command_line_opens_a_spool_and_refuses_combinations_that_make_no_sense(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--spool`` wraps the embedded ledger (its spool beside it); with a server or --ledger-in-db it is an error."""
    sink = open_sink(f"sqlite:///{tmp_path / 'audit.db'}", None, spool=True)
    assert isinstance(sink, Spooled)
    assert sink.path == tmp_path / "audit.db-spool"
    sink.close()
    sink.ledger.close()
    with pytest.raises(ConfigError, match="--spool is for an embedded --ledger"):
        open_sink("http://127.0.0.1:9", "alt_x", spool=True)
    assert main(["--ledger-in-db", "--spool", "--db", f"sqlite:///{tmp_path / 'app.db'}"]) == 2
    assert "--ledger-in-db and --spool exclude each other" in capsys.readouterr().err
