"""The UI's HTTP behaviour without a browser: headers, cookies, redirects, exports and proof status."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

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
    app = create_app(settings, ledger)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield Live(f"http://127.0.0.1:{port}", ledger, secrets, ids)
    server.should_exit = True
    thread.join(10)
    ledger.close()


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
