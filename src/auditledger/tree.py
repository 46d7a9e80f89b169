"""The ledger's Merkle tree as stored: appends in O(log n), proofs in O(log n) reads.

Per tenant the store keeps (migration 0002)

- ``tree_heads``: the tree size and its frontier, the right-edge perfect subtree
  hashes (RFC 9162 compact range). That is all an append or the current root needs.
- ``tree_nodes``: the perfect subtree hashes at the levels that are multiples of
  ``TILE_HEIGHT`` (4, 8, 12 ...): the tile roots of a transparency-log tile
  layout (https://c2sp.org/tlog-tiles) with tiles of 16: about one row per 15 leaves.
- ``leaves`` (the ledger's own table, kept through purges) is level 0.

A perfect subtree of level ``k`` is then the root of at most ``2 ** (k % 4)``
stored hashes of level ``4 * (k // 4)``, read with one range query; a proof asks
for at most one subtree per level, so it costs O(log n) reads of at most 8 rows
and at most 7 hashes each. (Tiles of 256, as in tlog-tiles, write fewer rows but
make a proof hash ~500 nodes in Python; 16 keeps a million-leaf proof near 50.)

Everything goes through the stores' portable ``execute``/``query`` (``?``
placeholders), so the same code runs on SQLite and PostgreSQL. Checkpoints —
signed notes over (size, root) — are kept in ``checkpoints`` and may be copied
to a witness directory or shipped as they are made.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256 as _sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditledger import checkpoint as ck
from auditledger import merkle
from auditledger.errors import ConfigError, StoreError, ValidationError, VerificationError
from auditledger.store import Row, Store, WriteTxn

if TYPE_CHECKING:
    from auditledger.ledger import AuditLog

TILE_HEIGHT = 4
DEFAULT_LOG_NAME = "auditledger"
_CATCH_UP_CHUNK = 50_000
_BLOCK_LEVEL = 12  # verify_against recomputes the tree in aligned blocks of 4,096 leaves
_BLOCK = 1 << _BLOCK_LEVEL

QueryFn = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


# --- appending (inside the ledger's write transaction) ---------------------------


def _read_head(query: QueryFn, tenant: str) -> tuple[int, list[bytes]]:
    rows = query("SELECT size, frontier FROM tree_heads WHERE tenant = ?", [tenant])
    if not rows:
        return 0, []
    size, blob = int(rows[0][0]), bytes(rows[0][1])
    frontier = [blob[i : i + merkle.HASH_SIZE] for i in range(0, len(blob), merkle.HASH_SIZE)]
    if len(frontier) != size.bit_count():
        raise StoreError(f"tenant {tenant!r}: stored tree frontier does not fit tree size {size}")
    return size, frontier


_NODES_PER_INSERT = 250  # 1,000 parameters: under every supported SQLite's and PostgreSQL's limit


def _store_nodes(txn: WriteTxn, tenant: str, nodes: Iterable[merkle.Node]) -> None:
    # One multi-row INSERT per chunk: a statement per node cost more than the hashing.
    kept = [node for node in nodes if node.level % TILE_HEIGHT == 0]
    for i in range(0, len(kept), _NODES_PER_INSERT):
        chunk = kept[i : i + _NODES_PER_INSERT]
        txn.execute(
            "INSERT INTO tree_nodes (tenant, level, idx, hash) VALUES " + ",".join(["(?, ?, ?, ?)"] * len(chunk)),
            [value for node in chunk for value in (tenant, node.level, node.index, node.hash)],
        )


def extend(txn: WriteTxn, tenant: str, old_size: int, leaf_hashes: Sequence[bytes]) -> int:
    """Append ``leaf_hashes`` (positions ``old_size`` ...) to the tenant's stored tree.

    A tree that lags behind the ledger (a database from before the tree existed)
    is first caught up from the ``leaves`` table. Returns the new size.
    """
    size, frontier = _read_head(txn.query, tenant)
    if size > old_size:
        raise StoreError(f"tenant {tenant!r}: the stored tree has {size} leaves but the ledger only {old_size}")
    while size < old_size:
        hi = min(old_size, size + _CATCH_UP_CHUNK)
        missing = [
            bytes(h)
            for (h,) in txn.query(
                "SELECT hash FROM leaves WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq", [tenant, size, hi]
            )
        ]
        if len(missing) != hi - size:
            raise StoreError(f"tenant {tenant!r}: ledger positions missing in [{size}, {hi})")
        frontier, nodes = merkle.append_leaves(size, frontier, missing)
        _store_nodes(txn, tenant, nodes)
        size = hi
    frontier, nodes = merkle.append_leaves(size, frontier, leaf_hashes)
    _store_nodes(txn, tenant, nodes)
    size += len(leaf_hashes)
    txn.execute(
        "INSERT INTO tree_heads (tenant, size, frontier) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant) DO UPDATE SET size = excluded.size, frontier = excluded.frontier",
        [tenant, size, b"".join(frontier)],
    )
    return size


def extend_rows(txn: WriteTxn, rows: Sequence[Row]) -> None:
    """``extend`` once per tenant for rows just inserted (each tenant's rows in ``seq`` order)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.tenant, []).append(row)
    for tenant, group in groups.items():
        extend(txn, tenant, group[0].seq, [r.leaf_hash for r in group])


def catch_up(store: Store, tenant: str) -> int:
    """Bring the tenant's tree up to the ledger's size (a no-op when current); returns the size."""
    size, _ = _read_head(store.query, tenant)
    heads = {h.tenant: h.size for h in store.heads()}
    if size == heads.get(tenant, 0):
        return size
    with store.write() as txn:
        return extend(txn, tenant, txn.head(tenant).size, [])


# --- reading and proving ---------------------------------------------------------


class Tree:
    """One tenant's stored tree, read through ``query`` (a store's or a transaction's)."""

    def __init__(self, query: QueryFn, tenant: str) -> None:
        self._query = query
        self.tenant = tenant
        self.size, self.frontier = _read_head(query, tenant)
        self._cache: dict[tuple[int, int], bytes] = {}
        self._tiles: dict[tuple[int, int], list[bytes]] = {}

    @classmethod
    def current(cls, store: Store, tenant: str) -> Tree:
        """The tenant's tree, caught up with its ledger first."""
        catch_up(store, tenant)
        return cls(store.query, tenant)

    def root(self) -> bytes:
        return merkle.root_from_frontier(self.frontier)

    def _hashes(self, level: int, lo: int, hi: int) -> list[bytes]:
        if level == 0:
            sql = "SELECT hash FROM leaves WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq"
            params: list[Any] = [self.tenant, lo, hi]
        else:
            sql = "SELECT hash FROM tree_nodes WHERE tenant = ? AND level = ? AND idx >= ? AND idx < ? ORDER BY idx"
            params = [self.tenant, level, lo, hi]
        found = [bytes(h) for (h,) in self._query(sql, params)]
        if len(found) != hi - lo:
            raise StoreError(f"tenant {self.tenant!r}: tree storage lacks hashes of level {level} in [{lo}, {hi})")
        return found

    def _tile(self, base: int, tile: int) -> list[bytes]:
        """The stored hashes of level ``base`` in tile ``tile`` (up to 16, fewer at the right edge), cached.

        A proof's siblings at levels ``base`` to ``base + 3`` all lie in one such
        tile, so reading it whole makes one query serve four levels.
        """
        key = (base, tile)
        cached = self._tiles.get(key)
        if cached is not None:
            return cached
        lo = tile << TILE_HEIGHT
        if base == 0:
            sql = "SELECT seq, hash FROM leaves WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq"
            params: list[Any] = [self.tenant, lo, lo + (1 << TILE_HEIGHT)]
        else:
            sql = (
                "SELECT idx, hash FROM tree_nodes WHERE tenant = ? AND level = ? AND idx >= ? AND idx < ? ORDER BY idx"
            )
            params = [self.tenant, base, lo, lo + (1 << TILE_HEIGHT)]
        found: list[bytes] = []
        for idx, h in self._query(sql, params):
            if idx != lo + len(found):
                break  # a gap: only the contiguous prefix is usable
            found.append(bytes(h))
        self._tiles[key] = found
        return found

    def perfect(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``."""
        key = (level, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        base = level - level % TILE_HEIGHT
        first = index << (level - base)  # its first node at level ``base``
        tile = first >> TILE_HEIGHT
        offset = first - (tile << TILE_HEIGHT)
        hashes = self._tile(base, tile)[offset : offset + (1 << (level - base))]
        if len(hashes) != 1 << (level - base):
            raise StoreError(
                f"tenant {self.tenant!r}: tree storage lacks hashes of level {base} "
                f"in [{first}, {first + (1 << (level - base))})"
            )
        h = _perfect_levels(hashes, level - base)[-1][0]
        self._cache[key] = h
        return h

    def subtree(self, start: int, end: int) -> bytes:
        """``merkle.SubtreeHash``: a perfect range, or a right-edge one composed of perfect pieces."""
        pieces = merkle.range_decomposition(start, end)
        if len(pieces) == 1:
            return self.perfect(*pieces[0])
        return merkle.root_from_frontier([self.perfect(level, index) for level, index in pieces])

    def _check_size(self, size: int, field: str) -> None:
        if not 0 <= size <= self.size:
            raise ValidationError(field, f"must be between 0 and the tree size {self.size}, got {size}")

    def root_at(self, size: int) -> bytes:
        """The root of the tree's first ``size`` leaves."""
        self._check_size(size, "size")
        if size == self.size:
            return self.root()
        return merkle.EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def leaf(self, index: int) -> bytes:
        self._check_size(index + 1, "index")
        return self._hashes(0, index, index + 1)[0]

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        self._check_size(size, "checkpoint_size")
        if not 0 <= index < size:
            raise ValidationError("checkpoint_size", f"position {index} is not inside a tree of {size} leaves")
        return merkle.inclusion_proof(index, size, self.subtree)

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """Consistency proof from the tree of ``old_size`` leaves to that of ``new_size``."""
        self._check_size(new_size, "to")
        if not 0 <= old_size <= new_size:
            raise ValidationError("from", f"must be between 0 and {new_size}, got {old_size}")
        return merkle.consistency_proof(old_size, new_size, self.subtree)


# --- checkpoints -------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """The log's signing key and its key name; a tenant's origin is ``name/tenant``."""

    key: Ed25519PrivateKey
    name: str = DEFAULT_LOG_NAME

    def origin(self, tenant: str) -> str:
        return f"{self.name}/{tenant}"

    @property
    def vkey(self) -> str:
        return ck.vkey(self.name, self.key.public_key())

    def sign(self, tenant: str, size: int, root: bytes) -> str:
        return ck.sign_checkpoint(ck.Checkpoint(self.origin(tenant), size, root), self.key, self.name)


def load_signer(key_file: str | Path | None = None, name: str = DEFAULT_LOG_NAME) -> Signer:
    """The signing key from ``key_file``, else from ``AUDITLEDGER_SIGNING_KEY``."""
    if key_file:
        return Signer(ck.load_private_key(key_file), name)
    if os.environ.get(ck.SIGNING_KEY_ENV):
        return Signer(ck.load_private_key_from_env(), name)
    raise ConfigError(
        "no signing key: set AUDITLEDGER_SIGNING_KEY_FILE (create one with `auditledger keys create --out PATH`) "
        f"or {ck.SIGNING_KEY_ENV}"
    )


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as kept in the store: the signed note and what it commits to."""

    tenant: str
    size: int
    root: bytes
    note: str
    created_at: int  # microseconds since the epoch


_CP_COLUMNS = "tenant, size, root, note, created_at"


def _checkpoint(row: tuple[Any, ...]) -> StoredCheckpoint:
    return StoredCheckpoint(str(row[0]), int(row[1]), bytes(row[2]), str(row[3]), int(row[4]))


def latest_checkpoint(store: Store, tenant: str) -> StoredCheckpoint | None:
    rows = store.query(f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE tenant = ? ORDER BY size DESC LIMIT 1", [tenant])
    return _checkpoint(rows[0]) if rows else None


def get_checkpoint(store: Store, tenant: str, size: int) -> StoredCheckpoint | None:
    rows = store.query(f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE tenant = ? AND size = ?", [tenant, size])
    return _checkpoint(rows[0]) if rows else None


Witness = Callable[[StoredCheckpoint], None]


def make_checkpoint(store: Store, tenant: str, signer: Signer, *, witness: Witness | None = None) -> StoredCheckpoint:
    """Sign the tenant's current tree head, store it, then hand it to ``witness``.

    When the latest checkpoint already has the current size it is returned as
    it is: a new one is only made when new events exist.
    """
    latest = latest_checkpoint(store, tenant)
    if latest is not None and latest.size == {h.tenant: h.size for h in store.heads()}.get(tenant, 0):
        return latest  # nothing new: answer without taking the write lock
    with store.write() as txn:
        size = extend(txn, tenant, txn.head(tenant).size, [])
        rows = txn.query(f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE tenant = ? AND size = ?", [tenant, size])
        if rows:
            return _checkpoint(rows[0])
        _, frontier = _read_head(txn.query, tenant)
        root = merkle.root_from_frontier(frontier)
        made = StoredCheckpoint(tenant, size, root, signer.sign(tenant, size, root), time.time_ns() // 1000)
        txn.execute(
            f"INSERT INTO checkpoints ({_CP_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            [tenant, size, root, made.note, made.created_at],
        )
    if witness is not None:
        witness(made)  # after the commit: a witness never sees a checkpoint that was rolled back
    return made


def checkpoint_due(store: Store, signer: Signer, *, witness: Witness | None = None) -> list[StoredCheckpoint]:
    """A new checkpoint for every tenant with events since its latest one (the server's periodic task)."""
    made = []
    for head in store.heads():
        latest = latest_checkpoint(store, head.tenant)
        if head.size > 0 and (latest is None or latest.size < head.size):
            made.append(make_checkpoint(store, head.tenant, signer, witness=witness))
    return made


# --- witnessing --------------------------------------------------------------------


def directory_witness(directory: str | Path) -> Witness:
    """Write each checkpoint to ``directory/TENANT/SIZE.checkpoint`` and ``directory/TENANT/latest.checkpoint``."""
    root = Path(directory).expanduser()

    def write(cp: StoredCheckpoint) -> None:
        folder = root / cp.tenant
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name in (f"{cp.size:016d}.checkpoint", "latest.checkpoint"):
                # Write then rename: a reader never sees half a checkpoint.
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(cp.note)
                os.replace(tmp, folder / name)
        except OSError as exc:
            raise ConfigError(f"cannot write checkpoint to witness directory {root}: {exc}") from exc

    return write


def shipping_witness(spec_file: str | Path | None) -> Witness | None:
    """Each checkpoint stored by the object-storing exporters of the shipper spec in ``spec_file``."""
    if not spec_file:
        return None
    try:
        spec = Path(spec_file).expanduser().read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read witness shipper spec {spec_file}: {exc}") from None
    from auditledger.ship import ship_checkpoint  # imported lazily: shipping is optional here

    def send(cp: StoredCheckpoint) -> None:
        ship_checkpoint(spec, f"checkpoints/{cp.tenant}/{cp.size:016d}.checkpoint", cp.note, tenant=cp.tenant)

    return send


def witnesses(*found: Witness | None) -> Witness | None:
    """One witness calling each of ``found`` that is not None."""
    active = [w for w in found if w is not None]
    if not active:
        return None

    def all_of(cp: StoredCheckpoint) -> None:
        for w in active:
            w(cp)

    return all_of


# --- proving that the ledger extends a checkpoint -----------------------------------


@dataclass(frozen=True, slots=True)
class AgainstReport:
    """The ledger of ``tenant`` (now ``size`` leaves, root ``root``) extends the checkpoint."""

    tenant: str
    checkpoint_size: int
    size: int
    root: bytes
    consistency_proof: list[bytes]


def verify_against(
    log: AuditLog, checkpoint_text: str | bytes, vkeys: Sequence[str], *, tenant: str | None = None
) -> AgainstReport:
    """Prove that the stored ledger extends a checkpoint saved earlier; raise at the first problem.

    The tree is recomputed from the leaf hashes (the stored tree nodes are not
    trusted), so a truncated tail, a rewritten entry (even with a matching
    leaf hash) or a reordering is found. Combine with ``AuditLog.verify``,
    which checks that each event's bytes match its leaf hash.
    """
    cp = ck.verify_checkpoint(checkpoint_text, vkeys)
    named = cp.origin.rsplit("/", 1)[-1]
    if tenant is not None and tenant != named:
        raise VerificationError(f"the checkpoint is for tenant {named!r} (origin {cp.origin!r}), not {tenant!r}")
    tenant = named
    store = log.store
    stored = {h.tenant: h.size for h in store.heads()}.get(tenant, 0)
    top: list[bytes] = []  # frontier over the full blocks, each block's root taken as one leaf
    tail: list[bytes] = []  # frontier of the last, partial block
    size = 0
    old_root: bytes | None = merkle.EMPTY_ROOT if cp.size == 0 else None
    while size < stored:
        hi = min(stored, size + _BLOCK)
        rows = store.query(
            "SELECT seq, hash FROM leaves WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq", [tenant, size, hi]
        )
        hashes = _contiguous(rows, size, hi, tenant)
        if size < cp.size < hi:
            old_root = merkle.root_from_frontier(top + merkle.append_leaves(0, [], hashes[: cp.size - size])[0])
        if hi - size == _BLOCK:
            levels = _perfect_levels(hashes, _BLOCK_LEVEL)
            base = size >> TILE_HEIGHT
            tiles = [merkle.Node(TILE_HEIGHT, base + i, h) for i, h in enumerate(levels[TILE_HEIGHT])]
            _compare_tiles(store, tenant, tiles)
            top, _ = merkle.append_leaves(size >> _BLOCK_LEVEL, top, [levels[-1][0]])
        else:
            tail, nodes = merkle.append_leaves(0, [], hashes)
            _compare_tiles(store, tenant, [merkle.Node(n.level, n.index + (size >> n.level), n.hash) for n in nodes])
        size = hi
        if size == cp.size:
            old_root = merkle.root_from_frontier(top + tail)
    frontier = top + tail
    if old_root is None:
        raise VerificationError(
            f"tenant {tenant!r}: the ledger has {size} entries but the checkpoint commits to {cp.size}: "
            f"truncated at position {size}",
            size,
        )
    if old_root != cp.root:
        raise VerificationError(
            f"tenant {tenant!r}: the first {cp.size} entries no longer hash to the checkpoint's root "
            f"(an entry in positions [0, {cp.size}) was rewritten or moved; no stored subtree pinpoints which)",
        )
    new_root = merkle.root_from_frontier(frontier)
    # The stored tree is what proofs are served from: it must agree with the recomputation.
    tree = Tree.current(store, tenant)
    if tree.size < size or tree.root_at(size) != new_root:
        raise VerificationError(f"tenant {tenant!r}: the stored Merkle tree disagrees with the ledger's leaves", size)
    proof = tree.consistency(cp.size, size)
    merkle.verify_consistency(cp.size, size, cp.root, new_root, proof)
    return AgainstReport(tenant, cp.size, size, new_root, proof)


def _perfect_levels(hashes: list[bytes], height: int) -> list[list[bytes]]:
    """Every level of the perfect tree over ``2**height`` leaf hashes (RFC 9162 node hashes, level by level).

    The same hashes as ``merkle.append_leaves``, computed a level at a time:
    several times faster in Python for the bulk recomputation of ``verify_against``.
    """
    levels = [hashes]
    for _ in range(height):
        pairs = iter(levels[-1])  # zip of one iterator with itself: (h0, h1), (h2, h3) ...
        levels.append([_sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=True)])
    return levels


def _contiguous(rows: Sequence[tuple[Any, ...]], lo: int, hi: int, tenant: str) -> list[bytes]:
    """The leaf hashes of positions ``[lo, hi)`` from ``(seq, hash)`` rows in seq order; raise at the first gap.

    seq is the key, so the rows are distinct: the right count, first and last seq mean no gap.
    """
    if len(rows) == hi - lo and (not rows or (rows[0][0] == lo and rows[-1][0] == hi - 1)):
        return [bytes(h) for _, h in rows]
    missing = next((lo + i for i, row in enumerate(rows) if row[0] != lo + i), lo + len(rows))
    raise VerificationError(f"tenant {tenant!r}: ledger position {missing} is missing", missing)


def _compare_tiles(store: Store, tenant: str, nodes: Sequence[merkle.Node]) -> None:
    """Name the first rewritten tile: a recomputed tile root that differs from the one stored at append time."""
    tiles = [n for n in nodes if n.level == TILE_HEIGHT]
    if not tiles:
        return
    stored = {
        int(idx): bytes(h)
        for idx, h in store.query(
            "SELECT idx, hash FROM tree_nodes WHERE tenant = ? AND level = ? AND idx >= ? AND idx <= ?",
            [tenant, TILE_HEIGHT, tiles[0].index, tiles[-1].index],
        )
    }
    for node in tiles:
        if stored.get(node.index, node.hash) != node.hash:
            first = node.index << node.level
            raise VerificationError(
                f"tenant {tenant!r}: the entries in positions [{first}, {first + (1 << node.level)}) were rewritten "
                "after they were appended (their tree hash differs from the one stored then)",
                first,
            )
