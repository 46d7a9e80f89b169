"""Datadog Logs: ``POST {basePath}/api/v2/logs`` with the ``DD-API-KEY`` header, gzip.

Kestra's ``io.kestra.plugin.ee.datadog.LogExporter`` properties ``basePath``
and ``apiKey``; ours: ``source``, ``service``, ``tags``, ``hostname``,
``format``. Each log's ``message`` is the record as JSON, which Datadog parses
into attributes. Limits from Datadog's Logs API: at most 1,000 logs and 5 MB
(uncompressed) per request; 202 means accepted.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence

import orjson

from auditledger.ship.exporters.base import DeliveryError, HttpExporter, gzipped_ahead, sized_chunks
from auditledger.ship.formats import JSON_FORMATS, Record, line_formatter, native_line
from auditledger.ship.spec import Props
from auditledger.store import NativeLines

MAX_ITEMS = 1000
MAX_BYTES = 5_000_000


class DatadogExporter(HttpExporter):
    name = "datadog"

    def configure(self, props: Props) -> None:
        self.base = (props.text("basePath", "https://http-intake.logs.datadoghq.com") or "").rstrip("/")
        self.api_key = props.req("apiKey")
        self.source = props.text("source", "auditledger")
        self.service = props.text("service", "auditledger")
        self.tags = ",".join(props.texts("tags")) or f"tenant:{self.tenant}"
        self.hostname = props.text("hostname", socket.gethostname())
        fmt = props.choice("format", JSON_FORMATS, "native")
        self.line = line_formatter(fmt, f"{props.where}.format")  # the message is the record's JSON text
        self.compress = props.boolean("gzip", True)
        self.chunk = props.integer("chunk", MAX_ITEMS, low=1, high=MAX_ITEMS)
        self.http_options(props)
        fields = {"ddsource": self.source, "ddtags": self.tags, "hostname": self.hostname, "service": self.service}
        self._head = orjson.dumps({**fields, "message": ""})[: -len(b'""}')]  # ends with "message":

    def takes_lines(self) -> bool:
        return self.line is native_line

    def send(self, records: Sequence[Record]) -> None:
        self._post([self.line(r) for r in records])

    def send_lines(self, lines: NativeLines) -> None:
        self._post(lines.data.split(b"\n")[:-1])

    def _post(self, messages: Sequence[bytes]) -> None:
        # Each item is orjson.dumps of the whole dict, built from its constant head: one call per event.
        head = self._head
        items = [b"%s%s}" % (head, orjson.dumps(m.decode())) for m in messages]
        ranges = list(sized_chunks(items, self.chunk, MAX_BYTES - 2, overhead=1))
        bodies: Iterable[bytes] = [b"[" + b",".join(items[start:end]) + b"]" for start, end in ranges]
        headers = {"DD-API-KEY": self.api_key, "Content-Type": "application/json", "Accept": "application/json"}
        if self.compress:
            bodies = gzipped_ahead(bodies)
            headers["Content-Encoding"] = "gzip"
        for (start, _), body in zip(ranges, bodies, strict=True):
            try:
                self.request("POST", f"{self.base}/api/v2/logs", content=body, headers=headers)
            except DeliveryError as exc:  # earlier chunks were accepted: only the rest is pending
                raise exc.only(range(start, len(items))) from None
