"""Evidence bundles: selected events, their inclusion proofs and a signed checkpoint.

An auditor who holds the log's public key (vkey) checks a bundle with nothing
else: no database, no server, no trust in the operator. The bundle is a ZIP
archive (the layout is specified in ``docs/spec.md``, "Evidence bundles")::

    manifest.json      format, tenant, checkpoint size and root, the query, and per
                       event its id, position, leaf hash and inclusion proof
    checkpoint         the signed note (C2SP tlog-checkpoint) the proofs lead to
    vkey               the signer's public key, for information only
    events/SEQ.json    each event's canonical bytes, exactly as hashed

Verification recomputes each leaf hash from the bytes (RFC 9162 2.1.1), checks
the inclusion proof against the checkpoint's root (RFC 9162 2.1.3.2), and the
checkpoint's signature against a key the auditor supplies — never the bundle's.
"""

from __future__ import annotations

import base64
import binascii
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditledger import canonical, merkle, tree
from auditledger import checkpoint as ck
from auditledger.errors import NotFoundError, ValidationError, VerificationError
from auditledger.model import format_date, from_micros
from auditledger.query import Query
from auditledger.store import Cursor, Store

FORMAT = "auditledger-evidence/1"
DEFAULT_MAX_EVENTS = 100_000
_MAX_MEMBER_BYTES = 16 << 20  # one event is at most ~2 MiB; refuse anything far larger (zip bombs)
_MAX_MANIFEST_BYTES = 512 << 20
_PAGE = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def inclusion_answer(store: Store, tenant: str, id: str, checkpoint_size: int | None = None) -> dict[str, Any]:
    """The inclusion proof of event ``id`` as ``auditledger prove`` and the API give it (checked first).

    Without ``checkpoint_size`` the proof is to the latest checkpoint that holds
    the event, else to the current tree.
    """
    row = None if "\x00" in id else store.get(tenant, id)  # no id holds NUL; PostgreSQL cannot bind one
    if row is None:
        raise NotFoundError(f"no event {id!r} in tenant {tenant!r}")
    proofs = tree.Tree.current(store, tenant)
    if checkpoint_size is None:
        latest = tree.latest_checkpoint(store, tenant)
        checkpoint_size = latest.size if latest is not None and latest.size > row.seq else proofs.size
    stored = tree.get_checkpoint(store, tenant, checkpoint_size)
    path = proofs.inclusion(row.seq, checkpoint_size)
    # The signed root when that checkpoint exists (verified below all the same), else recomputed.
    root = stored.root if stored is not None else proofs.root_at(checkpoint_size)
    leaf = proofs.leaf(row.seq)
    merkle.verify_inclusion(leaf, row.seq, checkpoint_size, path, root)
    return {
        "id": id,
        "tenant": tenant,
        "seq": row.seq,
        "leaf_hash": _b64(leaf),
        "tree_size": checkpoint_size,
        "root": _b64(root),
        "inclusion_proof": [_b64(h) for h in path],
        "checkpoint": stored.note if stored is not None else None,
    }


def consistency_answer(store: Store, tenant: str, old_size: int, new_size: int | None = None) -> dict[str, Any]:
    """The consistency proof between two tree sizes (``new_size`` default: latest checkpoint, else current)."""
    proofs = tree.Tree.current(store, tenant)
    if new_size is None:
        latest = tree.latest_checkpoint(store, tenant)
        new_size = latest.size if latest is not None and latest.size >= old_size else proofs.size
    path = proofs.consistency(old_size, new_size)
    old_root, new_root = proofs.root_at(old_size), proofs.root_at(new_size)
    merkle.verify_consistency(old_size, new_size, old_root, new_root, path)
    stored = tree.get_checkpoint(store, tenant, new_size)
    return {
        "tenant": tenant,
        "from": old_size,
        "to": new_size,
        "old_root": _b64(old_root),
        "new_root": _b64(new_root),
        "consistency_proof": [_b64(h) for h in path],
        "checkpoint": stored.note if stored is not None else None,
    }


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What :func:`export_bundle` wrote."""

    path: Path
    tenant: str
    events: int
    checkpoint: tree.StoredCheckpoint
    limited: bool = False  # max_events was reached before the selection's end


def export_bundle(
    store: Store,
    query: Query,
    out: str | Path,
    signer: tree.Signer,
    *,
    tenant: str,
    query_text: str = "",
    max_events: int = DEFAULT_MAX_EVENTS,
    witness: tree.Witness | None = None,
) -> ExportSummary:
    """Write the events matching ``query`` (oldest first) with proofs to a new checkpoint."""
    if max_events < 1:
        raise ValidationError("max_events", f"must be at least 1, got {max_events}")
    cp = tree.make_checkpoint(store, tenant, signer, witness=witness)
    proofs = tree.Tree(store.query, tenant)
    entries: list[dict[str, Any]] = []
    bodies: list[tuple[str, bytes]] = []
    after: Cursor | None = None
    limited = False
    while True:
        rows = store.search(tenant, query, limit=_PAGE, after=after, order="asc")
        for row in rows:
            if row.seq >= cp.size:
                break  # appended after the checkpoint: a later bundle covers it
            if len(entries) >= max_events:
                limited = True
                break
            leaf = canonical.leaf_hash(row.body)
            name = f"events/{row.seq}.json"
            entries.append(
                {
                    "id": row.id,
                    "seq": row.seq,
                    "leaf_hash": _b64(leaf),
                    "file": name,
                    "inclusion_proof": [_b64(h) for h in proofs.inclusion(row.seq, cp.size)],
                }
            )
            bodies.append((name, row.body))
        else:
            if len(rows) == _PAGE:
                after = Cursor(rows[-1].date, rows[-1].tenant, rows[-1].seq)
                continue
        break
    manifest = {
        "format": FORMAT,
        "tenant": tenant,
        "origin": signer.origin(tenant),
        "query": query_text,
        "created_at": format_date(from_micros(time.time_ns() // 1000)),
        "checkpoint_size": cp.size,
        "checkpoint_root": _b64(cp.root),
        "events": entries,
    }
    path = Path(out)
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            z.writestr("checkpoint", cp.note)
            z.writestr("vkey", signer.vkey + "\n")
            for name, body in bodies:
                z.writestr(name, body)
    except OSError as exc:
        raise ValidationError("out", f"cannot write {path}: {exc.strerror}") from None
    return ExportSummary(path, tenant, len(entries), cp, limited)


@dataclass(frozen=True, slots=True)
class BundleReport:
    """A bundle that checked out: its checkpoint and the events proven in it."""

    tenant: str
    origin: str
    checkpoint_size: int
    root: bytes
    signer: str
    events: int
    first_seq: int | None
    last_seq: int | None
    first_date: str | None
    last_date: str | None
    query: str

    def lines(self) -> list[str]:
        out = [
            f"checkpoint: {self.origin}, tree size {self.checkpoint_size}, root {_b64(self.root)}",
            f"signature: valid, by trusted key {self.signer}",
        ]
        if self.query:
            out.append(f"selection: {self.query}")
        if self.events:
            out.append(
                f"events: {self.events} proven included (positions {self.first_seq}..{self.last_seq}, "
                f"{self.first_date} .. {self.last_date})"
            )
        else:
            out.append("events: none in this bundle")
        return out


def _read(z: zipfile.ZipFile, name: str, limit: int = _MAX_MEMBER_BYTES) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise VerificationError(f"bundle has no {name}") from None
    if info.file_size > limit:
        raise VerificationError(f"bundle member {name} is {info.file_size} bytes, more than {limit}")
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise VerificationError(f"bundle member {name} is larger than {limit} bytes")
    return data


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not base64") from None


def verify_bundle(path: str | Path, vkeys: Sequence[str]) -> BundleReport:
    """Check a bundle with the trusted ``vkeys`` alone; raise at the first thing that does not hold."""
    trusted = [ck.parse_vkey(k) for k in vkeys]
    if not trusted:
        raise ValidationError("key", "give at least one trusted public key (vkey)")
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise VerificationError(f"{path} is not a readable evidence bundle: {exc}") from None
    with z:
        try:
            manifest = orjson.loads(_read(z, "manifest.json", _MAX_MANIFEST_BYTES))
        except orjson.JSONDecodeError:
            raise VerificationError("manifest.json is not JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise VerificationError(f"not an evidence bundle of format {FORMAT}")
        note = _read(z, "checkpoint")
        cp = ck.verify_checkpoint(note, trusted)
        _, signatures = ck.parse_checkpoint(note)
        signer = next(f"{s.name}+{s.key_hash:08x}" for s in signatures if any(
            (k.name, k.key_hash) == (s.name, s.key_hash) for k in trusted))
        tenant = manifest.get("tenant")
        if not isinstance(tenant, str) or cp.origin.rsplit("/", 1)[-1] != tenant:
            raise VerificationError(f"the checkpoint's origin {cp.origin!r} is not the bundle's tenant {tenant!r}")
        if manifest.get("checkpoint_size") != cp.size:
            raise VerificationError(
                f"manifest says tree size {manifest.get('checkpoint_size')}, the signed checkpoint {cp.size}"
            )
        entries = manifest.get("events")
        if not isinstance(entries, list):
            raise VerificationError("manifest.json has no events list")
        dates: list[str] = []
        seqs: list[int] = []
        for i, entry in enumerate(entries):
            seq, date = _check_entry(z, i, entry, tenant, cp)
            seqs.append(seq)
            dates.append(date)
    query = manifest.get("query")
    return BundleReport(
        tenant, cp.origin, cp.size, cp.root, signer, len(entries),
        min(seqs, default=None), max(seqs, default=None), min(dates, default=None), max(dates, default=None),
        query if isinstance(query, str) else "",
    )


def _check_entry(z: zipfile.ZipFile, i: int, entry: object, tenant: str, cp: ck.Checkpoint) -> tuple[int, str]:
    if not isinstance(entry, dict):
        raise VerificationError(f"manifest event {i} is not an object")
    seq, id, name = entry.get("seq"), entry.get("id"), entry.get("file")
    if not isinstance(seq, int) or not isinstance(id, str) or not isinstance(name, str):
        raise VerificationError(f"manifest event {i} lacks seq, id or file")
    where = f"event {id} at position {seq}"
    body = _read(z, name)
    leaf = canonical.leaf_hash(body)
    if _unb64(entry.get("leaf_hash"), f"{where}: leaf_hash") != leaf:
        raise VerificationError(f"{where}: its bytes ({name}) do not hash to the recorded leaf hash", seq)
    event = canonical.decode(body, leaf)
    if (event.seq, event.id, event.tenant) != (seq, id, tenant):
        raise VerificationError(
            f"{where}: the hashed event says id {event.id}, position {event.seq}, tenant {event.tenant!r}", seq
        )
    raw_proof = entry.get("inclusion_proof")
    if not isinstance(raw_proof, list):
        raise VerificationError(f"{where}: no inclusion proof", seq)
    proof = [_unb64(h, f"{where}: inclusion proof") for h in raw_proof]
    try:
        merkle.verify_inclusion(leaf, seq, cp.size, proof, cp.root)
    except VerificationError as exc:
        raise VerificationError(f"{where} is not proven in the checkpoint: {exc}", seq) from None
    return seq, format_date(event.date)
