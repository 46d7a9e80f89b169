"""OpenTelemetry logs over OTLP/HTTP with JSON encoding (``POST …/v1/logs``).

Kestra's ``io.kestra.plugin.ee.opentelemetry.LogExporter`` properties
``otlpEndpoint``, ``authorizationHeaderName``, ``authorizationHeaderValue``.
The body is an ``ExportLogsServiceRequest`` in the protobuf JSON mapping
(OTLP 1.x: 64-bit integers as decimal strings, enums as numbers). A response
with ``partialSuccess.rejectedLogRecords`` > 0 means records were refused for
good (the spec forbids retrying them), so the batch is reported failed and its
offset is not moved: nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from auditledger.ship.exporters.base import DeliveryError, HttpExporter, gzipped
from auditledger.ship.formats import JSON_FORMATS, Record, json_formatter
from auditledger.ship.spec import Props


def _attr(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


class OtlpExporter(HttpExporter):
    name = "otlp"

    def configure(self, props: Props) -> None:
        endpoint = props.req("otlpEndpoint").rstrip("/")
        path = endpoint.split("://", 1)[-1].partition("/")[2]
        self.url = endpoint if path else endpoint + "/v1/logs"
        self.headers = {k: str(v) for k, v in props.mapping("headers").items()}
        name = props.text("authorizationHeaderName")
        value = props.text("authorizationHeaderValue")
        if value:
            self.headers[name or "Authorization"] = value
        self.service = props.text("serviceName", "auditledger") or "auditledger"
        self.fmt = json_formatter(props.choice("format", JSON_FORMATS, "native"), f"{props.where}.format")
        self.compress = props.boolean("gzip", False)
        self.chunk = props.integer("chunk", 1000, low=1, high=100_000)
        self.http_options(props)

    def _log(self, r: Record) -> dict[str, Any]:
        e = r.event()
        failed = e["outcome"] == "failure"
        nanos = str(r.date * 1000)
        return {
            "timeUnixNano": nanos,
            "observedTimeUnixNano": nanos,
            "severityNumber": 13 if failed else 9,  # WARN / INFO
            "severityText": "WARN" if failed else "INFO",
            "eventName": f"auditledger.{e['resource_type']}.{e['action']}".lower(),
            "body": {"stringValue": orjson.dumps(self.fmt(r)).decode()},
            "attributes": [
                _attr("event.id", e["id"]),
                _attr("auditledger.tenant", e["tenant"]),
                _attr("auditledger.seq", e["seq"]),
                _attr("auditledger.resource_type", e["resource_type"]),
                _attr("auditledger.action", e["action"]),
                _attr("enduser.id", e["actor"]["id"]),
                _attr("auditledger.outcome", e["outcome"]),
            ],
        }

    def send(self, records: Sequence[Record]) -> None:
        for start in range(0, len(records), self.chunk):
            try:
                self._send(records[start : start + self.chunk])
            except DeliveryError as exc:  # earlier chunks were accepted
                raise exc.only(range(start, len(records))) from None

    def _send(self, records: Sequence[Record]) -> None:
        request = {
            "resourceLogs": [
                {
                    "resource": {"attributes": [_attr("service.name", self.service), _attr("tenant.id", self.tenant)]},
                    "scopeLogs": [
                        {"scope": {"name": "auditledger.ship"}, "logRecords": [self._log(r) for r in records]}
                    ],
                }
            ]
        }
        body = orjson.dumps(request)
        headers = {"Content-Type": "application/json", **self.headers}
        if self.compress:
            body = gzipped(body)
            headers["Content-Encoding"] = "gzip"
        response = self.request("POST", self.url, content=body, headers=headers)
        try:
            partial = response.json().get("partialSuccess") or {} if response.content else {}
        except ValueError:
            partial = {}
        rejected = int(partial.get("rejectedLogRecords") or 0) if isinstance(partial, dict) else 0
        if rejected:
            raise DeliveryError(
                f"otlp {self.id}: the collector rejected {rejected} of {len(records)} records: "
                f"{str(partial.get('errorMessage', ''))[:200]}",
                retryable=False,
            )
