"""Laptop and phone layouts, keyboard use, and the screenshots of docs/ui.md.

Screenshots go to a temporary directory; with ``AUDITLEDGER_UI_SCREENSHOTS=1``
they are written to ``docs/screenshots/`` instead (how the docs' images are made).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ui.conftest import Tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("AUDITLEDGER_UI_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path


_WIDER = """Array.from(document.querySelectorAll('body *'))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && e.offsetParent !== null)
    .slice(0, 5).map(e => e.tagName + '.' + e.className)"""


def _no_sideways_scroll(tab: Tab) -> bool:
    fits = bool(tab.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))
    assert fits, tab.page.evaluate(_WIDER)
    return fits


def test_laptop_views(tab: Tab, shots: Path) -> None:
    """The sign-in, table, diff, event and admin pages render at laptop width; each is saved as a screenshot."""
    tab.goto("/ui/signin")
    tab.page.screenshot(path=str(shots / "signin.png"))
    tab.sign_in("admin")
    tab.goto("/ui/t/main?q=namespace%3Acompany.team")
    tab.page.locator("#timeline svg").wait_for()
    tab.page.screenshot(path=str(shots / "table.png"))
    tab.goto(f"/ui/t/main/events/{tab.server.ids['diff']}/diff")
    tab.page.screenshot(path=str(shots / "diff.png"))
    tab.goto(f"/ui/t/main/events/{tab.server.ids['diff']}/diff?view=unified")
    tab.page.screenshot(path=str(shots / "diff-unified.png"))
    json_event = tab.server.ids["xss1"]
    tab.goto(f"/ui/t/main/events/{json_event}/diff")
    assert tab.page.locator("section.summary").count() == 1
    tab.goto(f"/ui/t/main/events/{tab.server.ids['diff']}")
    assert "No checkpoint yet" in tab.page.inner_text(".proof")
    tab.page.screenshot(path=str(shots / "event.png"), full_page=True)
    tab.goto("/ui/t/main?q=namespace%3Anowhere")
    assert "No events match" in tab.page.inner_text(".empty")
    tab.page.screenshot(path=str(shots / "empty.png"))
    tab.goto("/ui/admin")
    tab.page.screenshot(path=str(shots / "admin.png"))
    for name in ("table", "diff", "event", "admin"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


def test_phone_width(browser: object, tab: Tab, shots: Path) -> None:
    """At 390 px the table becomes cards with no sideways scrolling, and the diff still fits."""
    tab.page.set_viewport_size({"width": 390, "height": 844})
    tab.sign_in("auditor")
    assert tab.page.locator("table.log tbody tr").count() == 50
    assert _no_sideways_scroll(tab)
    assert tab.page.locator("table.log thead").is_hidden()
    tab.page.screenshot(path=str(shots / "phone-table.png"))
    tab.goto(f"/ui/t/main/events/{tab.server.ids['diff']}/diff")
    assert _no_sideways_scroll(tab)
    tab.page.screenshot(path=str(shots / "phone-diff.png"))


def test_keyboard_use(tab: Tab, shots: Path) -> None:
    """'/' focuses the filter, Enter searches, and Tab reaches the rows' tags and diff buttons."""
    tab.sign_in("auditor")
    tab.page.locator("body").press("/")
    assert tab.page.evaluate("document.activeElement.id") == "q"
    tab.page.keyboard.type("resource:FLOW")
    with tab.page.expect_navigation():
        tab.page.keyboard.press("Enter")
    assert "resource%3AFLOW" in tab.page.url
    tab.page.locator("table.log a.res").first.focus()
    reached = set()
    for _ in range(12):
        tab.page.keyboard.press("Tab")
        reached.add(tab.page.evaluate("document.activeElement.className"))
    assert "tag" in reached and "btn icon" in reached
    tab.page.screenshot(path=str(shots / "keyboard.png"))
