"""The auditledger command: demo, search, show, record, verify, and one-line errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from auditledger import AuditLog
from auditledger.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_demo_then_search_returns_the_right_rows(db_url: str) -> None:
    """demo fills the ledger; a namespace search returns only that namespace and its children."""
    code, out, _ = run("demo", "--events", "2000", "--db", db_url)
    assert code == 0, out
    code, out, _ = run("search", "namespace:company.finance action:UPDATE", "--json", "--limit", "1000", "--db", db_url)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows, "the demo has finance updates"
    for row in rows:
        assert row["details"]["namespace"].startswith("company.finance") and row["action"] == "UPDATE"
    with AuditLog.open(db_url) as log:
        expected = [
            e.id
            for e in log.iter_search()
            if e.action == "UPDATE" and (e.details.get("namespace", "") + ".").startswith("company.finance.")
        ]
    assert [r["id"] for r in rows] == expected[:1000]


def test_record_show_and_verify(db_url: str, tmp_path: Path) -> None:
    """record stores an event that show prints and verify accepts."""
    source = tmp_path / "flow.yaml"
    source.write_text("id: hello\nnamespace: company\n")
    code, out, _ = run(
        "record",
        "FLOW",
        "CREATE",
        "--actor",
        "anna@acme.io",
        "-d",
        "namespace=company",
        "-d",
        "flowId=hello",
        "--after",
        f"@{source}",
        "--db",
        db_url,
    )
    assert code == 0, out
    event_id = out.split()[0]
    code, out, _ = run("show", event_id, "--db", db_url)
    shown = json.loads(out)
    assert shown["after"] == "id: hello\nnamespace: company\n" and shown["details"]["flowId"] == "hello"
    code, out, _ = run("verify", "--db", db_url)
    assert code == 0 and "1 positions verified" in out


def test_errors_are_one_line_and_non_zero(db_url: str) -> None:
    """Bad input prints one clear line naming the problem and exits 1, no traceback."""
    code, _, err = run("record", "flow", "CREATE", "--db", db_url)
    assert code == 1 and err.startswith("error: events[0].resource_type") and "Traceback" not in err
    code, _, err = run("search", 'flowId:"open', "--db", db_url)
    assert code == 1 and "unterminated quote" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("show", "nope", "--db", db_url)
    assert code == 1 and "no event 'nope'" in err
    code, _, err = run("search", "--db", "mysql://x")
    assert code == 1 and "unsupported store URL" in err


def test_verify_names_the_first_bad_seq(db_url: str) -> None:
    """verify exits 1 and names the seq of an edited event."""
    run("demo", "--events", "300", "--db", db_url)
    path = db_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET body = replace(body, '\"actor\"', '\"actor\" ') WHERE seq = 123")
    conn.commit()
    conn.close()
    code, _, err = run("verify", "--db", db_url)
    assert code == 1 and "seq 123" in err


def test_serve_tunes_the_garbage_collector() -> None:
    """``serve`` freezes what the process loaded and makes young collections rarer (ingest's objects are
    freed by reference counting; the default threshold cost a third of the event loop's time)."""
    import gc

    from auditledger.cli.serve import GC_THRESHOLD, tune_gc

    old = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLD and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
