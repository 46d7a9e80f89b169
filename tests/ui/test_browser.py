"""The audit log web page in Debian's Chromium against a real ``auditledger serve``."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.ui.conftest import XSS_IMG, XSS_SCRIPT, XSS_URL, Tab

# One server and one browser for the module; each page load is a real HTTP round trip.
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _q(page_url: str) -> str:
    return parse_qs(urlsplit(page_url).query).get("q", [""])[0]


def _count(tab: Tab) -> int:
    """The number of matching events, once the page has fetched it."""
    return int(re.sub(r"\D", "", tab.page.locator(".count .n").inner_text()))


def _namespaces(tab: Tab) -> list[str]:
    cells = tab.page.locator("table.log tbody tr td[data-label=Details]")
    out = []
    for i in range(cells.count()):
        tags = cells.nth(i).locator(".tag").all_inner_texts()
        out += [t.split(":", 1)[1] for t in tags if t.startswith("namespace:")]
    return out


def test_without_a_session_pages_redirect_to_sign_in(tab: Tab) -> None:
    """Every page, opened without a session, lands on the sign-in form and comes back after it."""
    for path in ("/ui/", "/ui/t/main", "/ui/admin", f"/ui/t/main/events/{tab.server.ids['diff']}/diff"):
        tab.goto(path)
        assert urlsplit(tab.page.url).path == "/ui/signin", path
    tab.page.fill("#token", tab.server.tokens["auditor"])
    tab.page.click("button[type=submit]")
    tab.page.wait_for_load_state()
    assert urlsplit(tab.page.url).path.endswith("/diff")


def test_sign_in_and_out(tab: Tab) -> None:
    """Signing in shows the table with an HttpOnly session cookie; signing out ends the session."""
    tab.sign_in("auditor")
    assert urlsplit(tab.page.url).path == "/ui/t/main"
    assert tab.page.locator("table.log tbody tr").count() == 50
    cookie = next(c for c in tab.page.context.cookies() if c["name"] == "al_session")
    assert cookie["httpOnly"] and cookie["sameSite"] in ("Lax", "Strict")
    tab.page.click("form.signout button")
    tab.page.wait_for_load_state()
    assert urlsplit(tab.page.url).path == "/ui/signin"
    assert "signed out" in tab.page.inner_text("main")
    tab.goto("/ui/t/main")
    assert urlsplit(tab.page.url).path == "/ui/signin"


def test_wrong_token_is_refused(tab: Tab) -> None:
    """An unknown token gets a clear message on the sign-in page and no session."""
    tab.goto("/ui/signin")
    tab.page.fill("#token", "alt_not-a-token")
    tab.page.click("button[type=submit]")
    assert "unknown API token" in tab.page.inner_text(".error")
    assert not [c for c in tab.page.context.cookies() if c["name"] == "al_session"]


def test_ingest_token_cannot_view(tab: Tab) -> None:
    """A token with the ingest role is refused at sign-in and never gets a session."""
    tab.goto("/ui/signin")
    tab.page.fill("#token", tab.server.tokens["ingest"])
    tab.page.click("button[type=submit]")
    assert "role ingest" in tab.page.inner_text(".error")
    assert not [c for c in tab.page.context.cookies() if c["name"] == "al_session"]
    tab.goto("/ui/t/main")
    assert urlsplit(tab.page.url).path == "/ui/signin"


def test_auditor_of_one_tenant_never_sees_another(tab: Tab) -> None:
    """An auditor of tenant main gets 403 on beta's pages and exports, and none of beta's events in main."""
    tab.sign_in("auditor")
    assert "zed@beta.io" not in tab.page.content()
    assert tab.page.locator("select[data-nav-tenant]").count() == 0
    for path in ("/ui/t/beta", "/ui/t/beta/export?format=csv", "/ui/t/beta/timeline", "/ui/admin"):
        response = tab.goto(path)
        assert response.status == 403, path
        assert "beta-only" not in tab.page.content()
    tab.goto("/ui/t/main?q=zed%40beta.io")
    assert tab.page.locator("table.log tbody tr").count() == 0


def test_filter_by_typing_namespace(tab: Tab) -> None:
    """Typing namespace:... narrows the rows to that namespace and its children, and puts it in the URL."""
    tab.sign_in("auditor")
    before = _count(tab)
    tab.page.fill("#q", "namespace:company.finance")
    with tab.page.expect_navigation():
        tab.page.press("#q", "Enter")
    assert _q(tab.page.url) == "namespace:company.finance"
    assert 0 < _count(tab) < before
    found = _namespaces(tab)
    assert found and all(ns == "company.finance" or ns.startswith("company.finance.") for ns in found)


def test_click_a_tag_adds_it_to_the_filter(tab: Tab) -> None:
    """Clicking a Details tag adds key:value to the filter, and every row then carries that tag."""
    tab.sign_in("auditor")
    tag = tab.page.locator("table.log a.tag", has_text="flowId:").first
    text = tag.inner_text()
    tag.click()
    tab.page.wait_for_load_state()
    assert text in _q(tab.page.url)
    assert tab.page.locator(".chip", has_text=text).count() == 1
    rows = tab.page.locator("table.log tbody tr")
    assert rows.count() > 0
    for i in range(rows.count()):
        assert text in rows.nth(i).locator("td[data-label=Details]").inner_text().replace("\n", " ")


def test_controls_build_the_filter(tab: Tab) -> None:
    """Choosing a resource type and a preset in the filter builder writes them into the URL's filter."""
    tab.sign_in("auditor")
    tab.page.click("details.builder summary")
    tab.page.check("input[name=resource][value=FLOW]")
    tab.page.select_option("select[name=range]", "7d")
    tab.page.click(".builder-form button[type=submit]")
    tab.page.wait_for_load_state()
    q = _q(tab.page.url)
    assert "resource:FLOW" in q and "after:-7d" in q
    resources = tab.page.locator("table.log tbody td[data-label=Resource]").all_inner_texts()
    assert resources and set(resources) == {"FLOW"}


def test_diff_highlights_the_changed_line(tab: Tab) -> None:
    """The diff view pairs before and after, highlights the changed line, and toggles to unified and revision."""
    tab.sign_in("auditor")
    row = tab.page.locator("table.log tbody tr", has_text="flowId:hello").first
    row.locator("a", has_text="Diff").click()
    tab.page.wait_for_load_state()
    changed = tab.page.locator("table.diff.split tr.replace")
    assert changed.count() == 1
    assert "the old words" in changed.locator("td.old").inner_text()
    assert "the new words" in changed.locator("td.new").inner_text()
    assert changed.locator("td.new mark").first.inner_text().strip() == "new"
    assert tab.page.locator("table.diff.split tr.equal").count() == 4
    opened = tab.page.locator("nav.tabs a", has_text="Open resource")
    assert opened.get_attribute("href") == "https://kestra.example.com/ui/flows/edit/company.team/hello"
    tab.page.click("nav.tabs a:has-text('Unified')")
    assert tab.page.locator("table.diff.unified tr.delete").inner_text().count("old words") == 1
    assert tab.page.locator("table.diff.unified tr.insert").inner_text().count("new words") == 1
    tab.page.click("nav.tabs a:has-text('Revision')")
    assert "the new words" in tab.page.inner_text("table.diff.revision")
    assert "the old words" not in tab.page.inner_text("table.diff.revision")


def test_paging_through_results(tab: Tab) -> None:
    """Older and Newer walk the pages by keyset without repeating or skipping a row."""
    tab.sign_in("auditor")
    tab.goto("/ui/t/main?size=25")

    def ids() -> list[str]:
        return [a.get_attribute("href").split("/events/")[1].split("?")[0]
                for a in tab.page.locator("table.log a.res").all()]

    first = ids()
    tab.page.click("a[rel=next]")
    second = ids()
    tab.page.click("a[rel=next]")
    third = ids()
    assert len(first) == len(second) == len(third) == 25
    assert not set(first) & set(second) and not set(second) & set(third)
    tab.page.click("a[rel=prev]")
    assert ids() == second
    tab.page.click("a[rel=prev]")
    assert ids() == first
    assert tab.page.locator("a[rel=prev]").count() == 0


def test_export_csv_of_the_current_filter(tab: Tab) -> None:
    """Export CSV downloads exactly the events the filter matches."""
    tab.sign_in("auditor")
    tab.goto("/ui/t/main?q=resource%3ASECRET")
    count = _count(tab)
    with tab.page.expect_download() as info:
        tab.page.click("p.exports a:has-text('CSV')")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text("utf-8"))))
    assert len(rows) == count > 0
    assert {r["resource_type"] for r in rows} == {"SECRET"}
    assert info.value.suggested_filename.endswith(".csv")


def test_timeline_narrows_the_date_range(tab: Tab) -> None:
    """The timeline draws bars of matching events; clicking one narrows the filter to its dates."""
    tab.sign_in("auditor")
    bars = tab.page.locator("#timeline svg a.bar-link")
    bars.first.wait_for()
    assert bars.count() >= 5
    bars.last.click(force=True)
    tab.page.wait_for_load_state()
    q = _q(tab.page.url)
    assert "after:" in q and "before:" in q
    assert tab.page.locator(".chip-date").count() == 1


def test_hostile_events_render_as_text(tab: Tab) -> None:
    """Script tags, onerror attributes and javascript: URLs in details, actors and states stay text."""
    tab.sign_in("admin")
    pages = [
        "/ui/t/main?q=xss%3Amarker",
        f"/ui/t/main/events/{tab.server.ids['xss0']}",
        f"/ui/t/main/events/{tab.server.ids['xss0']}/diff",
        f"/ui/t/main/events/{tab.server.ids['xss0']}/diff?view=unified",
        f"/ui/t/main/events/{tab.server.ids['xss1']}/diff",
        f"/ui/t/main/events/{tab.server.ids['xss1']}",
    ]
    for path in pages:
        tab.goto(path)
        tab.page.wait_for_load_state("networkidle")
        text = tab.page.inner_text("main")
        assert XSS_SCRIPT in text or XSS_IMG in text, path
        assert tab.page.evaluate("window.__xss") is None, path
        assert tab.page.locator("img").count() == 0, path
        scripts = tab.page.locator("script")
        assert [scripts.nth(i).get_attribute("src") for i in range(scripts.count())] == ["/ui/static/app.js"]
        hrefs = tab.page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
        assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")], path
    tab.goto("/ui/t/main?q=xss%3Amarker")
    tab.page.locator("a.tag", has_text="link:").first.click()
    tab.page.wait_for_load_state("networkidle")
    assert XSS_URL in _q(tab.page.url)
    assert tab.page.locator("table.log tbody tr").count() == 1
    assert tab.dialogs == []


def test_admin_creates_and_revokes_a_token(tab: Tab) -> None:
    """An admin creates a token (secret shown once) and revokes it, through CSRF-protected forms."""
    tab.sign_in("admin")
    tab.goto("/ui/admin")
    tab.page.fill("input[name=name]", "from-the-browser")
    tab.page.select_option("select[name=role]", "auditor")
    tab.page.fill("input[name=tenant]", "main")
    tab.page.click("form[action='/ui/admin/tokens'] button")
    secret = tab.page.inner_text("#new-secret")
    assert secret.startswith("alt_")
    row = tab.page.locator("table.tokens tr", has_text="from-the-browser")
    tab.accept_dialogs = True
    row.locator("button", has_text="Revoke").click()
    tab.page.wait_for_load_state()
    assert "revoked" in tab.page.locator("table.tokens tr", has_text="from-the-browser").inner_text()


def test_forms_without_csrf_token_are_refused(tab: Tab) -> None:
    """A token-creating POST without the page's CSRF token is refused and creates nothing."""
    tab.sign_in("admin")
    tab.goto("/ui/admin")
    before = tab.page.locator("table.tokens tbody tr").count()
    response = tab.page.request.post(tab.server.url + "/ui/admin/tokens", form={"role": "admin", "tenant": "*"})
    assert response.status == 403
    tab.goto("/ui/admin")
    assert tab.page.locator("table.tokens tbody tr").count() == before
