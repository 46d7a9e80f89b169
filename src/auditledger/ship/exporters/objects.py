"""What object-store exporters (S3, GCS, Azure Blob) share: batches become NDJSON objects.

Properties as Kestra's S3 ``LogExporter``: ``logFilePrefix``, ``maxLinesPerFile``,
``format``; ours: ``gzip``. Object names are fixed by the seq range
(``{prefix}/{tenant}/{day}/{offsetKey}-{first}-{last}.ndjson[.gz]``), so a
batch sent again overwrites its own object instead of adding a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

from auditledger.ship.exporters.base import DeliveryError, Exporter, gzipped, object_name
from auditledger.ship.formats import FORMATS, Record, line_formatter
from auditledger.ship.spec import Props


class ObjectExporter(Exporter):
    stores_objects = True

    def object_options(self, props: Props) -> None:
        self.prefix = props.text("logFilePrefix", "auditlogs") or ""
        self.max_lines = props.integer("maxLinesPerFile", 100_000, low=1)
        fmt = props.choice("format", ("JSON", "ION", *FORMATS), "JSON")
        self.formatter = line_formatter(fmt, f"{props.where}.format")
        self.gzip = props.boolean("gzip", False)
        props.integer("chunk", 1000, low=1)  # Kestra's bulk size; an object per batch needs no other chunking
        self.suffix = (".ion" if fmt == "ION" else ".ndjson") + (".gz" if self.gzip else "")
        self.content_type = "application/gzip" if self.gzip else "application/x-ndjson"

    def put(self, name: str, data: bytes, content_type: str) -> str:
        raise NotImplementedError

    def send(self, records: Sequence[Record]) -> None:
        for start in range(0, len(records), self.max_lines):
            piece = records[start : start + self.max_lines]
            data = b"\n".join([self.formatter(r) for r in piece]) + b"\n"
            if self.gzip:
                data = gzipped(data)
            name = object_name(self.prefix, self.tenant, self.offset_key, piece[0], piece[-1], self.suffix)
            try:
                self.put(name, data, self.content_type)
            except DeliveryError as exc:
                raise exc.only(range(start, len(records))) from None

    def put_object(self, name: str, data: bytes, content_type: str = "text/plain") -> str:
        lead = self.prefix.strip("/")
        return self.put(f"{lead}/{name}" if lead else name, data, content_type)
