"""The shipper spec: Kestra's properties, clear errors naming the property, secrets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from auditledger.errors import ConfigError
from auditledger.ship import Secrets, parse_duration, parse_spec
from auditledger.ship.registry import KESTRA_ALIASES, resolve

KESTRA_YAML = """
id: shipper
type: io.kestra.plugin.ee.core.log.AuditLogShipper
resources: [FLOW, EXECUTION]
lookbackPeriod: PT12H
offsetKey: my-offset
delete: false
batchSize: 250
logExporters:
  - id: DatadogLogExporter
    type: io.kestra.plugin.ee.datadog.LogExporter
    basePath: https://http-intake.logs.datadoghq.eu
    apiKey: "{{ secret('DATADOG_API_KEY') }}"
"""


def test_kestra_yaml_parses_with_its_defaults_and_values() -> None:
    """A Kestra AuditLogShipper task body parses with every property taken as given."""
    spec = parse_spec(KESTRA_YAML)
    assert spec.resources == ("FLOW", "EXECUTION")
    assert spec.lookback == timedelta(hours=12)
    assert spec.offset_key == "my-offset"
    assert spec.batch_size == 250
    assert spec.log_exporters[0].type == "io.kestra.plugin.ee.datadog.LogExporter"
    defaults = parse_spec({"logExporters": [{"id": "a", "type": "file"}]})
    assert (defaults.offset_key, defaults.lookback, defaults.delete) == ("LogShipper-state", timedelta(days=1), False)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({}, "logExporters"),
        ({"logExporters": [{"type": "file"}]}, "logExporters[0].id"),
        ({"logExporters": [{"id": "a"}]}, "logExporters[0].type"),
        ({"logExporters": [{"id": "a", "type": "file"}, {"id": "a", "type": "file"}]}, "logExporters[1].id"),
        ({"logExporters": [{"id": "a", "type": "file"}], "batchSize": 0}, "batchSize"),
        ({"logExporters": [{"id": "a", "type": "file"}], "lookbackPeriod": "1 day"}, "lookbackPeriod"),
        ({"logExporters": [{"id": "a", "type": "file"}], "lookbackPeriod": "P1M"}, "lookbackPeriod"),
        ({"logExporters": [{"id": "a", "type": "file"}], "resources": ["flow"]}, "resources[0]"),
        ({"logExporters": [{"id": "a", "type": "file"}], "shipEverything": True}, "shipEverything"),
        ({"logExporters": [{"id": "a", "type": "file"}], "query": "action:"}, "query"),
    ],
)
def test_bad_specs_name_the_property(raw: dict[str, object], named: str) -> None:
    """Every mistake raises ConfigError whose message starts with the property's path."""
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    assert str(info.value).startswith(named), str(info.value)


def test_durations_follow_java_duration_parse() -> None:
    """ISO 8601 durations as Kestra reads them: days, hours, minutes, fractional seconds, weeks."""
    assert parse_duration("P1D", "x") == timedelta(days=1)
    assert parse_duration("PT12H", "x") == timedelta(hours=12)
    assert parse_duration("P1DT2H30M", "x") == timedelta(days=1, hours=2, minutes=30)
    assert parse_duration("PT0.5S", "x") == timedelta(seconds=0.5)
    assert parse_duration("P2W", "x") == timedelta(days=14)
    for bad in ("P", "PT", "1D", "P1DT", "P1Y"):
        with pytest.raises(ConfigError):
            parse_duration(bad, "x")


def test_secrets_resolve_from_prefixed_env_plain_env_then_file(tmp_path: Path) -> None:
    """secret('NAME') looks in AUDITLEDGER_SECRET_NAME, then NAME, then the secrets file; redact hides values."""
    file = tmp_path / "secrets.env"
    file.write_text("# comment\nFROM_FILE=file-value\nBOTH=from-file\n")
    env = {"AUDITLEDGER_SECRET_BOTH": "prefixed-value", "PLAIN": "plain-value"}
    s = Secrets(file=file, environ=env)
    assert s.render("{{ secret('BOTH') }}", "x") == "prefixed-value"
    assert s.render("Bearer {{secret(\"PLAIN\")}}", "x") == "Bearer plain-value"
    assert s.render("{{ secret('FROM_FILE') }}", "x") == "file-value"
    assert s.redact("token plain-value leaked") == "token **** leaked"
    with pytest.raises(ConfigError, match=r"apiKey: secret 'MISSING' is not set") as info:
        s.render("{{ secret('MISSING') }}", "apiKey")
    assert "value" not in str(info.value)
    with pytest.raises(ConfigError, match="only"):
        s.render("{{ now() }}", "apiKey")


def test_yaml_secrets_file(tmp_path: Path) -> None:
    """A YAML mapping is a valid secrets file too."""
    file = tmp_path / "secrets.yaml"
    file.write_text("DD_KEY: abc123\n")
    assert Secrets(file=file, environ={}).get("DD_KEY", "x") == "abc123"


def test_every_kestra_alias_resolves_to_a_registered_exporter() -> None:
    """Kestra's type names load our exporters through the entry points."""
    for kestra, ours in KESTRA_ALIASES.items():
        assert resolve(kestra, "t").name == ours
    with pytest.raises(ConfigError, match=r"t.type: unknown exporter 'nope'"):
        resolve("nope", "t")


def test_exporter_properties_are_checked(tmp_path: Path) -> None:
    """An unknown or malformed exporter property fails the run before anything is sent."""
    from auditledger import AuditLog
    from auditledger.ship import Shipper

    log = AuditLog.open("memory://")
    with pytest.raises(ConfigError, match=r"logExporters\[0\].maxLinesPerFile: expected a whole number"):
        Shipper(log, {"logExporters": [{"id": "a", "type": "file", "maxLinesPerFile": "many"}]})
    with pytest.raises(ConfigError, match=r"logExporters\[0\].colour: unknown property"):
        Shipper(log, {"logExporters": [{"id": "a", "type": "file", "colour": "red"}]})
    with pytest.raises(ConfigError, match=r"logExporters\[0\].apiKey: is required"):
        Shipper(log, {"logExporters": [{"id": "a", "type": "io.kestra.plugin.ee.datadog.LogExporter"}]})


def test_a_kestra_flow_is_read_for_its_shipper_task() -> None:
    """A whole flow (as the witness setting may name) yields its AuditLogShipper task's properties."""
    flow = {"id": "f", "namespace": "system",
            "tasks": [{"id": "log", "type": "io.kestra.plugin.core.log.Log", "message": "hi"},
                      {"id": "ship", "type": "io.kestra.plugin.ee.core.log.AuditLogShipper", "offsetKey": "k",
                       "logExporters": [{"id": "a", "type": "file"}]}]}
    assert parse_spec(flow).offset_key == "k"
    with pytest.raises(ConfigError, match="no AuditLogShipper task"):
        parse_spec({"id": "f", "tasks": [{"id": "log", "type": "io.kestra.plugin.core.log.Log"}]})
