"""Evidence bundles: exported from the ledger, checked offline with only the public key."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import orjson
import pytest

from auditledger import checkpoint as ck
from auditledger import evidence, tree
from auditledger.errors import VerificationError
from tests.proofs.conftest import SIZE, Signed, run


def export(s: Signed, query: str = "action:UPDATE") -> Path:
    out = s.dir / "bundle.zip"
    code, stdout, err = run("evidence", "export", "--query", query, "--out", str(out), "--db", s.url)
    assert code == 0, err
    assert "verify it with: auditledger evidence verify" in stdout
    return out


def check(s: Signed, bundle: Path) -> tuple[int, str, str]:
    return run("evidence", "verify", str(bundle), "--key", s.vkey)


def rewrite_member(bundle: Path, name: str, change: bytes) -> None:
    with zipfile.ZipFile(bundle) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[name] = change
    with zipfile.ZipFile(bundle, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_export_then_verify_offline(signed: Signed) -> None:
    """A bundle of the selected events verifies with the vkey alone and says what it proved."""
    bundle = export(signed)
    signed.db.unlink()  # no database from here on
    code, out, err = check(signed, bundle)
    assert code == 0, err
    assert f"tree size {SIZE}" in out and "signature: valid" in out and "OK:" in out
    files = members(bundle)
    manifest = json.loads(files["manifest.json"])
    assert manifest["events"] and manifest["query"] == "action:UPDATE"
    for entry in manifest["events"]:
        assert orjson.loads(files[entry["file"]])["action"] == "UPDATE"


def test_bundle_holds_the_canonical_bytes_and_the_vkey(signed: Signed) -> None:
    """Event files are the exact hashed bytes; the vkey file names the signer."""
    bundle = export(signed, "")
    files = members(bundle)
    assert files["vkey"].decode().strip() == signed.vkey
    manifest = json.loads(files["manifest.json"])
    assert len(manifest["events"]) == SIZE and manifest["checkpoint_size"] == SIZE


def test_edited_event_in_bundle_is_named(signed: Signed) -> None:
    """An event edited inside the bundle fails, naming its id and position."""
    bundle = export(signed)
    entry = json.loads(members(bundle)["manifest.json"])["events"][3]
    obj = orjson.loads(members(bundle)[entry["file"]])
    obj["actor"]["id"] = "someone-else"
    rewrite_member(bundle, entry["file"], orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))
    code, _, err = check(signed, bundle)
    assert code == 1 and f"event {entry['id']} at position {entry['seq']}" in err, err


def test_edited_event_with_matching_leaf_hash_fails_its_inclusion_proof(signed: Signed) -> None:
    """Rewriting the event and its recorded leaf hash together still fails: the proof leads elsewhere."""
    bundle = export(signed)
    manifest = json.loads(members(bundle)["manifest.json"])
    entry = manifest["events"][0]
    obj = orjson.loads(members(bundle)[entry["file"]])
    obj["outcome"] = "failure"
    body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    entry["leaf_hash"] = base64.b64encode(hashlib.sha256(b"\x00" + body).digest()).decode()
    rewrite_member(bundle, entry["file"], body)
    rewrite_member(bundle, "manifest.json", orjson.dumps(manifest))
    code, _, err = check(signed, bundle)
    assert code == 1 and "is not proven in the checkpoint" in err and f"seq {entry['seq']}:" in err, err


def test_bundle_checkpoint_edited_or_foreign(signed: Signed) -> None:
    """An edited checkpoint has a bad signature; one signed by another key is refused."""
    bundle = export(signed)
    note = members(bundle)["checkpoint"].decode()
    rewrite_member(bundle, "checkpoint", note.replace(f"\n{SIZE}\n", f"\n{SIZE + 1}\n").encode())
    code, _, err = check(signed, bundle)
    assert code == 1 and "bad signature" in err
    cp, _ = ck.parse_checkpoint(note)
    rewrite_member(bundle, "checkpoint", tree.Signer(ck.generate_key()).sign("main", cp.size, cp.root).encode())
    code, _, err = check(signed, bundle)
    assert code == 1 and "unknown keys" in err


def test_not_a_bundle_and_missing_key_are_clear_errors(signed: Signed) -> None:
    """Garbage input and a missing --key give one-line errors, never a traceback."""
    junk = signed.dir / "junk.zip"
    junk.write_bytes(b"not a zip")
    code, _, err = check(signed, junk)
    assert code == 1 and "not a readable evidence bundle" in err and "Traceback" not in err
    code, _, err = run("evidence", "verify", str(junk))
    assert code == 1 and "--key" in err and "Traceback" not in err


def test_verify_bundle_api_reports(signed: Signed) -> None:
    """verify_bundle returns the checkpoint, the signer and the positions it proved."""
    bundle = export(signed, "")
    report = evidence.verify_bundle(bundle, [signed.vkey])
    assert (report.events, report.first_seq, report.last_seq) == (SIZE, 0, SIZE - 1)
    assert report.signer == "+".join(signed.vkey.split("+")[:2])
    with pytest.raises(VerificationError):
        evidence.verify_bundle(bundle, [tree.Signer(ck.generate_key()).vkey])


def test_max_events_caps_the_bundle_and_says_so(signed: Signed) -> None:
    """--max-events stops the export at that many events, says it stopped, and the bundle still verifies."""
    out = signed.dir / "small.zip"
    code, stdout, err = run("evidence", "export", "--out", str(out), "--max-events", "7", "--db", signed.url)
    assert code == 0, err
    assert "7 events" in stdout and "stopped at --max-events 7" in stdout
    assert evidence.verify_bundle(out, [signed.vkey]).events == 7
