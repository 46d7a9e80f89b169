"""Kestra's search parameters (2.0 brackets, 1.x flat) translated into a Query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditledger.errors import ValidationError
from auditledger.kestra_filters import from_kestra_params
from auditledger.query import Field, Match, Query, Term, parse

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def k(*pairs: tuple[str, str]) -> Query:
    return from_kestra_params(list(pairs), now=NOW)


def detail(key: str, *values: str, match: Match = Match.EXACT, negate: bool = False) -> Term:
    return Term(Field.DETAIL, values, key, match, negate)


def refused(*pairs: tuple[str, str]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        k(*pairs)
    return info.value


def test_no_filters_is_the_empty_query() -> None:
    """No parameters, or only paging ones, match everything."""
    assert k() == Query()
    assert k(("page", "2"), ("size", "50"), ("sort", "date:desc"), ("tenant", "main")) == Query()


def test_caller_can_ignore_more_parameters() -> None:
    """``ignore`` names extra parameters the caller handles (cursor, format ...)."""
    q = from_kestra_params([("cursor", "abc"), ("filters[flowId][EQUALS]", "x")], now=NOW, ignore={"cursor"})
    assert q == Query((detail("flowId", "x"),))


@pytest.mark.parametrize(
    ("op", "term"),
    [
        ("EQUALS", detail("namespace", "company.team")),
        ("NOT_EQUALS", detail("namespace", "company.team", negate=True)),
        ("IN", detail("namespace", "company.team")),
        ("NOT_IN", detail("namespace", "company.team", negate=True)),
        ("STARTS_WITH", detail("namespace", "company.team", match=Match.PREFIX)),
        ("ENDS_WITH", detail("namespace", "company.team", match=Match.SUFFIX)),
        ("CONTAINS", detail("namespace", "company.team", match=Match.CONTAINS)),
        ("NOT_CONTAINS", detail("namespace", "company.team", match=Match.CONTAINS, negate=True)),
        ("PREFIX", detail("namespace", "company.team", match=Match.NAMESPACE)),
    ],
)
def test_string_operations_on_namespace(op: str, term: Term) -> None:
    """Each string operation maps to a Match and a negation; PREFIX is namespace-and-children."""
    assert k((f"filters[namespace][{op}]", "company.team")) == Query((term,))


def test_list_values_are_comma_joined() -> None:
    """IN and NOT_IN split comma-joined lists."""
    assert k(("filters[flowId][IN]", "a,b")) == Query((detail("flowId", "a", "b"),))
    assert k(("filters[executionId][NOT_IN]", "e1, e2")) == Query((detail("executionId", "e1", "e2", negate=True),))


def test_equals_keeps_commas_in_details_values() -> None:
    """EQUALS on a details field does not split the value."""
    assert k(("filters[flowId][EQUALS]", "a,b")) == Query((detail("flowId", "a,b"),))


def test_resources_and_type() -> None:
    """resources and type/action become resource and action terms, upper-cased."""
    assert k(("filters[resources][IN]", "FLOW,execution"), ("filters[type][EQUALS]", "UPDATE")) == Query(
        (Term(Field.RESOURCE, ("FLOW", "EXECUTION")), Term(Field.ACTION, ("UPDATE",)))
    )
    assert k(("filters[action][NOT_EQUALS]", "READ")) == Query((Term(Field.ACTION, ("READ",), negate=True),))
    assert k(("filters[resources][IN]", "KV_STORE,SETTING")).terms[0].values == ("KV_STORE", "SETTING")


def test_user_id_is_the_actor_and_id_the_resource_id() -> None:
    """userId filters the actor; id is the details key ``id`` (Kestra's detail.id)."""
    assert k(("filters[userId][EQUALS]", "anna"), ("filters[id][EQUALS]", "hello")) == Query(
        (Term(Field.ACTOR, ("anna",)), detail("id", "hello"))
    )


def test_details_map_values() -> None:
    """filters[details][OP][KEY]=value addresses one details key per parameter."""
    assert k(
        ("filters[details][EQUALS][namespace]", "company.team"),
        ("filters[details][STARTS_WITH][revision]", "1"),
        ("filters[details][PREFIX][namespace]", "company"),
    ) == Query(
        (
            detail("namespace", "company.team"),
            detail("revision", "1", match=Match.PREFIX),
            detail("namespace", "company", match=Match.NAMESPACE),
        )
    )


def test_details_without_third_bracket_takes_key_colon_value() -> None:
    """filters[details][EQUALS]=key:value works like the 1.x form."""
    assert k(("filters[details][EQUALS]", "flowId:a:b")) == Query((detail("flowId", "a:b"),))


def test_is_null_and_is_not_null() -> None:
    """IS_NULL is a negated any-value match, IS_NOT_NULL a plain one; 'false' inverts."""
    assert k(("filters[details][IS_NULL][flowId]", "")) == Query(
        (detail("flowId", "", match=Match.PREFIX, negate=True),)
    )
    assert k(("filters[details][IS_NOT_NULL][flowId]", "true")) == Query((detail("flowId", "", match=Match.PREFIX),))
    assert k(("filters[flowId][IS_NULL]", "false")) == Query((detail("flowId", "", match=Match.PREFIX),))


@pytest.mark.parametrize(
    ("pattern", "value", "match"),
    [
        ("^company\\.team$", "company.team", Match.EXACT),
        ("^company", "company", Match.PREFIX),
        ("team$", "team", Match.SUFFIX),
        ("team", "team", Match.CONTAINS),
        (".*team.*", "team", Match.CONTAINS),
        ("^hel.*", "hel", Match.PREFIX),
    ],
)
def test_literal_regex_is_mapped(pattern: str, value: str, match: Match) -> None:
    """A literal, optionally anchored REGEX becomes exact, prefix, suffix or contains."""
    assert k(("filters[flowId][REGEX]", pattern)) == Query((detail("flowId", value, match=match),))


@pytest.mark.parametrize("pattern", ["a+b", "^(a|b)$", "[abc]", "a.b", "\\d+"])
def test_other_regex_is_refused(pattern: str) -> None:
    """Non-literal regular expressions are refused as not supported, naming the parameter."""
    exc = refused(("filters[flowId][REGEX]", pattern))
    assert exc.field == "filters[flowId][REGEX]"
    assert "not supported" in exc.message


def test_date_operations() -> None:
    """Date comparisons become a half-open [after, before) range on the event date."""
    d = datetime(2026, 1, 1, tzinfo=UTC)
    iso = "2026-01-01T00:00:00Z"
    assert k(("filters[startDate][GREATER_THAN_OR_EQUAL_TO]", iso)) == Query(after=d)
    assert k(("filters[startDate][GREATER_THAN]", iso)) == Query(after=d + TICK)
    assert k(("filters[endDate][LESS_THAN]", iso)) == Query(before=d)
    assert k(("filters[endDate][LESS_THAN_OR_EQUAL_TO]", iso)) == Query(before=d + TICK)
    assert k(("filters[startDate][EQUALS]", iso)) == Query(after=d, before=d + TICK)


def test_dates_convert_offsets_and_intersect() -> None:
    """Offsets convert to UTC (also a '+' decoded as a space) and bounds intersect."""
    q = k(
        ("filters[startDate][GREATER_THAN_OR_EQUAL_TO]", "2026-01-01T10:00:00+02:00"),
        ("filters[startDate][GREATER_THAN_OR_EQUAL_TO]", "2026-01-01T00:00:00 01:00"),
        ("filters[endDate][LESS_THAN]", "2026-02-01T00:00:00Z"),
        ("filters[endDate][LESS_THAN]", "2026-03-01T00:00:00Z"),
    )
    assert q == Query(after=datetime(2026, 1, 1, 8, tzinfo=UTC), before=datetime(2026, 2, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("duration", "after"),
    [
        ("PT24H", NOW - timedelta(hours=24)),
        ("P7D", NOW - timedelta(days=7)),
        ("PT30M", NOW - timedelta(minutes=30)),
        ("PT1.5S", NOW - timedelta(seconds=1.5)),
        ("P2W", NOW - timedelta(weeks=2)),
        ("P1M", datetime(2026, 2, 28, 12, tzinfo=UTC)),
        ("P1Y", datetime(2025, 3, 31, 12, tzinfo=UTC)),
        ("P1DT1H", NOW - timedelta(days=1, hours=1)),
    ],
)
def test_time_range(duration: str, after: datetime) -> None:
    """timeRange is an ISO 8601 duration back from now; months are calendar months."""
    assert k(("filters[timeRange][EQUALS]", duration)) == Query(after=after)


def test_q_takes_the_search_language() -> None:
    """filters[q] and the flat q parse with the search language and AND with the rest."""
    expected = parse("hello action:LOGIN*", now=NOW)
    assert k(("filters[q][EQUALS]", "hello action:LOGIN*")) == expected
    assert k(("q", "hello action:LOGIN*")) == expected


def test_bad_q_names_the_parameter() -> None:
    """A parse error inside q keeps its message and names the parameter."""
    exc = refused(("filters[q][EQUALS]", 'flowId:"x'))
    assert (exc.field, exc.message) == ("filters[q][EQUALS]", "unterminated quote at position 7")


def test_or_group() -> None:
    """filters[or][i] members form one OR-group; parameters with the same index are ANDed."""
    q = k(
        ("filters[or][0][namespace][EQUALS]", "a"),
        ("filters[or][0][flowId][EQUALS]", "f"),
        ("filters[or][1][namespace][EQUALS]", "b"),
        ("filters[resources][IN]", "FLOW"),
    )
    assert q == Query(
        (Term(Field.RESOURCE, ("FLOW",)),),
        any_of=(Query((detail("namespace", "a"), detail("flowId", "f"))), Query((detail("namespace", "b"),))),
    )


def test_or_with_single_member_is_plain_and() -> None:
    """An OR-group of one member is simply ANDed."""
    assert k(("filters[or][0][namespace][EQUALS]", "a")) == Query((detail("namespace", "a"),))


def test_and_of_or_groups_distributes() -> None:
    """filters[and][i][or][j] groups are ANDed with each other by distribution."""
    q = k(
        ("filters[and][0][or][0][namespace][EQUALS]", "a"),
        ("filters[and][0][or][1][namespace][EQUALS]", "b"),
        ("filters[and][1][or][0][type][EQUALS]", "READ"),
        ("filters[and][1][or][1][type][EQUALS]", "UPDATE"),
        ("filters[and][2][flowId][EQUALS]", "f"),
    )
    actions = (Query((Term(Field.ACTION, ("READ",)),)), Query((Term(Field.ACTION, ("UPDATE",)),)))
    assert q == Query(
        (detail("flowId", "f"),),
        any_of=(
            Query((detail("namespace", "a"),), any_of=actions),
            Query((detail("namespace", "b"),), any_of=actions),
        ),
    )


def test_or_of_and() -> None:
    """filters[or][i][and][j] members are conjunctions."""
    q = k(
        ("filters[or][0][and][0][namespace][EQUALS]", "a"),
        ("filters[or][0][and][1][flowId][EQUALS]", "f"),
        ("filters[or][1][namespace][EQUALS]", "b"),
    )
    assert q == Query(
        any_of=(Query((detail("namespace", "a"), detail("flowId", "f"))), Query((detail("namespace", "b"),)))
    )


def test_field_and_operation_names_are_case_insensitive() -> None:
    """filters[FLOWID][equals] is accepted like filters[flowId][EQUALS]."""
    assert k(("filters[FLOWID][equals]", "x")) == Query((detail("flowId", "x"),))


def test_flat_1x_parameters() -> None:
    """Kestra 1.x flat parameters translate; namespace is a namespace-and-children filter."""
    q = k(
        ("namespace", "company"),
        ("flowId", "hello"),
        ("executionId", "e1"),
        ("userId", "anna"),
        ("id", "r1"),
        ("resources[]", "FLOW"),
        ("resources", "EXECUTION"),
        ("details", "revision:3"),
        ("details", "env:prod"),
        ("type", "UPDATE"),
        ("startDate", "2026-01-01T00:00:00Z"),
        ("endDate", "2026-02-01T00:00:00Z"),
    )
    assert q == Query(
        (
            detail("namespace", "company", match=Match.NAMESPACE),
            detail("flowId", "hello"),
            detail("executionId", "e1"),
            Term(Field.ACTOR, ("anna",)),
            detail("id", "r1"),
            detail("revision", "3"),
            detail("env", "prod"),
            Term(Field.RESOURCE, ("FLOW", "EXECUTION")),
            Term(Field.ACTION, ("UPDATE",)),
        ),
        after=datetime(2026, 1, 1, tzinfo=UTC),
        before=datetime(2026, 2, 1, tzinfo=UTC) + TICK,
    )


def test_flat_and_bracket_forms_mix() -> None:
    """Flat and bracket parameters in one request are ANDed."""
    assert k(("flowId", "a"), ("filters[namespace][EQUALS]", "n")) == Query(
        (detail("flowId", "a"), detail("namespace", "n"))
    )


def test_now_defaults_to_current_time() -> None:
    """Without ``now`` timeRange counts back from the clock."""
    q = from_kestra_params([("filters[timeRange][EQUALS]", "PT1H")])
    assert q.after is not None
    assert abs(datetime.now(UTC) - timedelta(hours=1) - q.after) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("filters[foo][EQUALS]", "x", "unknown field 'foo'"),
        ("filters[namespace][FOO]", "x", "unknown operation 'FOO'"),
        ("filters[namespace]", "x", "expected filters[FIELD][OP]"),
        ("filters[namespace][EQUALS][a][b]", "x", "expected filters[FIELD][OP]"),
        ("filters", "x", "malformed filter"),
        ("filters[namespace][EQUALS", "x", "malformed filter"),
        ("filters[or][x][namespace][EQUALS]", "x", "needs a numeric index"),
        ("filters[or][0]", "x", "expected filters[FIELD][OP]"),
        ("filters[or][0][and][0][or][0][namespace][EQUALS]", "x", "one level at most"),
        ("filters[flowId][PREFIX]", "x", "applies to the namespace only"),
        ("filters[details][PREFIX][flowId]", "x", "applies to the namespace only"),
        ("filters[userId][IS_NULL]", "", "details keys only"),
        ("filters[flowId][IS_NULL]", "maybe", "takes true, false or nothing"),
        ("filters[flowId][GREATER_THAN]", "x", "applies to startDate and endDate only"),
        ("filters[flowId][EQUALS][k]", "x", "takes no [key]"),
        ("filters[details][EQUALS]", "novalue", "details needs a key"),
        ("filters[details][EQUALS][1bad]", "x", "bad details key '1bad'"),
        ("filters[resources][IN]", "FLOW,bad-x", "bad resource 'BAD-X'"),
        ("filters[type][EQUALS]", "", "bad action ''"),
        ("filters[startDate][NOT_EQUALS]", "2026-01-01T00:00:00Z", "does not apply to dates"),
        ("filters[startDate][GREATER_THAN]", "yesterday", "bad date 'yesterday'"),
        ("filters[startDate][GREATER_THAN][k]", "2026-01-01", "dates take no [key]"),
        ("filters[endDate][LESS_THAN_OR_EQUAL_TO]", "9999-12-31T23:59:59.999999Z", "out of range"),
        ("filters[timeRange][EQUALS]", "PT", "bad duration 'PT'"),
        ("filters[timeRange][EQUALS]", "24h", "bad duration '24h'"),
        ("filters[timeRange][EQUALS]", "P99999Y", "bad duration"),
        ("filters[timeRange][GREATER_THAN]", "PT1H", "timeRange takes EQUALS"),
        ("filters[q][NOT_EQUALS]", "x", "q takes EQUALS"),
        ("filters[q][EQUALS]", "a" * 5000, "at most 4096"),
        ("filters[flowId][IN]", ",".join(["v"] * 101), "more than 100 values"),
        ("filters[flowId][EQUALS]", "v" * 1025, "longer than 1024"),
        ("foo", "x", "unknown parameter"),
    ],
)
def test_refusals_name_the_parameter(param: str, value: str, expected: str) -> None:
    """Every unknown, malformed or unsupported filter raises ValidationError naming the parameter."""
    exc = refused((param, value))
    assert exc.field == param
    assert expected in exc.message


def test_limit_on_filter_count() -> None:
    """At most 64 filters in one request."""
    k(*[("filters[flowId][EQUALS]", "x")] * 64)
    exc = refused(*[("filters[flowId][EQUALS]", "x")] * 65)
    assert "more than 64 filters" in exc.message


_names = st.sampled_from(
    [
        "filters[namespace][EQUALS]",
        "filters[or][0][flowId][IN]",
        "filters[and][1][or][2][type][EQUALS]",
        "filters[details][IS_NULL][k]",
        "filters[startDate][GREATER_THAN]",
        "filters[timeRange][EQUALS]",
        "filters[q][EQUALS]",
        "filters[x][y]",
        "filters[or]",
        "resources[]",
        "details",
        "endDate",
        "q",
        "page",
    ]
) | st.text(max_size=30)


@settings(max_examples=500)
@given(st.lists(st.tuples(_names, st.text(max_size=30)), max_size=6))
def test_only_validation_errors(params: list[tuple[str, str]]) -> None:
    """Arbitrary parameters translate or raise ValidationError, nothing else."""
    try:
        q = from_kestra_params(params, now=NOW)
    except ValidationError:
        return
    assert isinstance(q, Query)
