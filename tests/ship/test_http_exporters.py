"""Each HTTP exporter against a local receiver that checks that service's real wire format."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from auditledger import AuditLog
from auditledger.ship import run_shipper
from tests.ship.conftest import FAST_RETRY, Receiver, Request


def _spec(exporter: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"logExporters": [{"id": "x", **exporter}], **FAST_RETRY, **extra}


def test_datadog_logs_api(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """POST /api/v2/logs, DD-API-KEY, gzip JSON array of at most 1,000 logs whose message is the record."""
    log, ids = filled
    got: list[str] = []

    def datadog(req: Request) -> tuple[int, bytes]:
        assert req.method == "POST" and req.path == "/api/v2/logs"
        assert req.headers["dd-api-key"] == "dd-secret"
        assert req.headers["content-type"] == "application/json"
        assert req.headers["content-encoding"] == "gzip"
        items = orjson.loads(req.body)
        assert isinstance(items, list) and 0 < len(items) <= 1000
        for item in items:
            assert item["ddsource"] == "auditledger" and item["service"] == "auditledger" and item["hostname"]
            assert item["ddtags"] == "tenant:main"
            got.append(orjson.loads(item["message"])["id"])
        return 202, b"{}"

    receiver.respond = datadog
    out = run_shipper(
        log,
        _spec({"type": "io.kestra.plugin.ee.datadog.LogExporter", "basePath": receiver.url,
               "apiKey": "{{ secret('DATADOG_API_KEY') }}"}),
        secrets={"DATADOG_API_KEY": "dd-secret"},
    )
    assert out["errors"] == {} and got == ids


def test_splunk_hec(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """/services/collector/event with 'Authorization: Splunk <token>', gzip, concatenated event objects."""
    log, ids = filled
    got: list[str] = []

    def splunk(req: Request) -> tuple[int, bytes]:
        assert req.path == "/services/collector/event"
        assert req.headers["authorization"] == "Splunk hec-token"
        assert req.headers["content-encoding"] == "gzip"
        for line in req.body.split(b"\n"):
            obj = orjson.loads(line)
            assert isinstance(obj["time"], float) and obj["sourcetype"] == "auditledger:audit"
            assert obj["index"] == "audit" and obj["source"] == "auditledger"
            got.append(obj["event"]["id"])
        return 200, b'{"text":"Success","code":0}'

    receiver.respond = splunk
    receiver.failures = [503]  # Splunk's "server is busy" (code 9) is retried
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.splunk.LogExporter", "host": receiver.url,
                                  "token": "hec-token", "index": "audit"}))
    assert out["errors"] == {} and got == ids


def test_splunk_invalid_event_is_reported_not_skipped(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """HEC's invalid-event-number refusal is permanent: the run reports it and the offset stays."""
    log, _ = filled
    receiver.respond = lambda r: (400, b'{"text":"Invalid data format","code":6,"invalid-event-number":3}')
    out = run_shipper(log, _spec({"type": "splunk", "url": receiver.url, "token": "t"}))
    assert "answered 400" in out["errors"]["x"] and out["offsets"] == {"x": 0}
    assert len(receiver.requests) == 1


class FakeElastic:
    """Index templates and _bulk with create semantics (409 for an existing _id)."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[str, dict[str, Any]]] = {}
        self.template: dict[str, Any] | None = None
        self.refuse: dict[int, int] = {}  # item position in the next bulk -> status
        self.bulks: list[int] = []

    def __call__(self, req: Request) -> tuple[int, bytes]:
        if req.method == "PUT" and req.path == "/_index_template/auditledger":
            self.template = orjson.loads(req.body)
            return 200, b'{"acknowledged":true}'
        assert req.method == "POST" and req.path == "/_bulk"
        assert req.headers["content-type"] == "application/x-ndjson"
        assert req.headers["authorization"] == "Basic " + base64.b64encode(b"elastic:pw").decode()
        assert req.body.endswith(b"\n")
        lines = req.body.splitlines()
        assert len(lines) % 2 == 0
        items = []
        refuse, self.refuse = self.refuse, {}
        for i in range(0, len(lines), 2):
            action, doc = orjson.loads(lines[i]), orjson.loads(lines[i + 1])
            meta = action["create"]
            assert meta["_index"] == "auditledger-" + datetime.now(UTC).strftime("%Y.%m.%d")
            assert meta["_id"] == doc["event"]["id"] and doc["ecs"]["version"]
            status = refuse.get(i // 2)
            if status is None:
                status = 409 if meta["_id"] in self.docs else 201
                self.docs.setdefault(meta["_id"], (meta["_index"], doc))
            item = {"_index": meta["_index"], "_id": meta["_id"], "status": status}
            if status >= 300:
                item["error"] = {"type": "x", "reason": "injected"}
            items.append({"create": item})
        self.bulks.append(len(items))
        errors = any(it["create"]["status"] >= 300 for it in items)
        return 200, orjson.dumps({"took": 1, "errors": errors, "items": items})


@pytest.mark.parametrize("kind", ["io.kestra.plugin.ee.elasticsearch.LogExporter", "opensearch"])
def test_elastic_bulk_with_partial_acceptance(
    filled: tuple[AuditLog, list[str]], receiver: Receiver, kind: str
) -> None:
    """ECS template installed; _bulk items refused with 429 are re-sent alone; duplicates answer 409 and count."""
    log, ids = filled
    fake = FakeElastic()
    fake.refuse = {1: 429, 5: 503, 7: 429}
    receiver.respond = fake
    spec = _spec({"type": kind, "connection": {"hosts": [receiver.url],
                                                "basicAuth": {"username": "elastic", "password": "pw"}}},
                 batchSize=60)
    out = run_shipper(log, spec)
    assert out["errors"] == {} and out["offsets"] == {"x": 120}
    assert set(fake.docs) == set(ids)
    assert fake.bulks == [60, 3, 60]  # the second request carried only the three refused documents
    assert fake.template is not None and fake.template["index_patterns"] == ["auditledger-*"]
    props = fake.template["template"]["mappings"]["properties"]
    assert props["@timestamp"] == {"type": "date"} and props["source"]["properties"]["ip"] == {"type": "ip"}
    # Re-shipping the same events (new offsetKey) stores nothing twice.
    out = run_shipper(log, {**spec, "offsetKey": "again"})
    assert out["errors"] == {} and len(fake.docs) == 120


def test_elastic_mapping_errors_fail_for_good(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A 400 item (mapping conflict) is not retried forever: reported, offset unchanged."""
    log, _ = filled
    fake = FakeElastic()
    fake.refuse = {0: 400}
    receiver.respond = fake
    out = run_shipper(log, _spec({"type": "elasticsearch", "indexTemplate": False, "connection": {
        "hosts": [receiver.url], "basicAuth": {"username": "elastic", "password": "pw"}}}))
    assert "for good" in out["errors"]["x"] and out["offsets"] == {"x": 0}


def test_otlp_http_json_logs(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """POST /v1/logs with an ExportLogsServiceRequest in OTLP/JSON and the configured auth header."""
    log, ids = filled
    got: list[str] = []

    def collector(req: Request) -> tuple[int, bytes]:
        assert req.path == "/v1/logs" and req.headers["content-type"] == "application/json"
        assert req.headers["x-api-key"] == "otel-key"
        body = orjson.loads(req.body)
        rl = body["resourceLogs"][0]
        assert {"key": "service.name", "value": {"stringValue": "auditledger"}} in rl["resource"]["attributes"]
        for rec in rl["scopeLogs"][0]["logRecords"]:
            assert rec["timeUnixNano"].isdigit() and rec["severityNumber"] in (9, 13)
            attrs = {a["key"]: a["value"] for a in rec["attributes"]}
            assert attrs["auditledger.seq"]["intValue"].isdigit()
            got.append(orjson.loads(rec["body"]["stringValue"])["id"])
        return 200, b"{}"

    receiver.respond = collector
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.opentelemetry.LogExporter",
                                  "otlpEndpoint": receiver.url, "authorizationHeaderName": "X-Api-Key",
                                  "authorizationHeaderValue": "otel-key"}))
    assert out["errors"] == {} and got == ids


def test_otlp_partial_success_is_not_silently_dropped(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """rejectedLogRecords > 0 fails the batch and keeps its offset."""
    log, _ = filled
    receiver.respond = lambda r: (200, b'{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too big"}}')
    out = run_shipper(log, _spec({"type": "otlp", "otlpEndpoint": receiver.url + "/v1/logs"}))
    assert "rejected 2" in out["errors"]["x"] and out["offsets"] == {"x": 0}


def _service_account(token_uri: str) -> tuple[str, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sa = {"type": "service_account", "client_email": "shipper@p.iam.gserviceaccount.com", "private_key": pem,
          "token_uri": token_uri}
    return orjson.dumps(sa).decode(), key.public_key()


def _google_token(req: Request, public: rsa.RSAPublicKey, scope: str) -> tuple[int, bytes]:
    """Check the RFC 7523 JWT bearer grant as Google's token endpoint would."""
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    head, claims, sig = form["assertion"].split(".")

    def pad(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    public.verify(pad(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    body = orjson.loads(pad(claims))
    assert orjson.loads(pad(head))["alg"] == "RS256" and body["scope"] == scope
    assert body["iss"] == "shipper@p.iam.gserviceaccount.com" and body["exp"] - body["iat"] == 3600
    return 200, b'{"access_token":"ya29.token","expires_in":3599,"token_type":"Bearer"}'


def test_google_cloud_logging_entries_write(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A service-account JWT is exchanged for a token; entries:write gets insertId = event id."""
    log, ids = filled
    sa, public = _service_account(receiver.url + "/token")
    got: list[str] = []

    def google(req: Request) -> tuple[int, bytes]:
        if req.path == "/token":
            return _google_token(req, public, "https://www.googleapis.com/auth/logging.write")
        assert req.path == "/v2/entries:write" and req.headers["authorization"] == "Bearer ya29.token"
        body = orjson.loads(req.body)
        assert body["logName"] == "projects/my-proj/logs/auditledger" and body["partialSuccess"] is False
        assert body["resource"] == {"type": "global", "labels": {"project_id": "my-proj"}}
        for entry in body["entries"]:
            assert entry["insertId"] == entry["jsonPayload"]["id"] and entry["timestamp"].endswith("Z")
            got.append(entry["insertId"])
        return 200, b"{}"

    receiver.respond = google
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.gcp.operationalsuite.LogExporter",
                                  "projectId": "my-proj", "serviceAccount": sa, "endpoint": receiver.url}))
    assert out["errors"] == {} and got == ids
    assert sum(r.path == "/token" for r in receiver.requests) == 1  # the token is cached


def test_gcs_objects(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """Media uploads to /upload/storage/v1/b/{bucket}/o, one NDJSON object per maxLinesPerFile lines."""
    log, ids = filled
    sa, public = _service_account(receiver.url + "/token")
    objects: dict[str, bytes] = {}

    def gcs(req: Request) -> tuple[int, bytes]:
        if req.path == "/token":
            return _google_token(req, public, "https://www.googleapis.com/auth/devstorage.read_write")
        url = urlsplit(req.path)
        query = parse_qs(url.query)
        assert url.path == "/upload/storage/v1/b/audit-bucket/o" and query["uploadType"] == ["media"]
        assert req.headers["authorization"] == "Bearer ya29.token"
        objects[query["name"][0]] = req.body
        return 200, orjson.dumps({"name": query["name"][0], "bucket": "audit-bucket"})

    receiver.respond = gcs
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.gcp.gcs.LogExporter", "bucket": "audit-bucket",
                                  "serviceAccount": sa, "endpoint": receiver.url, "maxLinesPerFile": 50,
                                  "logFilePrefix": "kestra/audit"}))
    assert out["errors"] == {}
    assert len(objects) == 3 and all(n.startswith("kestra/audit/main/") for n in objects)
    lines = [orjson.loads(x)["id"] for name in sorted(objects) for x in objects[name].splitlines()]
    assert lines == ids


def test_azure_monitor_logs_ingestion(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """Client-credentials token for monitor.azure.com, then gzip JSON arrays to the DCR stream (204)."""
    log, ids = filled
    got: list[str] = []

    def azure(req: Request) -> tuple[int, bytes]:
        if req.path == "/tenant-1/oauth2/v2.0/token":
            form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
            assert form == {"grant_type": "client_credentials", "client_id": "app", "client_secret": "pw",
                            "scope": "https://monitor.azure.com//.default"}
            return 200, b'{"access_token":"aad-token","expires_in":3600}'
        url = urlsplit(req.path)
        assert url.path == "/dataCollectionRules/dcr-123/streams/Custom-AuditLedger_CL"
        assert parse_qs(url.query) == {"api-version": ["2023-01-01"]}
        assert req.headers["authorization"] == "Bearer aad-token" and req.headers["content-encoding"] == "gzip"
        for item in orjson.loads(req.body):
            assert item["TimeGenerated"].endswith("Z")
            got.append(item["id"])
        return 204, b""

    receiver.respond = azure
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.azure.monitor.LogExporter",
                                  "endpoint": receiver.url, "tenantId": "tenant-1", "clientId": "app",
                                  "clientSecret": "pw", "ruleId": "dcr-123", "authorityHost": receiver.url}))
    assert out["errors"] == {} and got == ids


def test_azure_blob_block_blobs(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """PUT {container}/{name}?{sas} with x-ms-blob-type: BlockBlob and x-ms-version; 201 created."""
    log, ids = filled
    blobs: dict[str, bytes] = {}

    def azure(req: Request) -> tuple[int, bytes]:
        url = urlsplit(req.path)
        assert req.method == "PUT" and url.path.startswith("/audit/")
        assert parse_qs(url.query)["sig"] == ["abc"]
        assert req.headers["x-ms-blob-type"] == "BlockBlob" and req.headers["x-ms-version"]
        blobs[unquote(url.path)] = req.body
        return 201, b""

    receiver.respond = azure
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.azure.storage.LogExporter", "endpoint": receiver.url,
                                  "container": "audit", "sasToken": "?sv=2023-11-03&sig=abc", "gzip": True}))
    assert out["errors"] == {} and len(blobs) == 1
    import gzip

    assert [orjson.loads(x)["id"] for x in gzip.decompress(next(iter(blobs.values()))).splitlines()] == ids


def test_datadog_resends_only_the_chunks_not_accepted(ledger: AuditLog, receiver: Receiver) -> None:
    """A 2,500-event batch goes as 1,000-log requests; when the second fails, the first is not sent again."""
    from tests.ship.conftest import fill

    ids = fill(ledger, 2500)
    sizes: list[int] = []
    got: list[str] = []

    def datadog(req: Request) -> tuple[int, bytes]:
        items = orjson.loads(req.body)
        sizes.append(len(items))
        if len(sizes) == 2:
            return 500, b'{"errors":["internal"]}'
        got.extend(orjson.loads(i["message"])["id"] for i in items)
        return 202, b"{}"

    receiver.respond = datadog
    out = run_shipper(ledger, _spec({"type": "datadog", "basePath": receiver.url, "apiKey": "k"}, batchSize=2500))
    assert out["errors"] == {} and out["offsets"] == {"x": 2500}
    assert sizes == [1000, 1000, 1000, 500]  # after the failure: the last 1,500 only
    assert got == ids


def test_kestra_http_options_and_chunk_are_accepted(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """Kestra's `chunk` sets logs per request and its `options` (HttpConfiguration) block is accepted."""
    log, ids = filled
    sizes: list[int] = []

    def datadog(req: Request) -> tuple[int, bytes]:
        assert req.path == "/api/v2/logs"
        sizes.append(len(orjson.loads(req.body)))
        return 202, b"{}"

    receiver.respond = datadog
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.datadog.LogExporter", "basePath": receiver.url,
                                  "apiKey": "k", "chunk": 50,
                                  "options": {"timeout": {"readIdleTimeout": "PT5S"}, "followRedirects": False}}))
    assert out["errors"] == {} and sizes == [50, 50, 20] and len(ids) == 120


def test_elastic_path_prefix(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """connection.pathPrefix puts every request under a proxy's base path."""
    log, ids = filled
    fake = FakeElastic()

    def behind_proxy(req: Request) -> tuple[int, bytes]:
        assert req.path.startswith("/es/")
        req.path = req.path.removeprefix("/es")
        return fake(req)

    receiver.respond = behind_proxy
    out = run_shipper(log, _spec({"type": "elasticsearch", "connection": {
        "hosts": [receiver.url + "/"], "pathPrefix": "/es", "trustAllSsl": True,
        "basicAuth": {"username": "elastic", "password": "pw"}}}))
    assert out["errors"] == {} and set(fake.docs) == set(ids)


def test_gcs_with_kestras_example_and_application_default_credentials(
    filled: tuple[AuditLog, list[str]], receiver: Receiver, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kestra's GCS example properties run; without serviceAccount the key comes from GOOGLE_APPLICATION_CREDENTIALS."""
    log, ids = filled
    sa, public = _service_account(receiver.url + "/token")
    key_file = tmp_path / "key.json"
    key_file.write_text(sa)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    names: list[str] = []

    def gcs(req: Request) -> tuple[int, bytes]:
        if req.path == "/token":
            return _google_token(req, public, "https://www.googleapis.com/auth/cloud-platform")
        names.append(parse_qs(urlsplit(req.path).query)["name"][0])
        return 200, b"{}"

    receiver.respond = gcs
    out = run_shipper(log, _spec({"type": "io.kestra.plugin.ee.gcp.gcs.LogExporter", "projectId": "myProjectId",
                                  "format": "JSON", "maxLinesPerFile": 10000, "bucket": "my-bucket",
                                  "logFilePrefix": "kestra-log-file", "chunk": 1000, "endpoint": receiver.url,
                                  "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}))
    assert out["errors"] == {} and out["shipped"] == {"x": len(ids)}
    assert len(names) == 1 and names[0].startswith("kestra-log-file/main/")
