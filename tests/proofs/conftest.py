"""A pristine signed ledger, built once and copied for each test, and helpers to attack it."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditledger import AuditLog, tree
from auditledger import checkpoint as ck
from auditledger.cli import app
from auditledger.demo import demo_events

SIZE = 600  # tile roots at levels 4 and 8 are stored
runner = CliRunner()


@dataclass
class Signed:
    """A ledger file, its signing key and vkey, and a checkpoint saved at ``SIZE``."""

    dir: Path
    db: Path
    key_file: Path
    vkey: str
    vkey_file: Path
    checkpoint: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def fill(log: AuditLog, n: int, *, tenant: str = "main", seed: int = 3) -> None:
    events = list(demo_events(n, seed=seed))
    start = datetime.now(UTC) - timedelta(days=1)
    dates = [start + timedelta(seconds=i) for i in range(n)]
    log.backfill(events, dates, tenant=tenant)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pristine")
    key = ck.generate_key()
    ck.save_private_key(key, folder / "signing.pem")
    with AuditLog.open(f"sqlite:///{folder / 'ledger.db'}") as log:
        fill(log, SIZE)
        made = tree.make_checkpoint(log.store, "main", tree.Signer(key))
    (folder / "cp-600").write_text(made.note)
    (folder / "vkey").write_text(tree.Signer(key).vkey + "\n")
    return folder


@pytest.fixture
def signed(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Signed]:
    for name in ("ledger.db", "signing.pem", "cp-600", "vkey"):
        shutil.copy2(pristine / name, tmp_path / name)
    monkeypatch.setenv("AUDITLEDGER_SIGNING_KEY_FILE", str(tmp_path / "signing.pem"))
    monkeypatch.delenv("AUDITLEDGER_WITNESS_DIR", raising=False)
    vkey = (tmp_path / "vkey").read_text().strip()
    yield Signed(
        tmp_path, tmp_path / "ledger.db", tmp_path / "signing.pem", vkey, tmp_path / "vkey", tmp_path / "cp-600"
    )


_TRIGGERS = (
    "events_no_update", "events_no_delete", "details_no_update", "details_no_delete", "leaves_no_delete",
    "leaves_no_update", "leaves_key_no_update", "tree_nodes_no_update", "tree_nodes_no_delete",
    "checkpoints_no_update", "checkpoints_no_delete",
)


def attacker(db: Path) -> sqlite3.Connection:
    """The database file opened with plain sqlite3, triggers dropped, as someone with file access would."""
    conn = sqlite3.connect(db, isolation_level=None)
    for name in _TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn
