"""S3 and CloudWatch Logs exporters against moto running as a real server on loopback."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from auditledger import AuditLog
from auditledger.ship import run_shipper, ship_checkpoint
from tests.ship.conftest import FAST_RETRY

boto3 = pytest.importorskip("boto3", reason="boto3 (auditledger[aws]) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

CREDS = {"accessKeyId": "AKIATESTTESTTEST", "secretKeyId": "secret-test", "region": "eu-west-1"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="eu-west-1",
                        aws_access_key_id=CREDS["accessKeyId"], aws_secret_access_key=CREDS["secretKeyId"])


def test_s3_objects_read_back(filled: tuple[AuditLog, list[str]], moto: str) -> None:
    """Batches become gzip NDJSON objects of at most maxLinesPerFile lines; reading them back gives every event."""
    log, ids = filled
    s3 = _client("s3", moto)
    s3.create_bucket(Bucket="audit", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    spec = {"logExporters": [{"id": "s3", "type": "io.kestra.plugin.ee.aws.s3.LogExporter", "bucket": "audit",
                              "logFilePrefix": "kestra", "maxLinesPerFile": 50, "gzip": True,
                              "endpointOverride": moto, **CREDS}], **FAST_RETRY}
    out = run_shipper(log, spec)
    assert out["errors"] == {} and out["offsets"] == {"s3": 120}
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="audit", Prefix="kestra/")["Contents"])
    assert len(keys) == 3 and all(k.endswith(".ndjson.gz") and k.startswith("kestra/main/") for k in keys)
    got = [orjson.loads(line) for k in keys
           for line in gzip.decompress(s3.get_object(Bucket="audit", Key=k)["Body"].read()).splitlines()]
    assert [g["id"] for g in got] == ids
    assert got[0]["leaf_hash"] == log.get(ids[0]).leaf_hash.hex()
    where = ship_checkpoint(spec, "checkpoints/main/120", "cp text")
    assert where == {"s3": "s3://audit/kestra/checkpoints/main/120"}
    assert s3.get_object(Bucket="audit", Key="kestra/checkpoints/main/120")["Body"].read() == b"cp text"


def test_s3_missing_bucket_is_reported(filled: tuple[AuditLog, list[str]], moto: str) -> None:
    """NoSuchBucket is not retried forever: the error names it and the offset stays."""
    log, _ = filled
    out = run_shipper(log, {"logExporters": [{"id": "s3", "type": "s3", "bucket": "nope", "endpointOverride": moto,
                                              **CREDS}], **FAST_RETRY})
    assert "NoSuchBucket" in out["errors"]["s3"] and out["offsets"] == {"s3": 0}


def test_cloudwatch_log_events_read_back(filled: tuple[AuditLog, list[str]], moto: str) -> None:
    """Group and stream are created; PutLogEvents in chunks; get_log_events returns every event in order."""
    log, ids = filled
    spec = {"logExporters": [{"id": "cw", "type": "io.kestra.plugin.ee.aws.cloudwatch.LogExporter",
                              "logGroupName": "/auditledger/audit", "logStreamName": "main", "chunk": 40,
                              "endpointOverride": moto, **CREDS}], **FAST_RETRY}
    out = run_shipper(log, spec)
    assert out["errors"] == {} and out["offsets"] == {"cw": 120}
    logs = _client("logs", moto)
    events = logs.get_log_events(logGroupName="/auditledger/audit", logStreamName="main", startFromHead=True)["events"]
    assert [orjson.loads(e["message"])["id"] for e in events] == ids
    first = log.get(ids[0])
    assert events[0]["timestamp"] == int(first.date.timestamp() * 1000)
    # A second run (stream exists already) ships only the new events.
    from tests.ship.conftest import fill

    more = fill(log, 5, seed=11)
    assert run_shipper(log, spec)["shipped"] == {"cw": 5}
    events = logs.get_log_events(logGroupName="/auditledger/audit", logStreamName="main", startFromHead=True)["events"]
    assert [orjson.loads(e["message"])["id"] for e in events] == ids + more
