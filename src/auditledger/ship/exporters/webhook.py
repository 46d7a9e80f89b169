"""A generic webhook: NDJSON batches, signed with HMAC-SHA256.

``POST url`` with ``Content-Type: application/x-ndjson``, one record a line.
Headers: ``X-Auditledger-Timestamp`` (Unix seconds) and the signature header
(default ``X-Auditledger-Signature``) ``sha256=<hex>`` of
``HMAC-SHA256(secret, timestamp + "." + body)`` over the bytes as sent, so a
receiver can check both origin and freshness; ``Idempotency-Key`` names the
batch (tenant, offsetKey, seq range) for de-duplication. Any 2xx accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from auditledger.ship.exporters.base import HttpExporter, gzipped
from auditledger.ship.formats import FORMATS, Record, line_formatter, native_line
from auditledger.ship.spec import Props
from auditledger.store import NativeLines


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookExporter(HttpExporter):
    name = "webhook"

    def configure(self, props: Props) -> None:
        self.url = props.req("url")
        self.secret = props.text("secret")
        self.header = props.text("signatureHeader", "X-Auditledger-Signature") or "X-Auditledger-Signature"
        self.headers = {k: str(v) for k, v in props.mapping("headers").items()}
        self.fmt = line_formatter(props.choice("format", FORMATS, "native"), f"{props.where}.format")
        self.compress = props.boolean("gzip", False)
        self.http_options(props)

    def takes_lines(self) -> bool:
        return self.fmt is native_line

    def send(self, records: Sequence[Record]) -> None:
        self._post(b"\n".join([self.fmt(r) for r in records]) + b"\n", records[0].seq, records[-1].seq)

    def send_lines(self, lines: NativeLines) -> None:
        self._post(lines.data, lines.seqs[0], lines.seqs[-1])

    def _post(self, body: bytes, first: int, last: int) -> None:
        headers = {"Content-Type": "application/x-ndjson", **self.headers}
        if self.compress:
            body = gzipped(body)
            headers["Content-Encoding"] = "gzip"
        stamp = str(int(time.time()))
        headers["X-Auditledger-Timestamp"] = stamp
        headers["Idempotency-Key"] = f"{self.tenant}:{self.offset_key}:{first}-{last}"
        if self.secret:
            headers[self.header] = signature(self.secret, stamp, body)
        self.request("POST", self.url, content=body, headers=headers)
