"""The proof routes: answers that verify with the pure functions and the public key alone."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from auditledger import AuditLog, merkle, tree
from auditledger import checkpoint as ck
from auditledger.server import create_app
from auditledger.settings import Settings
from tests.proofs.conftest import fill

N = 300


@contextmanager
def serve(app: FastAPI) -> Iterator[httpx.Client]:
    """``app`` under a real uvicorn on 127.0.0.1 (lifespan included), and a client for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(h) for h in items]


@pytest.fixture
def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.delenv(ck.SIGNING_KEY_ENV, raising=False)
    key = ck.generate_key()
    ck.save_private_key(key, tmp_path / "k.pem")
    return tmp_path / "k.pem", tree.Signer(key).vkey


@pytest.fixture
def client(tmp_path: Path, keyed: tuple[Path, str]) -> Iterator[httpx.Client]:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    with AuditLog.open(url) as log:
        fill(log, N)
    settings = Settings(
        db=url, insecure_dev=True, signing_key_file=str(keyed[0]), checkpoint_interval=0.05,
        witness_dir=str(tmp_path / "witness"),
    )
    with serve(create_app(settings)) as c:
        c.headers["x-db"] = url  # where event_ids reads the ids from
        yield c


def event_ids(c: httpx.Client) -> list[str]:
    with AuditLog.open(c.headers["x-db"]) as log:
        return [e.id for e in log.iter_search(order="asc")]


def test_checkpoint_inclusion_and_consistency_verify_with_pure_functions(
    client: httpx.Client, keyed: tuple[Path, str]
) -> None:
    """Checkpoint, inclusion proofs and a consistency proof from the API check out offline."""
    answer = client.get("/api/v1/main/auditlogs/checkpoint").json()
    cp = ck.verify_checkpoint(answer["checkpoint"], [keyed[1]])
    assert cp.size == answer["size"] == N and cp.origin == "auditledger/main"
    ids = event_ids(client)
    for seq in (0, 1, 137, 255, 256, N - 1):
        proof = client.get(f"/api/v1/main/auditlogs/{ids[seq]}/proof", params={"checkpoint_size": N}).json()
        assert proof["seq"] == seq and proof["tree_size"] == N
        merkle.verify_inclusion(base64.b64decode(proof["leaf_hash"]), seq, N, b64(proof["inclusion_proof"]), cp.root)
    event = {"resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "a"}}
    assert client.post("/api/v1/main/auditlogs", json=[event]).status_code == 201
    new = ck.verify_checkpoint(client.get("/api/v1/main/auditlogs/checkpoint").json()["checkpoint"], [keyed[1]])
    assert new.size == N + 1
    answer = client.get("/api/v1/main/auditlogs/consistency", params={"from": N, "to": N + 1}).json()
    merkle.verify_consistency(N, N + 1, cp.root, new.root, b64(answer["consistency_proof"]))


def test_a_wrong_leaf_does_not_verify(client: httpx.Client) -> None:
    """The proof is specific to its event: another event's leaf hash fails against the same path."""
    ids = event_ids(client)
    root = base64.b64decode(client.get("/api/v1/main/auditlogs/checkpoint").json()["root"])
    proof = client.get(f"/api/v1/main/auditlogs/{ids[10]}/proof").json()
    other = client.get(f"/api/v1/main/auditlogs/{ids[11]}/proof").json()
    with pytest.raises(merkle.VerificationError):
        merkle.verify_inclusion(base64.b64decode(other["leaf_hash"]), 10, N, b64(proof["inclusion_proof"]), root)


def test_bad_requests_get_clear_errors(client: httpx.Client) -> None:
    """Unknown ids are 404; sizes outside the tree are 422 naming the parameter."""
    assert client.get("/api/v1/main/auditlogs/nope/proof").status_code == 404
    ids = event_ids(client)
    r = client.get(f"/api/v1/main/auditlogs/{ids[5]}/proof", params={"checkpoint_size": N + 50})
    assert r.status_code == 422 and r.json()["field"] == "checkpoint_size"
    r = client.get(f"/api/v1/main/auditlogs/{ids[5]}/proof", params={"checkpoint_size": 3})
    assert r.status_code == 422
    r = client.get("/api/v1/main/auditlogs/consistency", params={"from": 10, "to": 5})
    assert r.status_code == 422 and r.json()["field"] == "from"
    assert client.get("/api/v1/main/auditlogs/consistency").status_code == 422


def test_periodic_checkpoints_are_made_and_witnessed(
    client: httpx.Client, tmp_path: Path, keyed: tuple[Path, str]
) -> None:
    """The server checkpoints tenants with new events on its own and writes them to the witness directory."""
    deadline = time.monotonic() + 5
    latest = tmp_path / "witness" / "main" / "latest.checkpoint"
    while not latest.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    cp = ck.verify_checkpoint(latest.read_text(), [keyed[1]])
    assert cp.size == N
    assert (tmp_path / "witness" / "main" / f"{N:016d}.checkpoint").read_text() == latest.read_text()


def test_proof_routes_need_the_auditor_role(tmp_path: Path, keyed: tuple[Path, str]) -> None:
    """Without credentials the proof routes answer 401; an ingest token gets 403; an auditor gets through."""
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    settings = Settings(db=url, signing_key_file=str(keyed[0]), checkpoint_interval=0)
    app = create_app(settings)
    with serve(app) as c:
        assert c.get("/api/v1/main/auditlogs/checkpoint").status_code == 401
        secret, _ = app.state.tokens.create("ingest", "main")
        r = c.get("/api/v1/main/auditlogs/checkpoint", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 403
        secret, _ = app.state.tokens.create("auditor", "quiet")
        r = c.get("/api/v1/quiet/auditlogs/checkpoint", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 404 and "no events" in r.json()["message"]  # past auth: the tenant is empty
