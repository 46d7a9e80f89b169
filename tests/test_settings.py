"""The settings table: every setting documented, environment and overrides honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditledger.errors import ConfigError
from auditledger.settings import Settings, load, markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_every_setting_is_documented() -> None:
    """docs/settings.md has the generated row of every setting (regenerate it with python -m auditledger.settings)."""
    text = DOCS.read_text("utf-8")
    rows = [line for line in markdown().splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)
    missing = [row.split("|")[1].strip() for row in rows if row not in text]
    assert not missing, f"undocumented or stale: {missing}; run python -m auditledger.settings > docs/settings.md"


def test_every_setting_has_help() -> None:
    """Each setting carries a description, which is its help text."""
    assert all(info.description for info in Settings.model_fields.values())


def test_defaults() -> None:
    """The defaults the issue fixes: a SQLite file and port 8080."""
    s = Settings()
    assert s.db == "sqlite:///auditledger.db"
    assert s.port == 8080
    assert s.insecure_dev is False


def test_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """AUDITLEDGER_* variables are read, and explicit overrides win over them."""
    monkeypatch.setenv("AUDITLEDGER_PORT", "9001")
    monkeypatch.setenv("AUDITLEDGER_DB", "memory://")
    assert load().port == 9001
    s = load(port=9002, db=None)
    assert (s.port, s.db) == (9002, "memory://")


def test_invalid_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value names the setting and its variable instead of raising pydantic's error."""
    monkeypatch.setenv("AUDITLEDGER_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="AUDITLEDGER_PORT"):
        load()
