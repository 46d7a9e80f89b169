"""Validation rules of DESIGN.md: each breach names the field and the limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auditledger import Actor, ValidationError
from auditledger.model import MAX_DETAILS, ActorType, Limits, event_input


def good(**over: object) -> dict[str, object]:
    event: dict[str, object] = {
        "resource_type": "FLOW",
        "action": "UPDATE",
        "actor": {"type": "USER", "id": "anna@acme.io"},
        "details": {"namespace": "company.team", "flowId": "hello"},
    }
    event.update(over)
    return event


def refused(raw: object, limits: Limits = Limits()) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        event_input(raw, limits)  # type: ignore[arg-type]
    return info.value


def test_valid_event_passes_and_int_details_become_texts() -> None:
    """A Kestra-shaped event passes; a numeric revision is stored as text."""
    draft = event_input(good(details={"revision": 3}))
    assert draft.details == {"revision": "3"}
    assert draft.actor == Actor.user("anna@acme.io")


@pytest.mark.parametrize("value", ["flow", "FLOW-X", "1FLOW", "", "F" * 65])
def test_bad_resource_type_is_refused(value: str) -> None:
    """Resource types outside Kestra's set must match ^[A-Z][A-Z0-9_]{0,63}$."""
    assert refused(good(resource_type=value)).field == "resource_type"


def test_custom_action_of_the_right_form_is_accepted() -> None:
    """Custom actions such as EXECUTE are allowed."""
    assert event_input(good(action="EXECUTE")).action == "EXECUTE"


def test_too_many_details_names_the_limit() -> None:
    """More than 64 details is refused with the limit in the message."""
    err = refused(good(details={f"k{i}": "v" for i in range(MAX_DETAILS + 1)}))
    assert err.field == "details" and "64" in err.message


def test_oversized_detail_value_names_the_key() -> None:
    """A details value over 1,024 characters names its key."""
    err = refused(good(details={"namespace": "x" * 1025}))
    assert err.field == "details.namespace" and "1024" in err.message


def test_bad_detail_key_is_refused() -> None:
    """Keys must match ^[A-Za-z][A-Za-z0-9_.-]{0,63}$."""
    assert refused(good(details={"1bad": "x"})).field == "details"


@pytest.mark.parametrize("value", [None, True, 1.5, ["a"], {"a": "b"}])
def test_wrong_json_type_in_details(value: object) -> None:
    """Details values are texts (or integers); anything else names the key."""
    assert refused(good(details={"k": value})).field == "details.k"


def test_unknown_actor_type() -> None:
    """Actor types are USER, SERVICE_ACCOUNT or SYSTEM."""
    err = refused(good(actor={"type": "ROBOT", "id": "r2"}))
    assert err.field == "actor.type" and "SERVICE_ACCOUNT" in err.message


def test_actor_without_id() -> None:
    """An actor needs an id."""
    assert refused(good(actor={"type": "USER"})).field == "actor.id"


def test_actor_objects_are_checked_like_mappings() -> None:
    """An Actor instance (what the integrations pass) meets the same limits as a mapping, naming the field."""
    anna = Actor.user("anna@acme.io", "Anna", ip="10.0.0.1", user_agent="curl/8")
    assert event_input(good(actor=anna)).actor is anna
    assert refused(good(actor=Actor.user(""))).field == "actor.id"
    assert refused(good(actor=Actor.user("a" * 257))).field == "actor.id"
    assert refused(good(actor=Actor.user("anna", "A\x00"))).field == "actor.name"
    assert refused(good(actor=Actor.user("anna", ip="1" * 257))).field == "actor.ip"
    assert refused(good(actor=Actor.user("anna", user_agent="u" * 257))).field == "actor.user_agent"
    assert refused(good(actor=Actor.user("anna", impersonated_by="\x00"))).field == "actor.impersonated_by"
    assert refused(good(actor=Actor("ROBOT", "r2"))).field == "actor.type"  # type: ignore[arg-type]
    typed = event_input(good(actor=Actor("USER", "bob"))).actor  # type: ignore[arg-type]
    assert typed.type is ActorType.USER


def test_non_utc_date_is_refused() -> None:
    """occurred_at must be UTC; an offset or a naive time is refused."""
    assert refused(good(occurred_at="2026-01-01T10:00:00+02:00")).field == "occurred_at"
    assert refused(good(occurred_at="2026-01-01T10:00:00")).field == "occurred_at"
    ok = event_input(good(occurred_at="2026-01-01T10:00:00Z"))
    assert ok.occurred_at == datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_state_size_limit_is_configurable() -> None:
    """before/after above the configured size are refused with the limit."""
    err = refused(good(after="x" * 101), Limits(max_state_bytes=100))
    assert err.field == "after" and "100" in err.message


def test_deeply_nested_state_is_refused() -> None:
    """Nesting deeper than 32 levels is refused."""
    deep: object = "x"
    for _ in range(40):
        deep = [deep]
    assert refused(good(before=deep)).field.startswith("before")


def test_unsafe_numbers_are_refused() -> None:
    """Integers beyond 2**53 and NaN are refused; integral floats become integers."""
    assert refused(good(after={"n": 2**60})).field == "after.n"
    assert refused(good(after={"n": float("nan")})).field == "after.n"
    assert event_input(good(after={"n": 2.0})).after == {"n": 2}


def test_nul_and_unknown_fields() -> None:
    """NUL characters and unknown fields are refused by name."""
    assert refused(good(details={"k": "a\x00b"})).field == "details.k"
    err = refused(good(color="red"))
    assert err.field == "event" and "'color'" in err.message
    assert "''" in refused(good(**{"": 1})).message


def test_invalid_unicode_is_refused() -> None:
    """An unpaired surrogate (invalid UTF-8) is refused by name and nothing is stored."""
    from auditledger import AuditLog

    with AuditLog.open("memory://") as log:
        for where, event in (
            ("after", good(after="bad \udc80")),
            ("details.k", good(details={"k": "\ud800"})),
            ("actor.id", good(actor={"type": "USER", "id": "x\udc80"})),
        ):
            with pytest.raises(ValidationError) as info:
                log.record_many([good(), event])
            assert info.value.field == f"events[1].{where}", info.value
        assert log.count() == 0


def test_with_source_keeps_every_other_field() -> None:
    """``with_source`` and ``event_input(..., source=...)`` (the ingest path) equal
    ``dataclasses.replace(draft, source=...)``."""
    import dataclasses

    from auditledger.model import event_input, with_source

    draft = event_input(
        {
            "resource_type": "FLOW",
            "action": "UPDATE",
            "actor": {"type": "USER", "id": "anna", "name": "Anna"},
            "details": {"namespace": "company.team"},
            "before": {"a": 1},
            "after": "text",
            "outcome": "failure",
            "occurred_at": "2026-01-01T00:00:00Z",
            "idempotency_key": "k-1",
        }
    )
    source = {"token": "tok", "ip": "10.0.0.1"}
    assert with_source(draft, source) == dataclasses.replace(draft, source=source)
    assert event_input(draft, source=source) == dataclasses.replace(draft, source=source)
    assert [f.name for f in dataclasses.fields(draft)][8] == "source"


def test_remembered_actors_are_still_checked() -> None:
    """A valid actor seen before comes back as the same immutable Actor; anything differing from it is
    checked again (an extra field, a list where a text belongs, a NUL in a name it has never had)."""
    from auditledger.model import check_actor

    first = check_actor({"type": "USER", "id": "anna", "name": "Anna"})
    assert check_actor({"type": "USER", "id": "anna", "name": "Anna"}) is first
    for bad, field in (
        ({"type": "USER", "id": "anna", "name": "Anna", "color": "red"}, "actor"),
        ({"type": "USER", "id": ["anna"], "name": "Anna"}, "actor.id"),
        ({"type": "USER", "id": "anna", "name": "An\x00na"}, "actor.name"),
        ({"type": "ROBOT", "id": "anna", "name": "Anna"}, "actor.type"),
    ):
        with pytest.raises(ValidationError) as info:
            check_actor(bad)
        assert info.value.field == field
