"""Hostile requests: oversized, deeply nested, invalid UTF-8, NUL bytes, too many details, SQL in every filter.

Each gets a clear 4xx (a JSON ``message`` naming the problem), never a 5xx, and the stored data is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Live
from tests.store.pg import pg_schema

GOOD = {"resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "anna"},
        "details": {"namespace": "company.team", "flowId": "hello"}}
SQL = [
    "' OR '1'='1", "'; DROP TABLE events; --", "\" OR 1=1 --", "1) UNION SELECT * FROM api_tokens --",
    "%' AND 1=0 UNION SELECT hash FROM api_tokens --", "x'||(SELECT hash FROM api_tokens LIMIT 1)||'",
    "\\'; DELETE FROM leaves; --", "*/ OR /*", "$$; TRUNCATE heads; $$",
]
FILTER_PARAMS = ["q", "namespace", "flowId", "executionId", "userId", "id", "resources", "details", "type",
                 "startDate", "endDate", "timeRange", "sort", "cursor", "size", "page", "facets", "interval",
                 "filters[namespace][EQUALS]", "filters[details][EQUALS][flowId]", "filters[userId][CONTAINS]",
                 "filters[resources][IN]", "filters[q][EQUALS]", "filters[startDate][GREATER_THAN_OR_EQUAL_TO]",
                 "filters[or][0][namespace][PREFIX]", "filters[details][REGEX][x]"]


def _snapshot(live: Live) -> tuple[Any, ...]:
    store = live.ledger.store
    tables = ("events", "leaves", "details", "heads", "api_tokens")
    counts = tuple(int(store.query(f"SELECT count(*) FROM {t}")[0][0]) for t in tables)
    return counts, live.ledger.verify().sizes


def _explains(answer: httpx.Response) -> None:
    """A refusal: 4xx with a JSON message that says something."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert isinstance(body.get("message"), str) and len(body["message"]) > 5, body


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live(request: pytest.FixtureRequest, make_live: Callable[..., Live]) -> Iterator[Live]:
    """A server on SQLite, then on a fresh PostgreSQL schema, holding three events of tenant acme."""
    with ExitStack() as stack:
        db = {} if request.param == "sqlite" else {"db": stack.enter_context(pg_schema())}
        server = make_live(max_body_bytes=1 << 20, max_state_bytes=64 << 10, **db)
        with server.client("ingest@acme") as http:
            assert http.post("/api/v1/acme/auditlogs", json=[GOOD] * 3).status_code == 201
        yield server
        server.stop()


def test_hostile_bodies_get_clear_4xx_and_store_nothing(live: Live) -> None:
    """Oversized, nested, invalid UTF-8, NUL-laden, over-detailed bodies are refused with a reason; nothing stored."""
    before = _snapshot(live)
    nested = "[" * 100_000 + "]" * 100_000
    bodies: dict[str, bytes] = {
        "oversized": b'{"resource_type":"FLOW","pad":"' + b"x" * (1 << 20) + b'"}',
        "nested 100000 in after": b'{"resource_type":"FLOW","action":"UPDATE","actor":{"type":"USER","id":"a"},'
                                  b'"after":' + nested.encode() + b"}",
        "nested in details": b'{"resource_type":"FLOW","action":"UPDATE","actor":{"type":"USER","id":"a"},'
                             b'"details":{"a":' + b"[" * 500 + b"]" * 500 + b"}}",
        "invalid utf-8": b'{"resource_type":"FLOW","action":"UPDATE","actor":{"type":"USER","id":"\xff\xfe"}}',
        "lone surrogate escape": b'{"resource_type":"FLOW","action":"UPDATE","actor":{"type":"USER","id":"\\ud800"}}',
        "not json": b"\x00\x01\x02",
        "empty": b"",
        "a number": b"12345678901234567890123456789012345678901234567890",
        "after nested 2000": _with_after(b'{"n":' * 2000 + b'"leaf"' + b"}" * 2000),
        "huge integer": _with_after(b'{"n":1' + b"0" * 400 + b"}"),
        "empty list": b"[]",
    }
    events: dict[str, Any] = {
        "details 100000": {**GOOD, "details": {f"k{i}": "v" for i in range(100_000)}},
        "details 65": {**GOOD, "details": {f"k{i}": "v" for i in range(65)}},
        "detail value 1025": {**GOOD, "details": {"k": "v" * 1025}},
        "detail key sql": {**GOOD, "details": {"a'; DROP TABLE events; --": "v"}},
        "nul in actor id": {**GOOD, "actor": {"type": "USER", "id": "an\x00na"}},
        "nul in detail": {**GOOD, "details": {"namespace": "a\x00b"}},
        "nul in resource type": {**GOOD, "resource_type": "FLOW\x00"},
        "nul in idempotency key": {**GOOD, "idempotency_key": "k\x00"},
        "after too large": {**GOOD, "after": "x" * (65 << 10)},
        "unknown field": {**GOOD, "tenant": "globex"},
        "source forged": {**GOOD, "source": {"token": "tok_admin"}},
        "outcome sql": {**GOOD, "outcome": "success' OR 1=1"},
        "occurred_at garbage": {**GOOD, "occurred_at": "2026-02-30T25:61:00Z"},
        "actor type sql": {**GOOD, "actor": {"type": "USER'--", "id": "a"}},
        "batch too large": {"events": [GOOD] * 5001},
    }
    with live.client("ingest@acme") as http:
        for name, raw in bodies.items():
            answer = http.post("/api/v1/acme/auditlogs", content=raw, headers={"content-type": "application/json"})
            _explains(answer)
            assert answer.status_code in (400, 413, 422), name
        for name, event in events.items():
            answer = http.post("/api/v1/acme/auditlogs", json=event)
            _explains(answer)
            assert answer.status_code in (400, 413, 422), (name, answer.status_code)
        for path in ("/api/v1/ac%00me/auditlogs", "/api/v1/ACME'--/auditlogs", "/api/v1/" + "a" * 300 + "/auditlogs"):
            _explains(http.post(path, json=GOOD))
    assert _snapshot(live) == before


def _with_after(after: bytes) -> bytes:
    return b'{"resource_type":"FLOW","action":"UPDATE","actor":{"type":"USER","id":"a"},"after":' + after + b"}"


def test_sql_fragments_in_every_filter_change_nothing(live: Live) -> None:
    """SQL fragments (and NUL bytes) in every search parameter give 200 with no foreign rows, or a clear 4xx."""
    before = _snapshot(live)
    answers = 0
    plans = {
        "/api/v1/acme/auditlogs/search": [*SQL, "a\x00b"],
        "/api/v1/acme/auditlogs/export": SQL[:3],
        "/api/v1/auditlogs/search": SQL[3:6],
    }
    with live.client("admin@*") as http:
        for route, values in plans.items():
            for param in FILTER_PARAMS:
                for value in values:
                    answer = http.get(route, params={param: value})
                    answers += 1
                    if answer.status_code != 200:
                        _explains(answer)
                        continue
                    assert "alt_" not in answer.text, "no token secret leaks"
                    if route.endswith("search"):
                        assert answer.json()["total"] in (0, 3), (param, value, answer.json()["total"])
        # NUL and SQL in the ids of paths: a plain 404 or 422, on PostgreSQL too (which cannot bind NUL).
        for value in ("a%00b", "%27%20OR%20%271%27%3D%271", "x%00%27--"):
            for path in ("/api/v1/acme/auditlogs/{v}", "/api/v1/acme/auditlogs/history/{v}",
                         "/api/v1/acme/auditlogs/{v}/diff", "/api/v1/acme/auditlogs/{v}/proof",
                         "/api/v1/auditlogs/{v}/diff"):
                answer = http.get(path.format(v=value))
                answers += 1
                if answer.status_code != 200:
                    _explains(answer)
        # The POST search takes its filters as JSON.
        for value in SQL:
            answer = http.post("/api/v1/acme/auditlogs/find", json={"q": value})
            answers += 1
            if answer.status_code != 200:
                _explains(answer)
    print(f"hostile filters: {answers} requests, no 5xx")
    assert _snapshot(live) == before
