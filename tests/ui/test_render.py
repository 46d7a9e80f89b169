"""The UI's pure parts: resource links, filter editing, CSV cells, sessions, diffs and the timeline."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from auditledger import AuditLog
from auditledger.errors import ConfigError
from auditledger.model import Actor, ActorType, Event, Outcome
from auditledger.query import parse
from auditledger.server.ui import diffview, render, timeline
from auditledger.server.ui.session import Sealer

FLOW = "https://kestra.example.com/ui/flows/edit/{namespace}/{flowId}"


def _event(details: dict[str, str], resource: str = "FLOW") -> Event:
    return Event(
        "01900000-0000-7000-8000-000000000000", "main", 0, datetime(2026, 1, 1, tzinfo=UTC), resource, "UPDATE",
        Actor(ActorType.USER, "anna"), details, None, None, Outcome.SUCCESS, None, None, b"\0" * 32,
    )


def test_resource_link_fills_and_encodes_details() -> None:
    """A template's placeholders take the event's details, percent-encoded so they cannot leave their segment."""
    links = render.ResourceLinks.from_settings({"FLOW": FLOW})
    assert links.href(_event({"namespace": "company.team", "flowId": "hello"})) == (
        "https://kestra.example.com/ui/flows/edit/company.team/hello"
    )
    hostile = links.href(_event({"namespace": "../../x", "flowId": "a?b=<script>"}))
    assert hostile == "https://kestra.example.com/ui/flows/edit/..%2F..%2Fx/a%3Fb%3D%3Cscript%3E"


def test_resource_link_needs_every_placeholder() -> None:
    """An event lacking a detail the template needs gets no link, and other resource types none either."""
    links = render.ResourceLinks.from_settings({"FLOW": FLOW})
    assert links.href(_event({"namespace": "company"})) is None
    assert links.href(_event({"namespace": "a", "flowId": "b"}, resource="SECRET")) is None


@pytest.mark.parametrize(
    "template",
    [
        "javascript:alert(1)//{namespace}",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>",
        "//evil.example/{id}",
        "{scheme}://host/x",
        "https://{host}/x",
        "https://ok.example/{id!r}",
        "https://ok.example/{id:>10}",
        "https://ok.example/{",
    ],
)
def test_unsafe_templates_are_refused(template: str) -> None:
    """Only literal http(s) origins with plain placeholders pass; the error names the setting."""
    with pytest.raises(ConfigError, match="ui_resource_urls"):
        render.ResourceLinks.from_settings({"FLOW": template})


def test_clicked_tags_join_the_filter() -> None:
    """A tag adds its term once; namespaces take their children; odd values are quoted so they parse back."""
    assert render.add_term("", render.tag_term("namespace", "company.team")) == "namespace:company.team"
    q = render.add_term("action:UPDATE", render.tag_term("flowId", "hello"))
    assert q == "action:UPDATE flowId:hello"
    assert render.add_term(q, render.tag_term("flowId", "hello")) == q
    odd = render.add_term("", render.tag_term("link", 'javascript:alert("x") y'))
    term = parse(odd).terms[0]
    assert (term.key, term.values) == ("link", ('javascript:alert("x") y',))
    reserved = render.add_term("", render.tag_term("id", "abc"))
    assert parse(reserved).terms[0].key == "id"


def test_chips_remove_terms_and_presets_replace_dates() -> None:
    """Removing a chip keeps the other terms; a preset swaps the date range for a relative one."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    query = parse("resource:FLOW namespace:company after:2026-01-01", now=now)
    assert render.without_term(query, 0).startswith("namespace:company after:2026-01-01")
    assert render.with_range(query, "-24h", None) == "resource:FLOW namespace:company after:-24h"
    assert render.with_range(query, None, None) == "resource:FLOW namespace:company"


def test_csv_cells_cannot_become_formulas() -> None:
    """Cells a spreadsheet would evaluate get a leading quote; others stay as they are."""
    assert render.csv_cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert render.csv_cell("+1") == "'+1"
    assert render.csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert render.csv_cell("anna@acme.io") == "anna@acme.io"


def test_relative_dates() -> None:
    """Ages read as a person would say them."""
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert render.relative(now - timedelta(seconds=5), now) == "just now"
    assert render.relative(now - timedelta(minutes=5), now) == "5 min ago"
    assert render.relative(now - timedelta(hours=3), now) == "3 h ago"
    assert render.relative(now - timedelta(days=12), now) == "12 d ago"


def test_session_cookie_round_trip_and_tamper() -> None:
    """A sealed session opens with its key only; an altered, foreign or expired cookie does not."""
    sealer = Sealer("secret-one", 3600)
    cookie, session = sealer.seal("alt_token")
    assert sealer.open(cookie) == session
    flipped = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
    assert sealer.open(flipped) is None
    assert Sealer("secret-two", 3600).open(cookie) is None
    assert sealer.open("not a cookie") is None
    assert sealer.open(None) is None
    expired = Sealer("secret-one", -1)
    assert expired.open(expired.seal("alt_token")[0]) is None
    assert "alt_token" not in cookie


def test_csrf_tokens_belong_to_their_session() -> None:
    """The CSRF token of one session is refused for another and when missing."""
    sealer = Sealer(None, 60)
    _, one = sealer.seal("a")
    _, two = sealer.seal("a")
    assert sealer.csrf_ok(one.sid, sealer.csrf(one.sid))
    assert not sealer.csrf_ok(two.sid, sealer.csrf(one.sid))
    assert not sealer.csrf_ok(one.sid, "")
    assert not sealer.csrf_ok(one.sid, None)


def test_text_diff_marks_the_changed_words() -> None:
    """A changed line pairs with its new version, and only the changed characters are marked."""
    view = diffview.build("a: 1\nb: old\nc: 3\n", "a: 1\nb: new\nc: 3\nd: 4\n")
    kinds = [r.kind for r in view.rows]
    assert kinds == ["equal", "replace", "equal", "insert"]
    changed = view.rows[1]
    assert [t for t, c in changed.left or [] if c] == ["old"]
    assert [t for t, c in changed.right or [] if c] == ["new"]
    assert view.summary is None and view.changes == 2
    assert [sign for sign, _, _ in view.unified] == [" ", "-", "+", " ", "+"]


def test_json_diff_has_a_structural_summary() -> None:
    """JSON states are pretty-printed and summarised as paths added, removed and changed."""
    view = diffview.build({"a": 1, "b": {"c": 2}, "gone": True}, {"a": 1, "b": {"c": 3}, "new": [1]})
    assert view.is_json and view.summary is not None
    assert view.summary.added == ["/new"]
    assert view.summary.removed == ["/gone"]
    assert view.summary.changed == ["/b/c"]


def test_timeline_counts_match_the_events() -> None:
    """Every matching event falls in exactly one bar, bars are round-sized, and an empty match has no chart."""
    now = datetime.now(UTC).replace(microsecond=0)
    with AuditLog.open("memory://") as log:
        dates = [now - timedelta(hours=h, minutes=7) for h in range(30, 0, -1)]
        raws = [
            {"resource_type": "FLOW" if i % 3 else "SECRET", "action": "UPDATE", "actor": {"type": "USER", "id": "a"},
             "details": {"namespace": "a" if i % 2 else "b"}}
            for i in range(30)
        ]
        log.backfill(raws, dates)
        line = timeline.build(log, parse(""), "main", now)
        assert line is not None and line.total == 30
        assert line.step == timedelta(hours=1)
        flows = timeline.build(log, parse("resource:FLOW"), "main", now)
        assert flows is not None and flows.total == 20
        assert timeline.build(log, parse("resource:USER"), "main", now) is None
        by_details = timeline.build(log, parse("namespace:a resource:FLOW"), "main", now)  # the facets path
        assert by_details is not None and by_details.total == 10
        assert sorted({b.count for b in by_details.bars}) == [0, 1]  # one event per hour, never split or doubled
        started = time.perf_counter()
        ranged = timeline.build(log, parse("after:-6h", now=now), "main", now)
        assert ranged is not None and ranged.total == 5  # 1h07 ... 5h07 ago
        assert time.perf_counter() - started < 2


def test_timeline_of_a_broad_details_filter_charts_the_newest_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """When a details filter matches more than MAX_SCANNED events, the chart covers the newest window that fits."""
    now = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(timeline, "MAX_SCANNED", 14)
    with AuditLog.open("memory://") as log:
        dates = [now - timedelta(hours=h, minutes=7) for h in range(30, 0, -1)]
        raws = [
            {"resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "a"},
             "details": {"namespace": "a" if h % 2 else "b"}}
            for h in range(30, 0, -1)
        ]
        log.backfill(raws, dates)
        line = timeline.build(log, parse("namespace:a"), "main", now)
        assert line is not None and line.partial
        assert line.total == 12  # the odd hours 1 ... 23 of the last day
        narrow = timeline.build(log, parse("namespace:b after:-10h", now=now), "main", now)
        assert narrow is not None and not narrow.partial  # the even hours 2 ... 8: few enough to chart whole
        assert narrow.total == 4 and narrow.start == now - timedelta(hours=10)
