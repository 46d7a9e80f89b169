"""Record formats: how one event looks at a destination.

- ``native``: the canonical event bytes (the ones the leaf hash covers) with
  ``leaf_hash`` added, so a receiver can recompute the hash after removing it.
- ``ecs``: Elastic Common Schema 8.x (``@timestamp``, ``event.*``, ``user.*``,
  ``source.ip``), our own fields under ``auditledger.*``.
- ``ocsf``: OCSF 1.1 — Authentication (3002) for logins, Entity Management
  (3004) for identity resources, API Activity (6003) for the rest.
- ``rfc5424``: a full RFC 5424 syslog line whose MSG is the native JSON.
- ``cef``: ArcSight Common Event Format 0 text.

Every format carries the event ``id`` so that a destination can de-duplicate
what at-least-once delivery sends twice.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from auditledger import canonical
from auditledger.errors import ConfigError
from auditledger.model import to_micros

FORMATS = ("native", "ecs", "ocsf", "rfc5424", "cef")
JSON_FORMATS = ("native", "ecs", "ocsf")
ECS_VERSION = "8.11.0"
OCSF_VERSION = "1.1.0"
# RFC 5612 reserves 32473 for documentation; users set their own enterprise number with ``sdId``.
DEFAULT_SD_ID = "auditledger@32473"
_BOM = "\ufeff"


class Record:
    """One event to ship: its position, id, date (µs), canonical bytes and leaf hash.

    The leaf hash is the ledger's own when the shipper read it from the store,
    and is computed from the bytes (RFC 9162 §2.1.1) only when not given.
    """

    __slots__ = ("_leaf", "_obj", "body", "date", "id", "seq")

    def __init__(self, seq: int, id: str, date: int, body: bytes, leaf_hash: bytes | None = None) -> None:
        self.seq = seq
        self.id = id
        self.date = date
        self.body = body
        self._leaf = leaf_hash or None
        self._obj: dict[str, Any] | None = None

    @property
    def leaf_hash(self) -> bytes:
        if self._leaf is None:
            self._leaf = canonical.leaf_hash(self.body)
        return self._leaf

    def event(self) -> dict[str, Any]:
        """The native record as a dict (parsed once)."""
        if self._obj is None:
            obj = orjson.loads(self.body)
            obj["leaf_hash"] = self.leaf_hash.hex()
            self._obj = obj
        return dict(self._obj)

    @classmethod
    def from_native(cls, line: bytes | memoryview) -> Record:
        """The record a native line (no newline) was made from: the line minus its ``leaf_hash`` member."""
        raw = bytes(line)
        obj = orjson.loads(raw)
        date = to_micros(datetime.fromisoformat(obj["date"]))
        return cls(obj["seq"], obj["id"], date, raw[: -len(_LEAF_MEMBER)] + b"}", bytes.fromhex(obj["leaf_hash"]))

    @property
    def iso_date(self) -> str:
        return self.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @property
    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.date // 1_000_000, UTC).replace(microsecond=self.date % 1_000_000)


def native_line(r: Record) -> bytes:
    # The canonical bytes are one JSON object; appending a member keeps them byte-identical before it.
    # The stores build the same lines in SQL (Store.native_lines): change both or neither.
    return b'%s,"leaf_hash":"%s"}' % (r.body[:-1], r.leaf_hash.hex().encode())


# What native_line appends after the body's closing brace is removed: `,"leaf_hash":"<64 hex>"}`.
_LEAF_MEMBER = b',"leaf_hash":"' + b"0" * 64 + b'"}'


# ---------------------------------------------------------------- ECS

_ECS_CATEGORY = {
    "LOGIN": (["authentication"], ["start"]),
    "LOGOUT": (["authentication"], ["end"]),
    "LOGIN_FAILURE": (["authentication"], ["start"]),
    "ACCOUNT_LOCKED": (["iam"], ["user", "change"]),
    "IMPERSONATE": (["iam"], ["admin"]),
}
_ECS_TYPE = {"CREATE": "creation", "UPDATE": "change", "DELETE": "deletion", "READ": "access"}
_IAM = frozenset(
    [
        "USER",
        "GROUP",
        "ROLE",
        "BINDING",
        "SERVICE_ACCOUNT",
        "CREDENTIAL",
        "INVITATION",
        "TENANT_ACCESS",
        "SECURITY_INTEGRATION",
    ]
)


def ecs(r: Record) -> dict[str, Any]:
    e = r.event()
    action, rtype, actor = e["action"], e["resource_type"], e["actor"]
    category, types = _ECS_CATEGORY.get(
        action, (["iam"] if rtype in _IAM else ["configuration"], [_ECS_TYPE.get(action, "info")])
    )
    out: dict[str, Any] = {
        "@timestamp": e["date"],
        "ecs": {"version": ECS_VERSION},
        "message": f"{actor['type']} {actor['id']} {action} {rtype} {e['details'].get('id', '')}".rstrip(),
        "event": {
            "id": e["id"],
            "kind": "event",
            "category": category,
            "type": types,
            "action": f"{rtype.lower()}-{action.lower()}",
            "outcome": e["outcome"],
            "sequence": e["seq"],
            "dataset": "auditledger.audit",
            "module": "auditledger",
            "hash": e["leaf_hash"],
        },
        "user": {"id": actor["id"], **({"name": actor["name"]} if "name" in actor else {})},
        "organization": {"id": e["tenant"]},
        "auditledger": {
            "tenant": e["tenant"],
            "seq": e["seq"],
            "resource_type": rtype,
            "action": action,
            "actor_type": actor["type"],
            "details": e["details"],
            "leaf_hash": e["leaf_hash"],
        },
    }
    if "occurred_at" in e:
        out["event"]["created"] = e["occurred_at"]
    if "impersonated_by" in actor:
        out["user"]["changes"] = {"id": actor["impersonated_by"]}
    if "ip" in actor:
        out["source"] = {"ip": actor["ip"]}
    if "user_agent" in actor:
        out["user_agent"] = {"original": actor["user_agent"]}
    # States can be any JSON shape; as texts they cannot clash with an index mapping.
    for key in ("before", "after"):
        if key in e:
            value = e[key]
            out["auditledger"][key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return out


# ---------------------------------------------------------------- OCSF

_OCSF_ACTIVITY = {"CREATE": (1, "Create"), "READ": (2, "Read"), "UPDATE": (3, "Update"), "DELETE": (4, "Delete")}
_OCSF_AUTH = {"LOGIN": (1, "Logon"), "LOGIN_FAILURE": (1, "Logon"), "LOGOUT": (2, "Logoff")}
_OCSF_USER_TYPE = {"USER": (1, "User"), "SERVICE_ACCOUNT": (99, "Service Account"), "SYSTEM": (3, "System")}


def ocsf(r: Record) -> dict[str, Any]:
    e = r.event()
    action, rtype, actor = e["action"], e["resource_type"], e["actor"]
    if action in _OCSF_AUTH:
        class_uid, class_name, category = 3002, "Authentication", (3, "Identity & Access Management")
        activity_id, activity = _OCSF_AUTH[action]
    elif rtype in _IAM:
        class_uid, class_name, category = 3004, "Entity Management", (3, "Identity & Access Management")
        activity_id, activity = _OCSF_ACTIVITY.get(action, (99, action.title()))
    else:
        class_uid, class_name, category = 6003, "API Activity", (6, "Application Activity")
        activity_id, activity = _OCSF_ACTIVITY.get(action, (99, action.title()))
    failed = e["outcome"] == "failure" or action == "LOGIN_FAILURE"
    type_id, type_name = _OCSF_USER_TYPE[actor["type"]]
    user: dict[str, Any] = {"uid": actor["id"], "type_id": type_id, "type": type_name}
    if "name" in actor:
        user["name"] = actor["name"]
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category[0],
        "category_name": category[1],
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": 1,
        "severity": "Informational",
        "status_id": 2 if failed else 1,
        "status": "Failure" if failed else "Success",
        "time": r.date // 1000,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": e["id"],
            "sequence": e["seq"],
            "tenant_uid": e["tenant"],
            "log_name": "audit",
            "product": {"name": "auditledger", "vendor_name": "auditledger"},
        },
        "actor": {"user": user},
        "unmapped": {"details": e["details"], "leaf_hash": e["leaf_hash"], "resource_type": rtype, "action": action},
    }
    if "impersonated_by" in actor:
        out["actor"]["invoked_by"] = actor["impersonated_by"]
    if "ip" in actor:
        out["src_endpoint"] = {"ip": actor["ip"]}
    if "user_agent" in actor:
        out["http_request"] = {"user_agent": actor["user_agent"]}
    resource = {"uid": e["details"].get("id", ""), "type": rtype}
    if class_uid == 6003:
        out["api"] = {"operation": action, "service": {"name": rtype}}
        out["resources"] = [resource]
    elif class_uid == 3004:
        out["entity"] = resource
    else:
        out["user"] = user
    return out


# ---------------------------------------------------------------- syslog and CEF


def _cef_header(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _cef_value(text: str) -> str:
    return (
        text.replace("\\", "\\\\").replace("=", "\\=").replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
    )


def cef_text(r: Record) -> str:
    """CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension."""
    e = r.event()
    actor = e["actor"]
    severity = 5 if e["outcome"] == "failure" or e["action"] in ("LOGIN_FAILURE", "ACCOUNT_LOCKED") else 3
    ext = {
        "rt": str(r.date // 1000),
        "externalId": e["id"],
        "act": e["action"],
        "outcome": e["outcome"],
        "suid": actor["id"],
        "suser": actor.get("name", actor["id"]),
        "cs1Label": "tenant",
        "cs1": e["tenant"],
        "cn1Label": "seq",
        "cn1": str(e["seq"]),
        "cs2Label": "resourceType",
        "cs2": e["resource_type"],
        "cs3Label": "leafHash",
        "cs3": e["leaf_hash"],
        "cs4Label": "details",
        "cs4": orjson.dumps(e["details"], option=orjson.OPT_SORT_KEYS).decode(),
    }
    if "ip" in actor:
        ext["src"] = actor["ip"]
    if "user_agent" in actor:
        ext["requestClientApplication"] = actor["user_agent"]
    head = "|".join(
        _cef_header(x)
        for x in (
            "auditledger",
            "auditledger",
            "1",
            f"{e['resource_type']}:{e['action']}",
            f"{e['resource_type']} {e['action']}",
            str(severity),
        )
    )
    return f"CEF:0|{head}|" + " ".join(f"{k}={_cef_value(v)}" for k, v in ext.items())


def _sd_value(text: str) -> str:
    # RFC 5424 §6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields: PRINTUSASCII (33-126), NILVALUE '-' when empty."""
    clean = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


@dataclass(frozen=True, slots=True)
class SyslogHeader:
    facility: int = 13  # log audit (RFC 5424 table 1)
    app_name: str = "auditledger"
    hostname: str = ""
    sd_id: str = DEFAULT_SD_ID


def rfc5424(r: Record, message: str, header: SyslogHeader) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG`` (RFC 5424 §6)."""
    e = r.event()
    severity = 4 if e["outcome"] == "failure" else 6  # warning / informational
    pri = header.facility * 8 + severity
    host = _printable(header.hostname or socket.gethostname(), 255)
    sd = (
        f'[{header.sd_id} id="{_sd_value(e["id"])}" tenant="{_sd_value(e["tenant"])}" seq="{e["seq"]}"'
        f' resource="{_sd_value(e["resource_type"])}" actor="{_sd_value(e["actor"]["id"])}"]'
    )
    line = (
        f"<{pri}>1 {r.iso_date} {host} {_printable(header.app_name, 48)} - {_printable(e['action'], 32)} {sd} "
        f"{_BOM}{message}"
    )
    return line.encode("utf-8")


# ---------------------------------------------------------------- choosing


def json_formatter(name: str, where: str) -> Callable[[Record], dict[str, Any]]:
    """The dict producer of a JSON format, for exporters that embed records in their own JSON."""
    table: dict[str, Callable[[Record], dict[str, Any]]] = {"native": Record.event, "ecs": ecs, "ocsf": ocsf}
    key = name.lower()
    if key not in table:
        raise ConfigError(f"{where}: format {name!r} is not one of {', '.join(JSON_FORMATS)}")
    return table[key]


def line_formatter(name: str, where: str, header: SyslogHeader | None = None) -> Callable[[Record], bytes]:
    """The bytes of one record as a line (no newline) in format ``name``."""
    key = name.lower()
    if key in ("native", "json", "ion"):  # Ion text is a superset of JSON (Kestra's ION option)
        return native_line
    if key in ("ecs", "ocsf"):
        fn = json_formatter(key, where)
        return lambda r: orjson.dumps(fn(r))
    if key == "cef":
        return lambda r: cef_text(r).encode("utf-8")
    if key in ("rfc5424", "syslog"):
        h = header or SyslogHeader()
        return lambda r: rfc5424(r, native_line(r).decode("utf-8"), h)
    raise ConfigError(f"{where}: format {name!r} is not one of {', '.join(FORMATS)} (or Kestra's JSON, ION)")
