"""@audited: one event per call or block, with outcome, templated details, sync and async."""

from __future__ import annotations

import asyncio

import pytest

from auditledger import Actor
from auditledger.errors import ConfigError
from auditledger.integrations import audit_scope, audited
from auditledger.testing import Capture, assert_recorded, recorded


def test_success_and_failure_are_recorded_with_outcome() -> None:
    """A returning call records success; a raising one records failure with the error class, and re-raises."""
    capture = Capture()

    @audited("FLOW", "UPDATE", details={"namespace": "{namespace}", "flowId": "{flow_id}"}, sink=capture)
    def update(namespace: str, flow_id: str, fail: bool = False) -> str:
        if fail:
            raise PermissionError("token abc123 lacks FLOW:UPDATE")
        return "ok"

    with audit_scope(Actor.user("anna")):
        assert update("company.team", "hello") == "ok"
        with pytest.raises(PermissionError):
            update("company.team", flow_id="bye", fail=True)
    assert_recorded(capture, action="UPDATE", outcome="success", details={"flowId": "hello"}, actor="anna", count=1)
    failed = assert_recorded(capture, outcome="failure", details={"flowId": "bye", "error": "PermissionError"})
    assert "abc123" not in repr(failed)  # the message may carry secrets; only the class is kept


def test_failure_action_and_after_mapper() -> None:
    """failure_action replaces the action on failure; after= maps the result to the after-state."""
    capture = Capture()

    @audited("USER", "LOGIN", failure_action="LOGIN_FAILURE", after=lambda r: {"ok": r}, sink=capture)
    def login(ok: bool) -> bool:
        if not ok:
            raise ValueError("bad password")
        return ok

    login(True)
    with pytest.raises(ValueError):
        login(False)
    assert [(e["action"], e["outcome"], e["after"]) for e in recorded(capture)] == [
        ("LOGIN", "success", {"ok": True}),
        ("LOGIN_FAILURE", "failure", None),
    ]


def test_async_functions_and_async_with() -> None:
    """Coroutines are awaited inside the record; async with records the block's before/after."""
    capture = Capture()

    @audited("EXECUTION", "DELETE", details=lambda execution_id: {"executionId": execution_id}, sink=capture)
    async def purge(execution_id: str) -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        await purge("e1")
        async with audited("KV_STORE", "UPDATE", details={"key": "k"}, sink=capture) as event:
            event.before, event.after = "1", "2"

    asyncio.run(main())
    assert_recorded(capture, resource="EXECUTION", details={"executionId": "e1"}, actor="auditledger")
    assert_recorded(capture, resource="KV_STORE", before="1", after="2")


def test_context_manager_records_failure_of_the_block() -> None:
    """An exception escaping the with-block records failure and propagates."""
    capture = Capture()
    with pytest.raises(KeyError), audited("SECRET", "DELETE", details={"key": "db"}, sink=capture):
        raise KeyError("db")
    assert_recorded(capture, resource="SECRET", outcome="failure", details={"error": "KeyError"}, count=1)


def test_template_naming_no_argument_is_a_config_error() -> None:
    """A details template that names an unknown argument says which one."""
    capture = Capture()

    @audited("FLOW", "READ", details={"flowId": "{flowid}"}, sink=capture)
    def read(flow_id: str) -> None:
        return None

    with pytest.raises(ConfigError, match="'flowid'"):
        read("x")
    assert recorded(capture) == []


def test_no_sink_anywhere_is_a_config_error() -> None:
    """Without sink=, a scope sink or a default sink, recording says how to configure one."""

    @audited("FLOW", "READ")
    def read() -> None:
        return None

    with pytest.raises(ConfigError, match="no audit sink configured"):
        read()
