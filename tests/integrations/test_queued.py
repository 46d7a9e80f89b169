"""Queued: integrations hand events to the client's background sender, validated at the call site."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from auditledger import Actor
from auditledger.client import Client
from auditledger.errors import ConfigError, ValidationError
from auditledger.integrations import audit_scope
from auditledger.integrations.context import Queued, build_event, emit


def test_a_batch_with_a_bad_event_queues_nothing() -> None:
    """One invalid event in a batch raises ValidationError naming the field, and none of the batch is queued."""
    client = Client("http://127.0.0.1:9", flush_interval=60)  # nothing is sent: the batch is refused first
    try:
        good = build_event("FLOW", "UPDATE", details={"namespace": "company.team"})
        bad = build_event("FLOW", "UPDATE", details={"namespace": "x" * 2000})
        with pytest.raises(ValidationError) as info:
            Queued(client).record_many([good, bad])
        assert info.value.field == "details.namespace"
        assert client.pending == 0
    finally:
        client.close()


def test_events_keep_the_scope_and_return_their_keys() -> None:
    """Queued events carry the scope's actor and request id, and record_many returns their idempotency keys."""
    bodies: list[dict[str, Any]] = []

    def receive(request: httpx.Request) -> httpx.Response:  # what the server would be sent
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json={"receipts": [{"id": "x", "seq": 0, "duplicate": False}]})

    client = Client("http://audit.test", flush_interval=60, transport=httpx.MockTransport(receive))
    with audit_scope(Actor.user("anna@acme.io"), ip="192.0.2.1", request_id="req-1", sink=Queued(client)):
        keys = emit([build_event("FLOW", "DELETE", details={"flowId": "hello"})])
    assert len(keys) == 1 and client.pending == 1 and bodies == []
    client.close()
    [sent] = bodies[0]["events"]
    assert sent["idempotency_key"] == keys[0]
    assert sent["actor"] == {"type": "USER", "id": "anna@acme.io", "ip": "192.0.2.1"}
    assert sent["details"] == {"requestId": "req-1", "flowId": "hello"}


def test_queued_needs_a_client_that_queues() -> None:
    """Wrapping something without queue_many() is a ConfigError saying so."""
    with pytest.raises(ConfigError, match="queue_many"):
        Queued(object())
