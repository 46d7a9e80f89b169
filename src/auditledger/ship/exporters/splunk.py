"""Splunk HTTP Event Collector: ``POST {url}/services/collector/event``, ``Authorization: Splunk <token>``.

The body is HEC event objects one after another (``time``, ``host``,
``source``, ``sourcetype``, ``index``, ``event``), gzip-compressed. Splunk
answers ``{"text": "Success", "code": 0}``; code 9 (server busy, 503) is
retried; a malformed event is refused with its ``invalid-event-number`` and
the events before it were indexed, so only the rest counts as not accepted.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import orjson

from auditledger.ship.exporters.base import DeliveryError, HttpExporter, gzipped, sized_chunks
from auditledger.ship.formats import JSON_FORMATS, Record, json_formatter
from auditledger.ship.spec import Props

MAX_BYTES = 1_000_000  # Splunk's default max_content_length is 800 MB, but small requests fail small


class SplunkExporter(HttpExporter):
    name = "splunk"

    def configure(self, props: Props) -> None:
        url = props.text("host") or props.text("url")
        if not url:
            props.req("url")
        self.url = (url or "").rstrip("/")
        self.token = props.req("token")
        meta: dict[str, Any] = {
            "host": props.text("hostname", socket.gethostname()),
            "source": props.text("source", "auditledger"),
            "sourcetype": props.text("sourceType") or props.text("sourcetype") or "auditledger:audit",
        }
        index = props.text("index")
        if index:
            meta["index"] = index
        self.meta = meta
        self.channel = props.text("channel")
        self.fmt = json_formatter(props.choice("format", JSON_FORMATS, "native"), f"{props.where}.format")
        self.compress = props.boolean("gzip", True)
        self.chunk = props.integer("chunk", 1000, low=1, high=100_000)
        self.http_options(props)

    def send(self, records: Sequence[Record]) -> None:
        items = [orjson.dumps({"time": round(r.date / 1e6, 6), **self.meta, "event": self.fmt(r)}) for r in records]
        for start, end in sized_chunks(items, self.chunk, MAX_BYTES, overhead=1):
            body = b"\n".join(items[start:end])
            headers = {"Authorization": f"Splunk {self.token}", "Content-Type": "application/json"}
            if self.channel:
                headers["X-Splunk-Request-Channel"] = self.channel
            if self.compress:
                body = gzipped(body)
                headers["Content-Encoding"] = "gzip"
            try:
                self.request("POST", f"{self.url}/services/collector/event", content=body, headers=headers)
            except DeliveryError as exc:
                bad = _invalid_event(str(exc))
                if bad is not None:
                    raise DeliveryError(str(exc), retryable=False, failed=range(start + bad, len(records))) from None
                raise exc.only(range(start, len(records))) from None


def _invalid_event(message: str) -> int | None:
    marker = '"invalid-event-number":'
    pos = message.find(marker)
    if pos < 0:
        return None
    digits = "".join(c for c in message[pos + len(marker) :].lstrip()[:12] if c.isdigit())
    return int(digits) if digits else None
