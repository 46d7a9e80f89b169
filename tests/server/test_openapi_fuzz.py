"""schemathesis against the served OpenAPI: generated requests never get a 5xx nor an answer that breaks the schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.server.conftest import Live

CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
    checks.status_code_conformance,
]


@pytest.mark.slow
def test_api_conforms(live: Live) -> None:
    """Every documented operation, fed schema-shaped input, answers within its documented shapes and never 5xx."""
    with live.client("ingest@acme") as c:  # something to find, diff and export
        c.post("/api/v1/acme/auditlogs", json={
            "resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "anna"},
            "details": {"id": "hello", "namespace": "company"}, "before": {"a": 1}, "after": {"a": 2},
        })
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    headers = live.as_header(live.tokens["admin@*"])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)

        run()
