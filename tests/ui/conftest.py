"""A real ``auditledger serve`` on 127.0.0.1 with demo data, and Debian's Chromium driven by Playwright.

The server runs as a subprocess on a random port over a SQLite file that holds
demo events in tenant ``main``, a few events in tenant ``beta``, hostile
events (script tags, ``onerror`` attributes, ``javascript:`` URLs) and one
flow update whose before/after differ in a single known line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.server.auth import Tokens
from tests.conftest import service_missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
FLOW_URL = "https://kestra.example.com/ui/flows/edit/{namespace}/{flowId}"
XSS_SCRIPT = "<script>window.__xss = 1; alert('xss')</script>"
XSS_IMG = '"><img src=x onerror="window.__xss=2;alert(2)">'
XSS_URL = "javascript:alert(document.domain)"
BEFORE = "id: hello\nnamespace: company.team\ndescription: the old words\ntasks:\n  - id: log\n"
AFTER = "id: hello\nnamespace: company.team\ndescription: the new words\ntasks:\n  - id: log\n"


@dataclass
class Server:
    url: str
    tokens: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _populate(db: str) -> tuple[dict[str, str], dict[str, str]]:
    ids: dict[str, str] = {}
    with AuditLog.open(db) as log:
        end = datetime.now(UTC) - timedelta(minutes=5)
        events = list(demo_events(400, seed=3))
        log.backfill(events, [end - timedelta(minutes=30 * (len(events) - i)) for i in range(len(events))])
        log.backfill(
            [{"resource_type": "FLOW", "action": "CREATE", "actor": {"type": "USER", "id": "zed@beta.io"},
              "details": {"namespace": "beta.secret", "flowId": "beta-only"}}] * 5,
            [end - timedelta(hours=h) for h in range(5, 0, -1)],
            tenant="beta",
        )
        hostile: list[dict[str, Any]] = [
            {
                "resource_type": "FLOW", "action": "UPDATE",
                "actor": {"type": "USER", "id": XSS_IMG, "name": XSS_SCRIPT},
                "details": {"namespace": XSS_SCRIPT, "flowId": XSS_IMG, "link": XSS_URL, "xss": "marker"},
                "before": f"description: {XSS_SCRIPT}\n", "after": f"description: {XSS_IMG}\nurl: {XSS_URL}\n",
            },
            {
                "resource_type": "SECRET", "action": "UPDATE",
                "actor": {"type": "SERVICE_ACCOUNT", "id": "sa-x", "name": XSS_IMG},
                "details": {"id": XSS_URL, "xss": "marker"},
                "before": {"k": XSS_SCRIPT}, "after": {"k": XSS_IMG, XSS_SCRIPT: XSS_URL},
            },
        ]
        for i, raw in enumerate(hostile):
            ids[f"xss{i}"] = log.record_many([raw])[0].id
        ids["diff"] = log.record(
            "FLOW", "UPDATE", {"type": "USER", "id": "anna@acme.io", "name": "Anna Schmidt"},
            details={"namespace": "company.team", "flowId": "hello", "revision": "2"}, before=BEFORE, after=AFTER,
        ).id
        tokens = Tokens(log.store)
        secrets = {
            "admin": tokens.create("admin", "*", name="ui admin")[0],
            "auditor": tokens.create("auditor", "main", name="ui auditor")[0],
            "ingest": tokens.create("ingest", "main", name="ui ingest")[0],
        }
    return secrets, ids


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui")
    db = f"sqlite:///{root / 'ui.db'}"
    secrets, ids = _populate(db)
    port = _free_port()
    cli = shutil.which("auditledger", path=str(Path(sys.executable).parent)) or "auditledger"
    env = {
        **os.environ,
        "AUDITLEDGER_UI_RESOURCE_URLS": json.dumps({"FLOW": FLOW_URL}),
        "AUDITLEDGER_CHECKPOINT_INTERVAL": "0",
        "AUDITLEDGER_LOG_LEVEL": "warning",
    }
    log_path = root / "serve.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [cli, "serve", "--db", db, "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"auditledger serve did not start: {log_path.read_text('utf-8', 'replace')[-2000:]}")
        time.sleep(0.1)
    try:
        yield Server(url, secrets, ids)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install 'auditledger[ui-tests]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A fresh browser context (no cookies) and its page, with every dialog recorded."""

    page: Any
    dialogs: list[str]
    server: Server
    accept_dialogs: bool = False  # confirmations the test means to answer yes

    def goto(self, path: str) -> Any:
        return self.page.goto(self.server.url + path)

    def sign_in(self, role: str) -> None:
        self.goto("/ui/signin")
        self.page.fill("#token", self.server.tokens[role])
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Tab(page, [], server)

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)
        if tab.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    yield tab
    context.close()
