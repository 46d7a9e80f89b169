"""The search language: parse(), to_text() and their round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditledger.errors import ValidationError
from auditledger.query import (
    ACTOR_TYPES,
    OUTCOMES,
    RESERVED,
    Field,
    Match,
    Query,
    Term,
    all_of,
    format_date,
    parse,
    to_text,
)

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def p(text: str) -> Query:
    return parse(text, now=NOW)


def detail(key: str, *values: str, match: Match = Match.EXACT, negate: bool = False) -> Term:
    return Term(Field.DETAIL, values, key, match, negate)


def error(text: str) -> str:
    with pytest.raises(ValidationError) as info:
        p(text)
    assert info.value.field == "q"
    return info.value.message


# --- forms -----------------------------------------------------------------


def test_empty_query_matches_everything() -> None:
    """Empty or blank text is the empty Query."""
    assert p("") == Query()
    assert p("  \t\n ") == Query()


def test_details_keys_are_anded() -> None:
    """``namespace:a flowId:b`` is two details terms, the namespace one matching children."""
    assert p("namespace:company.team flowId:hello") == Query(
        (detail("namespace", "company.team", match=Match.NAMESPACE), detail("flowId", "hello"))
    )


def test_namespace_equals_sign_is_exact() -> None:
    """``namespace:=a`` matches the namespace exactly, not its children."""
    assert p("namespace:=company") == Query((detail("namespace", "company"),))


def test_comma_means_any_of() -> None:
    """``key:a,b`` is one term with two values."""
    assert p("flowId:a,b") == Query((detail("flowId", "a", "b"),))


def test_resource_list_is_upper_cased() -> None:
    """Resource types are upper-cased and kept as a list."""
    assert p("resource:flow,EXECUTION") == Query((Term(Field.RESOURCE, ("FLOW", "EXECUTION")),))


def test_kestra_1x_resource_spellings_kept() -> None:
    """KV_STORE and SETTING are valid and kept as given."""
    assert p("resource:KV_STORE,SETTING,KVSTORE").terms[0].values == ("KV_STORE", "SETTING", "KVSTORE")


def test_action() -> None:
    """``action:UPDATE`` is an exact action term."""
    assert p("action:update") == Query((Term(Field.ACTION, ("UPDATE",)),))


def test_trailing_star_is_prefix() -> None:
    """A trailing ``*`` makes a prefix match, on any field."""
    assert p("action:LOGIN*") == Query((Term(Field.ACTION, ("LOGIN",), match=Match.PREFIX),))
    assert p("flowId:hel*").terms[0] == detail("flowId", "hel", match=Match.PREFIX)
    assert p("actor:anna*").terms[0] == Term(Field.ACTOR, ("anna",), match=Match.PREFIX)


def test_leading_star_is_suffix_and_both_contains() -> None:
    """``*x`` is a suffix match and ``*x*`` a substring match."""
    assert p("flowId:*lo").terms[0] == detail("flowId", "lo", match=Match.SUFFIX)
    assert p("flowId:*el*").terms[0] == detail("flowId", "el", match=Match.CONTAINS)


def test_lone_star_means_any_value() -> None:
    """``key:*`` is a prefix match on the empty string: the key is present."""
    assert p("flowId:*").terms[0] == detail("flowId", "", match=Match.PREFIX)
    assert p("-flowId:*").terms[0] == detail("flowId", "", match=Match.PREFIX, negate=True)


def test_prefix_on_namespace_is_a_string_prefix() -> None:
    """``namespace:comp*`` is a plain prefix, not namespace-and-children."""
    assert p("namespace:comp*").terms[0] == detail("namespace", "comp", match=Match.PREFIX)


def test_actor_and_actor_type() -> None:
    """``actor:`` takes an id as given; ``actor.type:`` one of the three types, upper-cased."""
    assert p("actor:anna@acme.io actor.type:service_account") == Query(
        (Term(Field.ACTOR, ("anna@acme.io",)), Term(Field.ACTOR_TYPE, ("SERVICE_ACCOUNT",)))
    )


def test_negation() -> None:
    """A leading ``-`` negates a field term or a free word."""
    assert p("-action:READ -noise") == Query(
        (Term(Field.ACTION, ("READ",), negate=True), Term(Field.TEXT, ("noise",), negate=True))
    )


def test_quoted_phrase_and_quoted_value() -> None:
    """Quotes keep spaces, both as a free phrase and as a value."""
    assert p('"quoted values with spaces" flowId:"my flow"') == Query(
        (Term(Field.TEXT, ("quoted values with spaces",)), detail("flowId", "my flow"))
    )


def test_quoted_values_in_a_list_and_escapes() -> None:
    """Quoted and bare values mix in a list; backslash escapes a quote."""
    assert p(r'flowId:"a b",c,"say \"hi\""').terms[0] == detail("flowId", "a b", "c", 'say "hi"')


def test_quoted_value_with_star_is_prefix() -> None:
    """A star outside the quotes is a wildcard; inside, a literal."""
    assert p('flowId:"my fl"*').terms[0] == detail("flowId", "my fl", match=Match.PREFIX)
    assert p('flowId:"a*"').terms[0] == detail("flowId", "a*")


def test_free_words() -> None:
    """Free words are TEXT terms, one each; a trailing star makes a prefix."""
    assert p("hello wor*") == Query((Term(Field.TEXT, ("hello",)), Term(Field.TEXT, ("wor",), match=Match.PREFIX)))


def test_commas_in_free_words_are_literal() -> None:
    """Plain free text with commas stays one word."""
    assert p("hello,").terms == (Term(Field.TEXT, ("hello,",)),)


def test_outcome_is_lower_cased() -> None:
    """``outcome:FAILURE`` becomes ``failure``."""
    assert p("outcome:FAILURE outcome:success").terms == (
        Term(Field.OUTCOME, ("failure",)),
        Term(Field.OUTCOME, ("success",)),
    )


def test_event_id() -> None:
    """``id:`` is the event id; ``details[id]:`` the details key named id."""
    uid = "0192f0e4-5b6a-7c3d-8e9f-0a1b2c3d4e5f"
    assert p(f"id:{uid} details[id]:hello") == Query((Term(Field.ID, (uid,)), detail("id", "hello")))


def test_value_may_contain_colons() -> None:
    """Only the first colon separates the field from the value."""
    assert p("actor:user:42").terms[0] == Term(Field.ACTOR, ("user:42",))


def test_absolute_dates() -> None:
    """Dates are midnight UTC; offsets convert to UTC; naive date-times are UTC."""
    q = p("after:2026-01-01 before:2026-02-01T12:00+02:00")
    assert q.after == datetime(2026, 1, 1, tzinfo=UTC)
    assert q.before == datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
    assert p("before:2026-02-01T12:00Z").before == datetime(2026, 2, 1, 12, tzinfo=UTC)
    assert p("after:2026-02-01T12:00:01.5").after == datetime(2026, 2, 1, 12, 0, 1, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("-7d", timedelta(days=7)),
        ("-24h", timedelta(hours=24)),
        ("-30m", timedelta(minutes=30)),
        ("-2w", timedelta(weeks=2)),
        ("-10s", timedelta(seconds=10)),
    ],
)
def test_relative_dates(text: str, delta: timedelta) -> None:
    """Relative dates count back from ``now``."""
    assert p(f"after:{text}").after == NOW - delta
    assert p(f"before:{text}").before == NOW - delta


def test_repeated_dates_intersect() -> None:
    """Two ``after:`` keep the later, two ``before:`` the earlier."""
    q = p("after:2026-01-01 after:2026-01-05 before:2026-03-01 before:2026-02-01")
    assert (q.after, q.before) == (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def test_now_defaults_to_current_time() -> None:
    """Without ``now`` relative dates count back from the clock."""
    q = parse("after:-1h")
    assert q.after is not None
    assert abs(datetime.now(UTC) - timedelta(hours=1) - q.after) < timedelta(minutes=1)


def test_reserved_details_keys_use_brackets() -> None:
    """Every reserved name is reachable as a details key through ``details[...]``."""
    for name in RESERVED:
        assert p(f"details[{name}]:x").terms == (detail(name, "x"),)


def test_details_key_forms() -> None:
    """Details keys allow letters, digits, '_', '.', '-' after a first letter; they are case-sensitive."""
    assert p("my.key_1-x:v Action:v").terms == (detail("my.key_1-x", "v"), detail("Action", "v"))


def test_tokens_that_are_not_fields_are_free_words() -> None:
    """``12:30``, ``10.0.0.7:80``, ``:x`` and ``details[1x]:y`` are free words: no field has those names."""
    for word in ("12:30", "10.0.0.7:80", ":x", "details[1x]:y", "a@b:c"):
        assert p(word).terms == (Term(Field.TEXT, (word,)),)
    assert p("-12:30").terms == (Term(Field.TEXT, ("12:30",), negate=True),)


def test_whitespace_of_all_kinds_separates() -> None:
    """Tabs and newlines separate terms like spaces."""
    assert p("a\tb\nc").terms == tuple(Term(Field.TEXT, (w,)) for w in "abc")


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('flowId:"abc', "unterminated quote at position 7"),
        ('"abc', "unterminated quote at position 0"),
        ('"abc\\', "unterminated quote at position 0"),
        ("actor.type:ROBOT", "unknown actor type 'ROBOT' at position 11, expected USER, SERVICE_ACCOUNT or SYSTEM"),
        ("after:yesterday", "bad date 'yesterday' for after: at position 6"),
        ("before:2026-13-01", "bad date '2026-13-01' for before: at position 7"),
        ("after:-7y", "bad date '-7y' for after:"),
        ("after:-9999999999d", "bad date"),
        ("after:-999999999w", "bad date"),
        ("after:0001-01-01T00:00+01:00", "bad date"),
        ("-after:2026-01-01", "after: cannot be negated"),
        ("after:2026-01-01,2026-01-02", "after: takes one date"),
        ("before:2026*", "before: takes one date"),
        ("outcome:maybe", "unknown outcome 'maybe' at position 8, expected success or failure"),
        ("outcome:fail*", "unknown outcome"),
        ("actor.type:USER*", "unknown actor type"),
        ("action:LO-GIN", "bad action 'LO-GIN' at position 7"),
        ("resource:1FLOW", "bad resource '1FLOW' at position 9"),
        ("resource:*", "bad resource ''"),
        ("flowId:", "missing value after 'flowId:' at position 0"),
        ("flowId: x", "missing value after 'flowId:'"),
        ("flowId:a,", "missing value at position 9"),
        ("flowId:,a", "missing value at position 7"),
        ("flowId:=", "missing value at position 8"),
        ("-", "nothing after '-' at position 0"),
        ("a - b", "nothing after '-' at position 2"),
        ('a"b"', "unexpected quote at position 1"),
        ('flowId:"a""b"', "unexpected quote at position 10"),
        ('flowId:"a"b', "unexpected 'b' at position 10"),
        ('""', "empty phrase at position 0"),
        ("action:LOGIN*,LOGOUT", "values at positions 7 and 14 mix * patterns"),
        ("namespace:=a*", "'=' means exact and cannot be combined with *"),
    ],
)
def test_errors_say_where_and_why(text: str, expected: str) -> None:
    """Each malformed query raises ValidationError(field='q') naming the position and the reason."""
    assert expected in error(text)


def test_limit_on_text_length() -> None:
    """Queries longer than 4096 characters are refused up front."""
    assert "4097 characters, at most 4096" in error("a" * 4097)
    p("a" * 1024)


def test_limit_on_terms() -> None:
    """At most 64 terms."""
    p(" ".join(["w"] * 64))
    assert "more than 64 terms" in error(" ".join(["w"] * 65))


def test_limit_on_values_per_term() -> None:
    """At most 100 values in one term."""
    p("flowId:" + ",".join(["v"] * 100))
    assert "more than 100 values" in error("flowId:" + ",".join(["v"] * 101))


def test_limit_on_value_length() -> None:
    """A value is at most 1024 characters, like a details value."""
    p("flowId:" + "v" * 1024)
    assert "1025 characters, at most 1024" in error("flowId:" + "v" * 1025)


# --- to_text ---------------------------------------------------------------


def test_to_text_canonical_form() -> None:
    """to_text writes fields, wildcards, quotes and UTC dates with microseconds."""
    q = Query(
        (
            detail("namespace", "company", match=Match.NAMESPACE),
            detail("namespace", "x", negate=True),
            detail("flowId", "my flow", "b", match=Match.PREFIX),
            detail("id", "r1"),
            Term(Field.TEXT, ("-dash",)),
            Term(Field.ACTION, ("LOGIN",), match=Match.SUFFIX),
        ),
        after=datetime(2026, 1, 1, tzinfo=UTC),
        before=datetime(2026, 2, 1, 12, tzinfo=UTC),
    )
    assert to_text(q) == (
        'namespace:company -namespace:=x flowId:"my flow"*,b* details[id]:r1 "-dash" action:*LOGIN '
        "after:2026-01-01T00:00:00.000000Z before:2026-02-01T12:00:00.000000Z"
    )
    assert parse(to_text(q)) == q


def test_format_date_pads_small_years() -> None:
    """Dates render with four-digit years so that they parse back."""
    assert format_date(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    "q",
    [
        Query(any_of=(Query(), Query())),
        Query((Term(Field.TEXT, ("a", "b")),)),
        Query((Term(Field.TEXT, ("",)),)),
        Query((Term(Field.TEXT, ("a",), match=Match.NAMESPACE),)),
        Query((Term(Field.DETAIL, ("a",)),)),
        Query((Term(Field.DETAIL, ("a",), key="bad key"),)),
        Query((Term(Field.DETAIL, ("a",), key="flowId", match=Match.NAMESPACE),)),
        Query((Term(Field.ACTOR, ("a",), key="k"),)),
        Query((Term(Field.ACTOR, ()),)),
    ],
)
def test_to_text_refuses_what_the_language_cannot_say(q: Query) -> None:
    """OR-groups, multi-valued free words and other inexpressible terms raise ValidationError."""
    with pytest.raises(ValidationError):
        to_text(q)


def test_all_of_intersects_and_distributes() -> None:
    """all_of concatenates terms, intersects dates and distributes OR-groups."""
    a, b, c, d = (Query((Term(Field.TEXT, (w,)),)) for w in "abcd")
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    q = all_of(Query(after=early, before=late), Query(after=late), Query(any_of=(a, b)), Query(any_of=(c, d)))
    assert (q.after, q.before, q.terms) == (late, late, ())
    tail = Query(any_of=(c, d))
    assert q.any_of == (Query(a.terms, any_of=(c, d)), Query(b.terms, any_of=tail.any_of))


# --- properties ------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_name = st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True)
_key = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,12}", fullmatch=True) | st.sampled_from(sorted(RESERVED))
_WILD = [Match.EXACT, Match.PREFIX, Match.SUFFIX, Match.CONTAINS]
_wild = st.sampled_from(_WILD)
_dates = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


def _values(values: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(values, min_size=1, max_size=4).map(tuple)


@st.composite
def _terms(draw: st.DrawFn) -> Term:
    negate = draw(st.booleans())
    kind = draw(st.sampled_from(["resource", "action", "actor", "id", "actor.type", "outcome", "detail", "text"]))
    if kind in ("resource", "action"):
        field = Field.RESOURCE if kind == "resource" else Field.ACTION
        match = draw(st.sampled_from([Match.EXACT, Match.PREFIX]))
        return Term(field, draw(_values(_name)), match=match, negate=negate)
    if kind in ("actor", "id"):
        field = Field.ACTOR if kind == "actor" else Field.ID
        return Term(field, draw(_values(_text)), match=draw(_wild), negate=negate)
    if kind == "actor.type":
        return Term(Field.ACTOR_TYPE, draw(_values(st.sampled_from(ACTOR_TYPES))), negate=negate)
    if kind == "outcome":
        return Term(Field.OUTCOME, draw(_values(st.sampled_from(OUTCOMES))), negate=negate)
    if kind == "detail":
        key = draw(_key)
        matches = [*_WILD, Match.NAMESPACE] if key == "namespace" else _WILD
        return Term(Field.DETAIL, draw(_values(_text)), key, draw(st.sampled_from(matches)), negate)
    match = draw(_wild)
    word = draw(_text.filter(lambda w: w != "") if match is Match.EXACT else _text)
    return Term(Field.TEXT, (word,), match=match, negate=negate)


_queries = st.builds(
    Query,
    st.lists(_terms(), max_size=8).map(tuple),
    st.none() | _dates,
    st.none() | _dates,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(_queries)
def test_round_trip_query_text_query(q: Query) -> None:
    """Every expressible Query survives to_text() then parse() unchanged."""
    assert parse(to_text(q), now=NOW) == q


@settings(max_examples=1000)
@given(st.text(max_size=200))
def test_parse_only_raises_validation_error(text: str) -> None:
    """Arbitrary text either parses or raises ValidationError, nothing else."""
    try:
        q = p(text)
    except ValidationError as exc:
        assert exc.field == "q"
    else:
        assert isinstance(q, Query)


_alphabet = st.sampled_from([*' -:,*"\\=aA1._[]', "after:", "before:", "namespace:", "details[", "action:"])


@settings(max_examples=1000)
@given(st.lists(_alphabet, max_size=30).map("".join))
def test_parse_of_syntax_soup_only_raises_validation_error(text: str) -> None:
    """Text dense in syntax characters parses or raises ValidationError, and what parses renders."""
    try:
        q = p(text)
    except ValidationError:
        return
    try:
        again = to_text(q)
    except ValidationError:
        return
    assert parse(again, now=NOW) == q
