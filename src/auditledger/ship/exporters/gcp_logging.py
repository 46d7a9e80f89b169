"""Google Cloud Logging: ``POST {endpoint}/v2/entries:write``.

Kestra's ``io.kestra.plugin.ee.gcp.operationalsuite.LogExporter`` properties
``projectId``, ``serviceAccount`` (the key's JSON) and ``scopes``; ours:
``logName``, ``endpoint``, ``accessToken``, ``format``. Each entry's
``insertId`` is the event id, which Cloud Logging uses to drop duplicates
of the same timestamp. ``partialSuccess`` stays false: a batch is accepted
whole or refused whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import orjson

from auditledger.errors import ConfigError
from auditledger.ship.exporters.auth import TokenSource, google_metadata, google_service_account, static_token
from auditledger.ship.exporters.base import DeliveryError, HttpExporter, sized_chunks
from auditledger.ship.formats import JSON_FORMATS, Record, json_formatter
from auditledger.ship.spec import Props

SCOPE = "https://www.googleapis.com/auth/logging.write"
MAX_BYTES = 9_000_000  # entries.write takes 10 MB


def google_token(exporter: HttpExporter, props: Props, scope: str) -> TokenSource:
    """``accessToken``, else the ``serviceAccount`` key, else ``GOOGLE_APPLICATION_CREDENTIALS``, else metadata."""
    token = props.text("accessToken")
    key = props.text("serviceAccount")
    scopes = props.texts("scopes")
    if props.text("impersonatedServiceAccount"):
        raise ConfigError(f"{props.where}.impersonatedServiceAccount: impersonation is not supported yet")
    if token:
        return static_token(token)
    where = f"{props.where}.serviceAccount"
    if not key:
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if not path:
            return google_metadata(lambda: exporter.client)
        try:
            key = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"GOOGLE_APPLICATION_CREDENTIALS {path}: {exc.strerror or exc}") from None
        where = f"GOOGLE_APPLICATION_CREDENTIALS {path}"
    return google_service_account(lambda: exporter.client, key, " ".join(scopes) or scope, where)


class GcpLoggingExporter(HttpExporter):
    name = "gcp-logging"

    def configure(self, props: Props) -> None:
        self.project = props.req("projectId")
        self.log_name = props.text("logName", "auditledger") or "auditledger"
        self.endpoint = (props.text("endpoint", "https://logging.googleapis.com") or "").rstrip("/")
        self.fmt = json_formatter(props.choice("format", JSON_FORMATS, "native"), f"{props.where}.format")
        self.chunk = props.integer("chunk", 1000, low=1, high=10_000)
        self.tokens = google_token(self, props, SCOPE)
        self.http_options(props)

    def send(self, records: Sequence[Record]) -> None:
        entries = []
        for r in records:
            e = r.event()
            entries.append(
                orjson.dumps(
                    {
                        "insertId": r.id,
                        "timestamp": r.iso_date,
                        "severity": "WARNING" if e["outcome"] == "failure" else "NOTICE",
                        "labels": {
                            "tenant": e["tenant"],
                            "resource_type": e["resource_type"],
                            "action": e["action"],
                            "seq": str(e["seq"]),
                        },
                        "jsonPayload": self.fmt(r),
                    }
                )
            )
        log_name = f"projects/{self.project}/logs/{quote(self.log_name, safe='')}"
        head = orjson.dumps(
            {
                "logName": log_name,
                "resource": {"type": "global", "labels": {"project_id": self.project}},
                "partialSuccess": False,
            }
        )[:-1]
        for start, end in sized_chunks(entries, self.chunk, MAX_BYTES, overhead=1):
            body = head + b',"entries":[' + b",".join(entries[start:end]) + b"]}"
            headers = {"Authorization": f"Bearer {self.tokens.token()}", "Content-Type": "application/json"}
            try:
                self.request("POST", f"{self.endpoint}/v2/entries:write", content=body, headers=headers)
            except DeliveryError as exc:
                if "answered 401" in str(exc):
                    self.tokens.invalidate()
                    exc.retryable = True
                raise exc.only(range(start, len(records))) from None
