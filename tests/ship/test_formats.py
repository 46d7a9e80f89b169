"""Record formats: ECS, OCSF class choice, CEF escaping, RFC 5424 header rules."""

from __future__ import annotations

from auditledger import AuditLog
from auditledger.ship.formats import Record, SyslogHeader, cef_text, ecs, line_formatter, ocsf, rfc5424


def _record(log: AuditLog, **event: object) -> Record:
    receipt = log.record(**event)  # type: ignore[arg-type]
    row = log.store.get("main", receipt.id)
    assert row is not None
    return Record(row.seq, row.id, row.date, row.body)


def test_ecs_fields(ledger: AuditLog) -> None:
    """ECS maps the actor to user.* and source.ip, the action to event.*, details under auditledger.*."""
    r = _record(ledger, resource_type="FLOW", action="UPDATE",
                actor={"type": "USER", "id": "anna", "name": "Anna", "ip": "10.0.0.1"},
                details={"namespace": "prod", "id": "f1"}, before={"a": 1}, after="text")
    doc = ecs(r)
    assert doc["event"]["id"] == r.id and doc["event"]["type"] == ["change"]
    assert doc["event"]["category"] == ["configuration"] and doc["event"]["action"] == "flow-update"
    assert doc["user"] == {"id": "anna", "name": "Anna"} and doc["source"] == {"ip": "10.0.0.1"}
    assert doc["auditledger"]["details"] == {"namespace": "prod", "id": "f1"}
    assert doc["auditledger"]["before"] == '{"a":1}' and doc["auditledger"]["after"] == "text"
    assert doc["@timestamp"].endswith("Z")


def test_ocsf_classes(ledger: AuditLog) -> None:
    """Logins are Authentication (3002), identity resources Entity Management (3004), the rest API Activity (6003)."""
    login = ocsf(_record(ledger, resource_type="USER", action="LOGIN_FAILURE", actor={"type": "USER", "id": "x"}))
    assert (login["class_uid"], login["activity_id"], login["status_id"]) == (3002, 1, 2)
    assert login["type_uid"] == 300201
    role = ocsf(_record(ledger, resource_type="ROLE", action="DELETE", actor={"type": "SERVICE_ACCOUNT", "id": "sa"}))
    assert (role["class_uid"], role["activity_id"], role["type_uid"]) == (3004, 4, 300404)
    flow = ocsf(_record(ledger, resource_type="FLOW", action="EXECUTE", actor={"type": "SYSTEM", "id": "s"}))
    assert (flow["class_uid"], flow["activity_id"], flow["api"]["operation"]) == (6003, 99, "EXECUTE")
    assert flow["metadata"]["uid"] and flow["metadata"]["version"] == "1.1.0"


def test_cef_escapes_separators(ledger: AuditLog) -> None:
    """Pipes and backslashes are escaped in the header, '=' and newlines in extension values."""
    r = _record(ledger, resource_type="FLOW", action="CREATE",
                actor={"type": "USER", "id": "a=b", "name": "x|y\\z\nw"})
    text = cef_text(r)
    assert text.startswith("CEF:0|auditledger|auditledger|1|FLOW:CREATE|FLOW CREATE|3|")
    assert "suid=a\\=b" in text and "suser=x|y\\\\z\\nw" in text and "\n" not in text


def test_rfc5424_header(ledger: AuditLog) -> None:
    """PRI is facility*8+severity, header fields are printable ASCII, SD values escape '\"', '\\' and ']'."""
    r = _record(ledger, resource_type="FLOW", action="CREATE", actor={"type": "USER", "id": 'we"ird]\\'},
                outcome="failure")
    line = rfc5424(r, "msg", SyslogHeader(facility=10, hostname="host name", app_name="app"))
    head, _, _ = line.partition(b"\xef\xbb\xbf")
    assert head.startswith(b"<84>1 ")  # 10*8 + 4 (warning: a failure)
    assert b" hostname app - CREATE " in head
    assert b'actor="we\\"ird\\]\\\\"' in head


def test_native_line_is_the_canonical_bytes_plus_leaf_hash(ledger: AuditLog) -> None:
    """The native line starts with the canonical bytes (less the closing brace) and ends with the leaf hash."""
    r = _record(ledger, resource_type="FLOW", action="CREATE", actor={"type": "USER", "id": "a"})
    line = line_formatter("native", "f")(r)
    assert line.startswith(r.body[:-1]) and line.endswith(b'"leaf_hash":"' + r.leaf_hash.hex().encode() + b'"}')
    assert line_formatter("ION", "f")(r) == line
