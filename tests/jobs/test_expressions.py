"""Kestra/Pebble expression semantics: now(), dateAdd units, date formats, strictness and the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auditledger.jobs.expressions import ExpressionError, Renderer

NOW = datetime(2024, 3, 31, 6, 17, 1, 171193, tzinfo=UTC)


def render(text: str, **context: object) -> str:
    return Renderer(now=lambda: NOW).render(text, context, "p")


def test_the_kestra_example_subtracts_one_month_clamping_the_day() -> None:
    """now() | dateAdd(-1, 'MONTHS') on 31 March gives 29 February, in the default iso format."""
    assert render("{{ now() | dateAdd(-1, 'MONTHS') }}") == "2024-02-29T06:17:01.171193Z"


@pytest.mark.parametrize(
    ("unit", "amount", "expected"),
    [
        ("NANOS", 5000, "2024-03-31T06:17:01.171198Z"),
        ("MICROS", 7, "2024-03-31T06:17:01.171200Z"),
        ("MILLIS", -171, "2024-03-31T06:17:01.000193Z"),
        ("SECONDS", 59, "2024-03-31T06:18:00.171193Z"),
        ("MINUTES", -17, "2024-03-31T06:00:01.171193Z"),
        ("HOURS", 18, "2024-04-01T00:17:01.171193Z"),
        ("HALF_DAYS", 1, "2024-03-31T18:17:01.171193Z"),
        ("DAYS", 1, "2024-04-01T06:17:01.171193Z"),
        ("WEEKS", -1, "2024-03-24T06:17:01.171193Z"),
        ("YEARS", -1, "2023-03-31T06:17:01.171193Z"),
        ("DECADES", 1, "2034-03-31T06:17:01.171193Z"),
        ("CENTURIES", 1, "2124-03-31T06:17:01.171193Z"),
        ("MILLENNIA", 1, "3024-03-31T06:17:01.171193Z"),
    ],
)
def test_date_add_units(unit: str, amount: int, expected: str) -> None:
    """Every dateAdd unit from NANOS to MILLENNIA moves the date as java.time does."""
    assert render(f"{{{{ now() | dateAdd({amount}, '{unit}') }}}}") == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("iso", "2024-03-31T06:17:01.171193Z"),
        ("iso_sec", "2024-03-31T06:17:01Z"),
        ("sql", "2024-03-31 06:17:01.171193"),
        ("iso_date_time", "2024-03-31T06:17:01.171193Z"),
        ("iso_date", "2024-03-31Z"),
        ("iso_instant", "2024-03-31T06:17:01.171193Z"),
        ("yyyy-MM-dd", "2024-03-31"),
        ("dd/MM/yy HH'h'mm", "31/03/24 06h17"),
        ("EEEE d MMMM yyyy, hh:mm a", "Sunday 31 March 2024, 06:17 AM"),
        ("yyyyMMdd'T'HHmmssXX", "20240331T061701Z"),
    ],
)
def test_date_formats(fmt: str, expected: str) -> None:
    """Named formats and Java patterns render like Kestra's date filter."""
    assert render(f'{{{{ now() | date("{fmt}") }}}}') == expected


def test_time_zones_and_string_inputs() -> None:
    """A timeZone argument shifts the rendering; texts are read as ISO date-times or dates."""
    assert render("{{ now() | date('iso', timeZone='Europe/Paris') }}") == "2024-03-31T08:17:01.171193+02:00"
    assert render("{{ '2024-01-31' | dateAdd(1, 'MONTHS', 'iso_date') }}") == "2024-02-29Z"
    assert render("{{ 0 | date('iso_sec') }}") == "1970-01-01T00:00:00Z"


def test_trigger_variables_and_strict_undefined() -> None:
    """trigger.date renders as iso; an undefined variable is an error, as in Kestra's strict mode."""
    from auditledger.jobs.expressions import trigger_context

    ctx = trigger_context(NOW, None, None)
    assert render("{{ trigger.date }}", trigger=ctx) == "2024-03-31T06:17:01.171193Z"
    with pytest.raises(ExpressionError, match="'trigger' is undefined"):
        render("{{ trigger.date }}")


def test_bad_expressions_fail_clearly() -> None:
    """Unknown units, functions, filters and unsafe attributes are ExpressionErrors naming the property."""
    with pytest.raises(ExpressionError, match="unknown unit"):
        render("{{ now() | dateAdd(1, 'FORTNIGHTS') }}")
    with pytest.raises(ExpressionError, match=r"^p: "):
        render("{{ nope() }}")
    with pytest.raises(ExpressionError, match="unsafe"):
        render("{{ now().__class__.__mro__ }}")
    with pytest.raises(ExpressionError, match="No filter named"):
        Renderer().check("{{ now() | dateSub(1) }}", "p")
