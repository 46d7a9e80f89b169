"""Amazon S3 (and S3-compatible stores): one NDJSON object per batch (``PutObject``).

Kestra's ``io.kestra.plugin.ee.aws.s3.LogExporter`` properties ``bucket``,
``logFilePrefix``, ``maxLinesPerFile``, ``format`` and the AWS credentials
(see :mod:`.aws`); ours: ``gzip``.
"""

from __future__ import annotations

from typing import Any

from auditledger.ship.exporters.aws import client, delivery_error
from auditledger.ship.exporters.objects import ObjectExporter
from auditledger.ship.spec import Props


class S3Exporter(ObjectExporter):
    name = "s3"

    def configure(self, props: Props) -> None:
        self.bucket = props.req("bucket")
        self.object_options(props)
        self.s3: Any = client("s3", props)

    def put(self, name: str, data: bytes, content_type: str) -> str:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type)
        except Exception as exc:
            raise delivery_error(f"s3 {self.id}: PutObject s3://{self.bucket}/{name}", exc) from None
        return f"s3://{self.bucket}/{name}"
