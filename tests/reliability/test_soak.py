"""Crash safety: the short form of bench/soak.py on SQLite and on PostgreSQL (SIGKILL while ingesting over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import soak

from tests.conftest import service_missing

# Short form for CI: two kills per store keep the run around a minute on the slow machine;
# `python bench/soak.py --long` does 20 per store.
KILLS = 2


def _check(result: soak.SoakResult) -> None:
    print(result.line())
    assert result.problems == [], result.problems
    assert result.acknowledged > 0, "the load generators made progress"
    assert result.sent == result.acknowledged, "every batch was eventually acknowledged"
    assert result.lost == 0
    assert result.duplicates == 0, "retried batches were stored once (idempotency keys)"
    assert result.unexpected == 0
    assert result.stored == result.acknowledged
    assert result.verified


@pytest.mark.slow
def test_sigkill_soak_sqlite(tmp_path: Path) -> None:
    """Every acknowledged event survives SIGKILLs of the server exactly once, and the SQLite ledger verifies."""
    result = soak.run_soak(f"sqlite:///{tmp_path / 'soak.db'}", label="sqlite", kills=KILLS, seed=7,
                           log=tmp_path / "server.log")
    _check(result)


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_soak_postgres(tmp_path: Path) -> None:
    """Every acknowledged event survives SIGKILLs of the server exactly once, and the PostgreSQL ledger verifies."""
    import psycopg

    try:
        database = soak.pg_database()
        url = database.__enter__()
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL not reachable at {soak.PG_SERVER}: {str(exc).strip()[:200]}")
        return
    try:
        result = soak.run_soak(url, label="postgresql", kills=KILLS, seed=11, log=tmp_path / "server.log")
    finally:
        database.__exit__(None, None, None)
    _check(result)
