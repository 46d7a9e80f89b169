"""Elasticsearch and OpenSearch: the ``_bulk`` API, dated indices, an ECS index template.

Kestra's properties: ``connection`` (``hosts``, ``basicAuth`` {``username``,
``password``}, ``headers`` as ``"Name: value"`` texts) and ``indexName``;
``chunk`` is the number of documents per ``_bulk`` request. ``indexName`` may
hold strftime fields applied to each event's date (default
``auditledger-%Y.%m.%d``: one index a day). Ours: ``apiKey``, ``format``
(``ecs`` by default), ``indexTemplate`` (install an index template with ECS
mappings on first use), ``gzip``.

Each document is indexed with ``create`` and ``_id`` = event id, so a batch
sent twice is stored once: a ``409`` for an item means it is already there.
Items refused with 429 or 5xx are retried alone; any other item error (a
mapping conflict) fails the batch for good, and its offset stays put.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from auditledger.errors import ConfigError
from auditledger.ship.exporters.base import DeliveryError, HttpExporter, gzipped
from auditledger.ship.formats import JSON_FORMATS, Record, json_formatter
from auditledger.ship.spec import Props

_KEYWORD = {"type": "keyword", "ignore_above": 1024}


def ecs_template(patterns: list[str]) -> dict[str, Any]:
    """An index template for ECS records (ECS 8.x field types), strings as keywords by default."""
    kw = _KEYWORD
    return {
        "index_patterns": patterns,
        "priority": 200,
        "_meta": {"managed_by": "auditledger", "ecs_version": "8.11.0"},
        "template": {
            "settings": {"index": {"number_of_shards": 1}},
            "mappings": {
                "dynamic_templates": [{"strings": {"match_mapping_type": "string", "mapping": kw}}],
                "properties": {
                    "@timestamp": {"type": "date"},
                    "message": {"type": "text"},
                    "ecs": {"properties": {"version": kw}},
                    "event": {
                        "properties": {
                            "id": kw,
                            "kind": kw,
                            "category": kw,
                            "type": kw,
                            "action": kw,
                            "outcome": kw,
                            "sequence": {"type": "long"},
                            "dataset": kw,
                            "module": kw,
                            "hash": kw,
                            "created": {"type": "date"},
                        }
                    },
                    "user": {"properties": {"id": kw, "name": kw, "changes": {"properties": {"id": kw}}}},
                    "source": {"properties": {"ip": {"type": "ip"}}},
                    "user_agent": {"properties": {"original": kw}},
                    "organization": {"properties": {"id": kw}},
                    "auditledger": {
                        "properties": {
                            "tenant": kw,
                            "seq": {"type": "long"},
                            "resource_type": kw,
                            "action": kw,
                            "actor_type": kw,
                            "leaf_hash": kw,
                            "details": {"type": "object", "dynamic": True},
                            "before": {"type": "text", "index": False},
                            "after": {"type": "text", "index": False},
                        }
                    },
                },
            },
        },
    }


class ElasticsearchExporter(HttpExporter):
    name = "elasticsearch"
    flavour: ClassVar[str] = "Elasticsearch"

    def configure(self, props: Props) -> None:
        conn = props.mapping("connection")
        hosts = conn.get("hosts") or props.texts("hosts")
        if isinstance(hosts, str):
            hosts = [hosts]
        if not hosts or not all(isinstance(h, str) and h.startswith(("http://", "https://")) for h in hosts):
            raise ConfigError(f"{props.where}.connection.hosts: a list of http(s):// URLs is required")
        self.hosts = [props.secrets.render(h, f"{props.where}.connection.hosts").rstrip("/") for h in hosts]
        self.headers: dict[str, str] = {}
        for i, line in enumerate(conn.get("headers") or []):
            name, sep, value = str(line).partition(":")
            if not sep:
                raise ConfigError(f"{props.where}.connection.headers[{i}]: expected 'Name: value'")
            self.headers[name.strip()] = props.secrets.render(value.strip(), f"{props.where}.connection.headers")
        basic = conn.get("basicAuth")
        self.auth: tuple[str, str] | None = None
        if basic is not None:
            if not isinstance(basic, dict) or "username" not in basic:
                raise ConfigError(f"{props.where}.connection.basicAuth: needs username and password")
            self.auth = (
                props.secrets.render(str(basic["username"]), f"{props.where}.connection.basicAuth.username"),
                props.secrets.render(str(basic.get("password", "")), f"{props.where}.connection.basicAuth.password"),
            )
        prefix = str(conn.get("pathPrefix") or "").strip("/")
        self.prefix = f"/{prefix}" if prefix else ""  # ES behind a proxy that adds a base path
        trust_all = conn.get("trustAllSsl") in (True, "true")
        # strictDeprecationMode only changes how a Java client reacts to warnings: accepted, nothing to do.
        api_key = props.text("apiKey")
        if api_key:
            self.headers["Authorization"] = f"ApiKey {api_key}"
        self.index = props.text("indexName", "auditledger-%Y.%m.%d") or "auditledger-%Y.%m.%d"
        if not re.fullmatch(r"[a-z0-9][a-z0-9._+-]{0,200}", re.sub(r"%[YmdHjV]", "0", self.index)):
            raise ConfigError(f"{props.where}.indexName: lowercase letters, digits, '.', '_', '-', '+' and %Y %m %d %H")
        self.chunk = props.integer("chunk", 1000, low=1, high=100_000)
        self.fmt = json_formatter(props.choice("format", JSON_FORMATS, "ecs"), f"{props.where}.format")
        self.template = props.boolean("indexTemplate", True)
        self.template_name = props.text("templateName", "auditledger") or "auditledger"
        self.compress = props.boolean("gzip", False)
        self.http_options(props)
        if trust_all:
            self.verify = False
        self._host = 0

    def _url(self, path: str) -> str:
        return f"{self.hosts[self._host % len(self.hosts)]}{self.prefix}{path}"

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> Any:
        headers = {"Content-Type": content_type, **self.headers}
        if self.compress:
            body = gzipped(body)
            headers["Content-Encoding"] = "gzip"
        if self.auth is not None:
            import base64

            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            response = self.request(method, self._url(path), content=body, headers=headers)
        except DeliveryError:
            self._host += 1  # try the next host on the next attempt
            raise
        try:
            return response.json()
        except ValueError:
            raise DeliveryError(f"{self.name} {self.id}: {path} answered with no JSON") from None

    def open(self) -> None:
        if self.template:
            # Everything from the first date field on varies: auditledger-%Y.%m.%d -> auditledger-*
            pattern = self.index.split("%", 1)[0] + "*" if "%" in self.index else self.index
            body = orjson.dumps(ecs_template([pattern]))
            self._call("PUT", f"/_index_template/{self.template_name}", body, "application/json")

    def send(self, records: Sequence[Record]) -> None:
        failed: list[int] = []
        permanent: list[str] = []
        for start in range(0, len(records), self.chunk):
            piece = records[start : start + self.chunk]
            lines: list[bytes] = []
            for r in piece:
                index = r.datetime.strftime(self.index) if "%" in self.index else self.index
                lines.append(orjson.dumps({"create": {"_index": index, "_id": r.id}}))
                lines.append(orjson.dumps(self.fmt(r)))
            try:
                answer = self._call("POST", "/_bulk", b"\n".join(lines) + b"\n", "application/x-ndjson")
            except DeliveryError as exc:
                raise exc.only([*failed, *range(start, len(records))]) from None
            if not answer.get("errors"):
                continue
            items = answer.get("items") or []
            if len(items) != len(piece):
                failed.extend(range(start, start + len(piece)))
                continue
            for i, item in enumerate(items):
                result: dict[str, Any] = next(iter(item.values()), {}) if isinstance(item, dict) else {}
                status = int(result.get("status", 500))
                if status < 300 or status == 409:  # 409: this event id is already indexed
                    continue
                failed.append(start + i)
                if status != 429 and status < 500:
                    reason = (result.get("error") or {}).get("reason", "") if isinstance(result, dict) else ""
                    permanent.append(f"{piece[i].id}: {status} {str(reason)[:120]}")
        if failed:
            raise DeliveryError(
                f"{self.name} {self.id}: _bulk refused {len(failed)} of {len(records)} documents"
                + (f"; for good: {'; '.join(permanent[:3])}" if permanent else ""),
                retryable=not permanent,
                failed=failed,
            )


class OpenSearchExporter(ElasticsearchExporter):
    name = "opensearch"
    flavour = "OpenSearch"
