"""The UI's HTTP behaviour without a browser: headers, cookies, redirects, exports and proof status."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from auditledger import AuditLog, tree
from auditledger.checkpoint import generate_key, save_private_key
from auditledger.server import create_app
from auditledger.server.auth import Tokens
from auditledger.settings import Settings


@dataclass
class Live:
    url: str
    ledger: AuditLog
    secrets: dict[str, str]
    ids: list[str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("pages")
    key_file = root / "log.key"
    save_private_key(generate_key(), key_file)
    settings = Settings(db=f"sqlite:///{root / 'ui.db'}", signing_key_file=str(key_file), checkpoint_interval=0)
    ledger = AuditLog.open(settings.db)
    ids = [
        ledger.record("FLOW", "UPDATE", {"type": "USER", "id": f"u{i}"}, details={"namespace": "company", "n": str(i)},
                      before={"v": i}, after={"v": i + 1}).id
        for i in range(6)
    ]
    tree.make_checkpoint(ledger.store, "main", tree.load_signer(str(key_file)))
    ids.append(ledger.record("FLOW", "DELETE", {"type": "SYSTEM", "id": "sys"}, details={"n": "late"}).id)
    tokens = Tokens(ledger.store)
    secrets = {
        "auditor": tokens.create("auditor", "main")[0],
        "admin": tokens.create("admin", "*")[0],
        "revoked": tokens.create("auditor", "main")[0],
    }
    with _serving(settings, ledger) as url:
        yield Live(url, ledger, secrets, ids)
    ledger.close()


@contextlib.contextmanager
def _serving(settings: Settings, ledger: AuditLog) -> Iterator[str]:
    """``create_app`` under uvicorn in a thread on a free 127.0.0.1 port."""
    app = create_app(settings, ledger)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def _signed_in(live: Live, role: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url) as client:
        form = client.get("/ui/signin")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert nonce is not None
        answer = client.post("/ui/signin", data={"token": live.secrets[role], "csrf": nonce.group(1), "next": "/ui/"})
        assert answer.status_code == 303, answer.text
        yield client


def test_pages_carry_security_headers(live: Live) -> None:
    """Every page forbids inline and foreign scripts (CSP), framing, sniffing and referrer leaks."""
    with _signed_in(live, "auditor") as client:
        for path in ("/ui/signin", "/ui/t/main", f"/ui/t/main/events/{live.ids[0]}"):
            headers = client.get(path).headers
            assert "script-src 'self'" in headers["content-security-policy"]
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"


def test_session_cookie_flags_and_secrecy(live: Live) -> None:
    """The session cookie is HttpOnly, SameSite, scoped to /ui, and does not contain the token."""
    with httpx.Client(base_url=live.url) as client:
        form = client.get("/ui/signin")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert nonce is not None
        answer = client.post("/ui/signin", data={"token": live.secrets["auditor"], "csrf": nonce.group(1)})
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
        assert live.secrets["auditor"] not in cookie


def test_sign_in_needs_the_form_nonce(live: Live) -> None:
    """A sign-in POST from elsewhere (no double-submit nonce) is refused."""
    answer = httpx.post(live.url + "/ui/signin", data={"token": live.secrets["auditor"], "csrf": "x"})
    assert answer.status_code == 400
    assert "set-cookie" not in answer.headers or "al_session=" not in answer.headers["set-cookie"]


def test_next_is_never_another_site(live: Live) -> None:
    """After sign-in only /ui/ paths are followed: no open redirect."""
    with httpx.Client(base_url=live.url) as client:
        for target in ("https://evil.example/", "//evil.example/ui/", "/ui/\\evil"):
            form = client.get("/ui/signin", params={"next": target})
            nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert nonce is not None
            answer = client.post(
                "/ui/signin", data={"token": live.secrets["auditor"], "csrf": nonce.group(1), "next": target}
            )
            assert answer.headers["location"] == "/ui/"


def test_revoking_a_token_ends_its_sessions(live: Live) -> None:
    """A session whose token is revoked is sent to sign-in with the reason."""
    with _signed_in(live, "revoked") as client:
        assert client.get("/ui/t/main").status_code == 200
        tokens = Tokens(live.ledger.store)
        tokens.revoke(tokens.authenticate(live.secrets["revoked"]).token_id)
        answer = client.get("/ui/t/main")
        assert answer.status_code == 303
        assert "revoked" in httpx.URL(answer.headers["location"]).params["m"]


def test_bad_filter_says_where(live: Live) -> None:
    """A filter that does not parse shows the parser's message, not an error page."""
    with _signed_in(live, "auditor") as client:
        answer = client.get("/ui/t/main", params={"q": 'namespace:"open'})
        assert answer.status_code == 200
        assert "unterminated quote at position" in answer.text
        bad_cursor = client.get("/ui/t/main", params={"older": "garbage!"})
        assert bad_cursor.status_code == 200 and "not a cursor" in bad_cursor.text


def test_ndjson_export_has_every_field(live: Live) -> None:
    """The NDJSON export gives one full event per line for the current filter."""
    with _signed_in(live, "auditor") as client:
        answer = client.get("/ui/t/main/export", params={"q": "action:UPDATE", "format": "ndjson"})
        assert answer.status_code == 200
        assert answer.headers["content-disposition"].startswith("attachment;")
        events = [orjson.loads(line) for line in answer.text.splitlines()]
        assert len(events) == 6 and {e["action"] for e in events} == {"UPDATE"}
        assert {"before", "after", "leaf_hash", "details"} <= set(events[0])


def test_proof_status_against_the_latest_checkpoint(live: Live) -> None:
    """An event inside the latest checkpoint shows a verified proof; a later one says it is not in one yet."""
    with _signed_in(live, "auditor") as client:
        inside = client.get(f"/ui/t/main/events/{live.ids[2]}").text
        assert "Verified in checkpoint of size 6, signed by auditledger" in inside
        later = client.get(f"/ui/t/main/events/{live.ids[-1]}").text
        assert "Not in a checkpoint yet" in later


def test_verify_badge(live: Live) -> None:
    """The verify button (a CSRF-checked form) recomputes the ledger and the badge shows the result."""
    with _signed_in(live, "auditor") as client:
        page = client.get("/ui/t/main").text
        assert "Not verified" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        assert client.post("/ui/t/main/verify", data={"csrf": "wrong"}).status_code == 403
        answer = client.post("/ui/t/main/verify", data={"csrf": csrf.group(1), "back": "/ui/t/main?q=n%3A1"})
        assert answer.headers["location"] == "/ui/t/main?q=n%3A1"
        assert "Verified ✓ 7 events" in client.get("/ui/t/main").text


def test_unknown_event_and_static_files(live: Live) -> None:
    """An unknown event id is a 404 page; only the product's own static files are served."""
    with _signed_in(live, "auditor") as client:
        assert client.get("/ui/t/main/events/nope").status_code == 404
        assert client.get("/ui/t/%3Cscript%3E").status_code == 404
        assert client.get("/ui/static/app.css").status_code == 200
        assert client.get("/ui/static/..%2F__init__.py").status_code == 404
        assert client.get("/ui/static/web.py").status_code == 404


def test_export_is_tenant_scoped(live: Live) -> None:
    """An auditor of main cannot export another tenant, even one that does not exist."""
    with _signed_in(live, "auditor") as client:
        assert client.get("/ui/t/other/export", params={"format": "csv"}).status_code == 403


def test_tokens_created_in_the_ui_work(live: Live) -> None:
    """A token made on the admin page authenticates, with the role and tenant chosen."""
    with _signed_in(live, "admin") as client:
        page = client.get("/ui/admin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        made = client.post("/ui/admin/tokens", data={"csrf": csrf.group(1), "role": "ingest", "tenant": "main"})
        secret = re.search(r'id="new-secret">([^<]+)<', made.text)
        assert secret is not None
        principal = Tokens(live.ledger.store).authenticate(secret.group(1))
        assert (principal.role, principal.tenant) == ("ingest", "main")
        bad = client.post("/ui/admin/tokens", data={"csrf": csrf.group(1), "role": "root", "tenant": "main"})
        assert bad.status_code == 400 and "role" in bad.text


def test_count_is_exact_inline_or_fetched(live: Live) -> None:
    """A page holding every match shows its count at once; otherwise /count answers it (tenant-scoped)."""
    with _signed_in(live, "auditor") as client:
        whole = client.get("/ui/t/main", params={"size": "25"}).text
        assert '<span class="n">7 events</span>' in whole
        fragment = client.get("/ui/t/main/count", params={"q": "action:UPDATE"})
        assert fragment.status_code == 200 and '<span class="n">6 events</span>' in fragment.text
        assert client.get("/ui/t/other/count").status_code == 403
    assert httpx.get(live.url + "/ui/t/main/count").status_code == 401


def test_admin_page_lists_jobs_and_holds(live: Live) -> None:
    """The admin page shows applied jobs with their schedule and active legal holds, linked to what they keep."""
    from auditledger.jobs.runner import Jobs
    from auditledger.retention import Retention

    Jobs(live.ledger).apply(
        "id: audit_log_cleanup\nnamespace: system\ntasks:\n  - id: purge_audit_logs\n"
        "    type: io.kestra.plugin.ee.core.log.PurgeAuditLogs\n    endDate: \"{{ now() | dateAdd(-1, 'MONTHS') }}\"\n"
        "triggers:\n  - id: nightly\n    type: io.kestra.plugin.core.trigger.Schedule\n    cron: \"0 3 * * *\"\n"
    )
    hold = Retention(live.ledger).create_hold("namespace:company <b>x</b>", "litigation <script>", tenant="main")
    with _signed_in(live, "admin") as client:
        page = client.get("/ui/admin").text
        assert "<title>Admin · auditledger</title>" in page
        assert "system.audit_log_cleanup" in page and "0 3 * * *" in page and "PurgeAuditLogs" in page
        assert hold.id in page and "litigation &lt;script&gt;" in page
        assert "resource%3AAUDITLOG+action%3ADELETE" in page
    with _signed_in(live, "auditor") as client:
        assert client.get("/ui/admin").status_code == 403


def test_sign_in_form_counts_guesses_and_records_reads(tmp_path: Path) -> None:
    """Unknown tokens typed into the form count against the per-address limit (then 429, even for a good
    token), and with audit_reads each page view is recorded as AUDITLOG/READ like an API read."""
    settings = Settings(db=f"sqlite:///{tmp_path / 'x.db'}", auth_failures_per_minute=3, audit_reads=True,
                        checkpoint_interval=0)
    with AuditLog.open(settings.db) as ledger:
        good = Tokens(ledger.store).create("auditor", "main")[0]
        with _serving(settings, ledger) as url, httpx.Client(base_url=url) as client:

            def attempt(token: str) -> httpx.Response:
                nonce = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/signin").text)
                assert nonce is not None
                return client.post("/ui/signin", data={"token": token, "csrf": nonce.group(1)})

            answer = attempt(good)
            assert answer.status_code == 303
            client.get("/ui/t/main")
            reads = [e for e in ledger.iter_search("resource:AUDITLOG action:READ")]
            assert any(e.details.get("path") == "/ui/t/main" for e in reads)
            assert [attempt(f"alt_guess{i}").status_code for i in range(3)] == [401, 401, 401]
            refused = attempt(good)
            assert refused.status_code == 429 and "too many failed" in refused.text
