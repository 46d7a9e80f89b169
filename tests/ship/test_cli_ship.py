"""``auditledger ship``: Kestra flow files, JSON outputs, exit status, and the live progress display."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditledger import AuditLog
from auditledger.cli import app

runner = CliRunner()

FLOW = """
id: audit_log_shipper
namespace: system
tasks:
  - id: log_shipper
    type: io.kestra.plugin.ee.core.log.AuditLogShipper
    lookbackPeriod: P1D
    offsetKey: cli-test
    batchSize: 25
    logExporters:
      - id: files
        type: io.kestra.plugin.ee.core.log.FileLogExporter
        directory: {out}
        maxLinesPerFile: 1000
triggers:
  - id: daily
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "@daily"
"""


def test_ship_a_kestra_flow_file_then_resume(filled: tuple[AuditLog, list[str]], db_url: str, tmp_path: Path) -> None:
    """The AuditLogShipper task of a Kestra flow runs as is; --json prints outputs; a re-run ships nothing new."""
    config = tmp_path / "flow.yaml"
    config.write_text(FLOW.format(out=tmp_path / "out"))
    result = runner.invoke(app, ["ship", "--config", str(config), "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs["shipped"] == {"files": 120} and outputs["lag"] == {"files": 0}
    assert outputs["offsetKey"] == "cli-test"
    result = runner.invoke(app, ["ship", "--config", str(config), "--db", db_url, "--json"])
    assert json.loads(result.stdout)["shipped"] == {"files": 0}
    result = runner.invoke(app, ["ship", "--config", str(config), "--db", db_url, "--json", "--reset"])
    assert json.loads(result.stdout)["shipped"] == {"files": 120}


def test_failures_exit_1_and_config_errors_are_one_line(
    filled: tuple[AuditLog, list[str]], db_url: str, tmp_path: Path
) -> None:
    """A failing exporter gives exit status 1 with the error in the table; a bad file is one 'error:' line."""
    config = tmp_path / "s.yaml"
    config.write_text("logExporters:\n  - id: down\n    type: webhook\n    url: http://127.0.0.1:9/x\n"
                      "    timeout: PT0.2S\nmaxRetries: 0\n")
    result = runner.invoke(app, ["ship", "--config", str(config), "--db", db_url])
    assert result.exit_code == 1 and "down" in result.stdout and "failed" in result.stdout
    config.write_text("logExporters:\n  - id: x\n    type: nope\n")
    result = runner.invoke(app, ["ship", "--config", str(config), "--db", db_url])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: logExporters[0].type: unknown exporter 'nope'")
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_progress_shows_rate_and_lag_on_a_terminal(
    filled: tuple[AuditLog, list[str]], db_url: str, tmp_path: Path
) -> None:
    """On a terminal the progress line shows events per second and the lag in events."""
    config = tmp_path / "flow.yaml"
    config.write_text(FLOW.format(out=tmp_path / "out"))
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from auditledger.cli import main; main()", "ship", "--config", str(config),
         "--db", db_url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "files" in screen and "ev/s" in screen and "lag 0" in screen and "120/120" in screen


def test_the_documented_kestra_example_builds(tmp_path: Path) -> None:
    """The YAML example of docs/shipping.md parses and builds every exporter (nothing sent)."""
    from auditledger.cli.ship import load_config
    from auditledger.ship import Shipper

    doc = (Path(__file__).parents[2] / "docs" / "shipping.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "flow.yaml"
    config.write_text(example)
    secrets = {"DATADOG_API_KEY": "k", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_KEY_ID": "s"}
    shipper = Shipper(AuditLog.open("memory://"), load_config(config), secrets=secrets)
    assert [e.name for e in shipper.exporters] == ["datadog", "cloudwatch", "s3"]
    assert shipper.spec.resources == ("FLOW", "EXECUTION")
