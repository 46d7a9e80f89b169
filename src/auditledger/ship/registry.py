"""Finding exporters: entry points of the group ``auditledger.exporters``.

Ours are registered in pyproject.toml exactly as a third party would register
its own (``name = "package.module:Class"``). Kestra's plugin type names are
aliases of ours, so that a Kestra shipper YAML runs unchanged.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from auditledger.errors import ConfigError
from auditledger.ship.exporters.base import Exporter
from auditledger.ship.spec import ExporterSpec, Props, Secrets

GROUP = "auditledger.exporters"

KESTRA_ALIASES = {
    "io.kestra.plugin.ee.core.log.FileLogExporter": "file",
    "io.kestra.plugin.ee.aws.s3.LogExporter": "s3",
    "io.kestra.plugin.ee.aws.cloudwatch.LogExporter": "cloudwatch",
    "io.kestra.plugin.ee.gcp.gcs.LogExporter": "gcs",
    "io.kestra.plugin.ee.gcp.operationalsuite.LogExporter": "gcp-logging",
    "io.kestra.plugin.ee.azure.storage.LogExporter": "azure-blob",
    "io.kestra.plugin.ee.azure.monitor.LogExporter": "azure-monitor",
    "io.kestra.plugin.ee.datadog.LogExporter": "datadog",
    "io.kestra.plugin.ee.elasticsearch.LogExporter": "elasticsearch",
    "io.kestra.plugin.ee.opensearch.LogExporter": "opensearch",
    "io.kestra.plugin.ee.splunk.LogExporter": "splunk",
    "io.kestra.plugin.ee.opentelemetry.LogExporter": "otlp",
}

# The same table as our entry points; used only when the installed metadata
# predates them (an editable install not yet re-run), so the shipper still works.
_BUILTIN = {
    "file": "auditledger.ship.exporters.file:FileExporter",
    "s3": "auditledger.ship.exporters.s3:S3Exporter",
    "cloudwatch": "auditledger.ship.exporters.cloudwatch:CloudWatchExporter",
    "gcs": "auditledger.ship.exporters.gcs:GcsExporter",
    "gcp-logging": "auditledger.ship.exporters.gcp_logging:GcpLoggingExporter",
    "azure-blob": "auditledger.ship.exporters.azure_blob:AzureBlobExporter",
    "azure-monitor": "auditledger.ship.exporters.azure_monitor:AzureMonitorExporter",
    "datadog": "auditledger.ship.exporters.datadog:DatadogExporter",
    "elasticsearch": "auditledger.ship.exporters.elastic:ElasticsearchExporter",
    "opensearch": "auditledger.ship.exporters.elastic:OpenSearchExporter",
    "splunk": "auditledger.ship.exporters.splunk:SplunkExporter",
    "syslog": "auditledger.ship.exporters.syslog:SyslogExporter",
    "webhook": "auditledger.ship.exporters.webhook:WebhookExporter",
    "otlp": "auditledger.ship.exporters.otlp:OtlpExporter",
}


@cache
def available() -> dict[str, str]:
    """Exporter name -> ``module:Class``, from entry points (ours included)."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    for name, target in _BUILTIN.items():
        found.setdefault(name, target)
    return found


def resolve(kind: str, where: str) -> type[Exporter]:
    name = KESTRA_ALIASES.get(kind, kind)
    target = available().get(name)
    if target is None:
        known = ", ".join(sorted(available()))
        raise ConfigError(f"{where}.type: unknown exporter {kind!r}; known: {known} (or Kestra's type names)")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}.type: exporter {name!r} cannot load: {exc}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Exporter)):
        raise ConfigError(f"{where}.type: {target} is not an auditledger exporter")
    return cls


def create(spec: ExporterSpec, secrets: Secrets, *, tenant: str, offset_key: str) -> Exporter:
    cls = resolve(spec.type, spec.where)
    return cls(spec.id, Props(spec.properties, spec.where, secrets), tenant=tenant, offset_key=offset_key)
