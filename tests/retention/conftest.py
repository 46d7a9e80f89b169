"""A small demo ledger spread over 90 days, built once and copied for each test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events

TENANTS = {"main": 600, "other": 150}


@dataclass(frozen=True)
class Stored:
    id: str
    tenant: str
    date: datetime
    resource_type: str
    action: str
    details: dict[str, str]


@dataclass(frozen=True)
class Base:
    path: Path
    now: datetime
    events: list[Stored]


@pytest.fixture(scope="session")
def base_ledger(tmp_path_factory: pytest.TempPathFactory) -> Base:
    path = tmp_path_factory.mktemp("retention") / "base.db"
    now = datetime.now(UTC)
    log = AuditLog.open(f"sqlite:///{path}")
    for seed, (tenant, n) in enumerate(TENANTS.items()):
        events = list(demo_events(n, seed=seed + 11))
        start = now - timedelta(days=90)
        dates = [start + (now - timedelta(hours=1) - start) * i / n for i in range(n)]
        log.backfill(events, dates, tenant=tenant)
    stored = [
        Stored(e.id, e.tenant, e.date, e.resource_type, e.action, dict(e.details))
        for tenant in TENANTS
        for e in log.iter_search(tenant=tenant, order="asc")
    ]
    log.close()
    return Base(path, now, stored)


@pytest.fixture
def copy_ledger(base_ledger: Base, tmp_path: Path) -> Iterator[AuditLog]:
    """A fresh copy of the base ledger for one test."""
    target = tmp_path / "ledger.db"
    shutil.copy(base_ledger.path, target)
    log = AuditLog.open(f"sqlite:///{target}")
    yield log
    log.close()
