"""Google Cloud Storage: one object per batch through the JSON API's media upload.

``POST {endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=…``
with a bearer token from ``serviceAccount`` (or ``accessToken``). Kestra's
``io.kestra.plugin.ee.gcp.gcs.LogExporter`` properties ``bucket``,
``projectId``, ``serviceAccount``, ``logFilePrefix``, ``maxLinesPerFile``, ``format``.
"""

from __future__ import annotations

from auditledger.ship.exporters.base import DeliveryError, HttpExporter
from auditledger.ship.exporters.gcp_logging import google_token
from auditledger.ship.exporters.objects import ObjectExporter
from auditledger.ship.spec import Props

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


class GcsExporter(ObjectExporter, HttpExporter):
    name = "gcs"

    def configure(self, props: Props) -> None:
        self.bucket = props.req("bucket")
        self.project = props.text("projectId")
        self.endpoint = (props.text("endpoint", "https://storage.googleapis.com") or "").rstrip("/")
        self.object_options(props)
        self.tokens = google_token(self, props, SCOPE)
        self.http_options(props)

    def put(self, name: str, data: bytes, content_type: str) -> str:
        headers = {"Authorization": f"Bearer {self.tokens.token()}", "Content-Type": content_type}
        try:
            self.request(
                "POST",
                f"{self.endpoint}/upload/storage/v1/b/{self.bucket}/o",
                content=data,
                headers=headers,
                params={"uploadType": "media", "name": name},
            )
        except DeliveryError as exc:
            if "answered 401" in str(exc):
                self.tokens.invalidate()
                exc.retryable = True
            raise
        return f"gs://{self.bucket}/{name}"
