"""Property fuzzing of the hostile-input surfaces: the query parser, Kestra filters, and event validation.

Whatever the input, each either gives a value or raises ValidationError naming a field, never another
exception; parsed queries round-trip through ``to_text`` and run on a real SQLite store without error.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditledger import AuditLog
from auditledger.errors import ValidationError
from auditledger.kestra_filters import from_kestra_params
from auditledger.model import Limits, event_input
from auditledger.query import parse, to_text

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of the search language and of SQL, so that generated text reaches deep into the parser.
_WORDS = [
    "resource:", "action:", "actor:", "outcome:", "after:", "before:", "details.", "namespace:", "-", "OR", "AND",
    "(", ")", '"', "*", "?", ":", "-7d", "2026-01-01", "FLOW", "UPDATE", "success", " ", "\\", "'", ";",
    "' OR 1=1 --", "%", "_", "\x00", "\u202e", "é", "😀", "\ud800", "[", "]", "{", "}", "=", ",",
]
query_text = st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=8)), max_size=14).map("".join)


@pytest.fixture(scope="module")
def ledger() -> Iterator[AuditLog]:
    log = AuditLog.open("memory://", limits=Limits(max_state_bytes=4096))
    log.record("FLOW", "UPDATE", {"type": "USER", "id": "anna"}, details={"namespace": "company.team"})
    yield log
    log.close()


@FUZZ
@given(text=query_text)
def test_parse_refuses_or_round_trips(text: str, ledger: AuditLog) -> None:
    """parse() raises only ValidationError(q); what it accepts renders back to the same query and runs."""
    try:
        query = parse(text, now=NOW)
    except ValidationError as exc:
        assert exc.field == "q" and exc.message
        return
    assert parse(to_text(query), now=NOW) == query
    try:
        ledger.search(query, tenant="main", limit=5)
        ledger.count(query, tenant="main", cap=100)
    except ValidationError as exc:  # e.g. a regular expression the store refuses: a named refusal is fine
        assert exc.message


_FIELDS = ["namespace", "flowId", "executionId", "userId", "id", "resources", "details", "type", "startDate",
           "endDate", "timeRange", "q", "QUERY", "action", "resource", "or", "and", "0", "1", "AND", "x y", ""]
_OPS = ["EQUALS", "NOT_EQUALS", "IN", "NOT_IN", "CONTAINS", "STARTS_WITH", "ENDS_WITH", "REGEX",
        "GREATER_THAN", "LESS_THAN", "GREATER_THAN_OR_EQUAL_TO", "LESS_THAN_OR_EQUAL_TO", "PREFIX", "bogus", ""]
bracket_name = st.lists(st.one_of(st.sampled_from(_FIELDS + _OPS), st.text(max_size=5)), min_size=0, max_size=6).map(
    lambda parts: "filters" + "".join(f"[{p}]" for p in parts)
)
param_name = st.one_of(bracket_name, st.sampled_from(_FIELDS), st.text(max_size=12))
param_value = st.one_of(
    st.sampled_from(["", "FLOW", "FLOW,EXECUTION", "2026-01-01T00:00:00Z", "PT1H", "P7D", ".*", "(a|b)+",
                     "' OR 1=1 --", "1; DROP TABLE events", "\x00", "a" * 5000]),
    st.text(max_size=30),
)


@FUZZ
@given(params=st.lists(st.tuples(param_name, param_value), max_size=6))
def test_kestra_params_refuse_with_a_name(params: list[tuple[str, str]], ledger: AuditLog) -> None:
    """from_kestra_params() gives a Query or a ValidationError naming the parameter; its queries run."""
    try:
        query = from_kestra_params(params, now=NOW)
    except ValidationError as exc:
        assert exc.field == "" or any(exc.field in (name, "q") for name, _ in params) or exc.field, exc
        assert exc.message
        return
    try:
        ledger.search(query, tenant="main", limit=5)
    except ValidationError as exc:
        assert exc.message


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_NAME = st.one_of(st.sampled_from(["FLOW", "UPDATE", "X", "flow", "", "A" * 65, "F\x00", "Ä"]), st.text(max_size=6))
actor = st.one_of(
    json_value,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["USER", "SERVICE_ACCOUNT", "SYSTEM", "user", "", 1])},
        optional={"id": st.one_of(st.text(max_size=300), json_value), "name": json_value, "ip": json_value,
                  "user_agent": json_value, "impersonated_by": json_value, "extra": json_value},
    ),
)
details = st.one_of(
    json_value,
    st.dictionaries(
        st.one_of(st.sampled_from(["namespace", "flowId", "a.b-c_d", "1bad", "", "k" * 70]), st.text(max_size=6)),
        st.one_of(st.text(max_size=40), st.just("v" * 1025), json_value),
        max_size=70,
    ),
)
event = st.fixed_dictionaries(
    {"resource_type": _NAME, "action": _NAME, "actor": actor},
    optional={
        "details": details, "before": json_value, "after": json_value,
        "outcome": st.one_of(st.sampled_from(["success", "failure", "SUCCESS", ""]), json_value),
        "occurred_at": st.one_of(st.sampled_from(["2026-01-01T10:00:00Z", "2026-13-01", "yesterday"]), json_value),
        "idempotency_key": st.one_of(st.text(max_size=130), json_value),
        "tenant": json_value, "source": json_value,
    },
)


@FUZZ
@given(raw=st.one_of(event, json_value))
def test_event_input_refuses_with_a_field_or_stores(raw: Any, ledger: AuditLog) -> None:
    """event_input() raises only ValidationError with a field and a message; what it accepts is stored and verifies."""
    try:
        event_input(raw, Limits(max_state_bytes=4096))
    except ValidationError as exc:
        assert isinstance(exc.field, str) and exc.message
        return
    size = ledger.verify(tenant="fuzz").sizes["fuzz"]
    try:
        ledger.record_many([raw], tenant="fuzz")
    except ValidationError as exc:  # unpaired surrogates are found when the event is encoded
        assert "UTF-8" in exc.message
        assert ledger.verify(tenant="fuzz").sizes["fuzz"] == size
        return
    assert ledger.verify(tenant="fuzz").sizes["fuzz"] == size + 1


def test_query_with_unpaired_surrogate_is_a_validation_error(ledger: AuditLog) -> None:
    """A lone surrogate in query text is refused by parse() (it used to escape as UnicodeEncodeError from SQLite)."""
    with pytest.raises(ValidationError, match="position 6: not valid UTF-8") as caught:
        parse("actor:\ud800x")
    assert caught.value.field == "q"


def test_kestra_filter_with_nul_names_the_parameter() -> None:
    """A NUL in a filter is refused naming the parameter (PostgreSQL could not even bind it: it was a 503)."""
    for name, value in (("namespace", "a\x00"), ("filters[userId][CONTAINS]", "\x00"), ("q", "x\x00y")):
        with pytest.raises(ValidationError, match="contains a NUL character") as caught:
            from_kestra_params([(name, value)], now=NOW)
        assert caught.value.field == name
