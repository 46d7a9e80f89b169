"""The jobs, purge and hold commands work end to end and report mistakes as one line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from auditledger.cli import app
from tests.jobs.test_jobs import KESTRA_EXAMPLE


def test_apply_run_history_and_holds_from_the_command_line(tmp_path: Path) -> None:
    """jobs apply/run/history, hold create/list and purge --dry-run succeed on a fresh database."""
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "cleanup.yml").write_text(KESTRA_EXAMPLE)
    runner = CliRunner()
    out = runner.invoke(app, ["jobs", "apply", str(tmp_path / "jobs"), "--db", db])
    assert out.exit_code == 0, out.output
    assert "created system.audit_log_cleanup" in out.output
    out = runner.invoke(app, ["jobs", "run", "audit_log_cleanup", "--db", db])
    assert out.exit_code == 0 and '"SUCCESS"' in out.output, out.output
    out = runner.invoke(app, ["jobs", "history", "audit_log_cleanup", "--json", "--db", db])
    assert out.exit_code == 0 and '"count":0' in out.output, out.output
    out = runner.invoke(app, ["hold", "create", "--query", "resource:SECRET", "--reason", "case 9", "--db", db])
    assert out.exit_code == 0 and out.output.startswith("hold_"), out.output
    out = runner.invoke(app, ["purge", "--end-date", "2020-01-01T00:00:00Z", "--dry-run", "--json", "--db", db])
    assert out.exit_code == 0 and '"count":0' in out.output, out.output


def test_a_bad_job_file_is_one_line_with_its_line_number(tmp_path: Path) -> None:
    """An unknown task type exits 1 with file:line, not a traceback."""
    job = tmp_path / "bad.yml"
    job.write_text(KESTRA_EXAMPLE.replace("log.PurgeAuditLogs", "log.Nope"))
    out = CliRunner().invoke(app, ["jobs", "apply", str(job), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert out.exit_code == 1
    assert f"{job}:5: unknown task type" in out.output
