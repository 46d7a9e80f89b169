"""Shared fixtures: fresh ledgers, and skipping (or failing, in CI) when a service is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditledger import AuditLog

REQUIRE_SERVICES = os.environ.get("AUDITLEDGER_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> None:
    """Skip with ``reason`` on a laptop; fail when CI requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing (AUDITLEDGER_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(db_url: str) -> Iterator[AuditLog]:
    log = AuditLog.open(db_url)
    yield log
    log.close()
