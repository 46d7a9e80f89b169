"""Amazon CloudWatch Logs: ``PutLogEvents`` into a log group and stream (created if missing).

Kestra's ``io.kestra.plugin.ee.aws.cloudwatch.LogExporter`` properties
``accessKeyId``, ``secretKeyId``, ``region``, ``logGroupName``,
``logStreamName``, ``chunk`` (events per call); ours: ``endpointOverride``,
``format``. CloudWatch's limits: 10,000 events and 1,048,576 bytes (each
message's UTF-8 bytes + 26) per call, in time order, within 24 hours. Events
CloudWatch refuses as too old or too new (``rejectedLogEventsInfo``) fail the
batch for good rather than vanish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditledger.ship.exporters.aws import client, delivery_error
from auditledger.ship.exporters.base import DeliveryError, Exporter
from auditledger.ship.formats import FORMATS, Record, line_formatter
from auditledger.ship.spec import Props

MAX_BYTES = 1_048_576
EVENT_OVERHEAD = 26
DAY_MS = 24 * 3600 * 1000


class CloudWatchExporter(Exporter):
    name = "cloudwatch"

    def configure(self, props: Props) -> None:
        self.group = props.req("logGroupName")
        self.stream = props.text("logStreamName", f"auditledger-{self.tenant}") or f"auditledger-{self.tenant}"
        self.chunk = props.integer("chunk", 1000, low=1, high=10_000)
        self.formatter = line_formatter(props.choice("format", FORMATS, "native"), f"{props.where}.format")
        self.logs: Any = client("logs", props)

    def open(self) -> None:
        for call, kwargs in (
            (self.logs.create_log_group, {"logGroupName": self.group}),
            (self.logs.create_log_stream, {"logGroupName": self.group, "logStreamName": self.stream}),
        ):
            try:
                call(**kwargs)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code != "ResourceAlreadyExistsException":
                    raise delivery_error(f"cloudwatch {self.id}: creating {kwargs}", exc) from None

    def send(self, records: Sequence[Record]) -> None:
        events: list[dict[str, Any]] = [
            {"timestamp": r.date // 1000, "message": self.formatter(r).decode("utf-8")} for r in records
        ]
        start = 0
        while start < len(events):
            end, size = start, 0
            while end < len(events) and end - start < self.chunk:
                n = len(events[end]["message"].encode()) + EVENT_OVERHEAD
                if end > start and (
                    size + n > MAX_BYTES or events[end]["timestamp"] - events[start]["timestamp"] >= DAY_MS
                ):
                    break
                size += n
                end += 1
            try:
                answer = self.logs.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=events[start:end]
                )
            except Exception as exc:
                err = delivery_error(f"cloudwatch {self.id}: PutLogEvents", exc)
                raise DeliveryError(str(err), retryable=err.retryable, failed=range(start, len(records))) from None
            rejected = answer.get("rejectedLogEventsInfo")
            if rejected:
                raise DeliveryError(
                    f"cloudwatch {self.id}: CloudWatch rejected events of this batch: {rejected}", retryable=False
                )
            start = end
