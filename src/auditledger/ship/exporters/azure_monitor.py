"""Azure Monitor Logs ingestion API (data collection rules).

``POST {endpoint}/dataCollectionRules/{ruleId}/streams/{streamName}?api-version=2023-01-01``
with a bearer token for ``https://monitor.azure.com//.default`` from an Entra
ID service principal. Kestra's ``io.kestra.plugin.ee.azure.monitor.LogExporter``
properties ``endpoint`` (the data collection endpoint), ``tenantId``,
``clientId``, ``clientSecret``, ``ruleId``; ours: ``streamName``,
``authorityHost``, ``format``. The body is a JSON array, gzip-compressed, at
most 1 MB per call; every record gets ``TimeGenerated``. 204 means accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from auditledger.ship.exporters.auth import AZURE_AUTHORITY, azure_client_credentials
from auditledger.ship.exporters.base import DeliveryError, HttpExporter, gzipped, sized_chunks
from auditledger.ship.formats import JSON_FORMATS, Record, json_formatter
from auditledger.ship.spec import Props

API_VERSION = "2023-01-01"
MAX_BYTES = 1_000_000
SCOPE = "https://monitor.azure.com//.default"


class AzureMonitorExporter(HttpExporter):
    name = "azure-monitor"

    def configure(self, props: Props) -> None:
        self.endpoint = props.req("endpoint").rstrip("/")
        self.rule = props.req("ruleId")
        self.stream = props.text("streamName", "Custom-AuditLedger_CL") or "Custom-AuditLedger_CL"
        authority = props.text("authorityHost", AZURE_AUTHORITY) or AZURE_AUTHORITY
        self.tokens = azure_client_credentials(
            lambda: self.client,
            authority,
            props.req("tenantId"),
            props.req("clientId"),
            props.req("clientSecret"),
            SCOPE,
        )
        self.fmt = json_formatter(props.choice("format", JSON_FORMATS, "native"), f"{props.where}.format")
        self.chunk = props.integer("chunk", 1000, low=1, high=100_000)
        self.http_options(props)

    def send(self, records: Sequence[Record]) -> None:
        items = [orjson.dumps({"TimeGenerated": r.iso_date, **self.fmt(r)}) for r in records]
        url = f"{self.endpoint}/dataCollectionRules/{self.rule}/streams/{self.stream}"
        for start, end in sized_chunks(items, self.chunk, MAX_BYTES - 2, overhead=1):
            body = gzipped(b"[" + b",".join(items[start:end]) + b"]")
            headers = {
                "Authorization": f"Bearer {self.tokens.token()}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            try:
                self.request("POST", url, content=body, headers=headers, params={"api-version": API_VERSION})
            except DeliveryError as exc:
                if "answered 401" in str(exc):
                    self.tokens.invalidate()
                    exc.retryable = True
                raise exc.only(range(start, len(records))) from None
