"""Pure Merkle tree maths for the ledger, as RFC 9162 (Certificate Transparency
v2, section 2.1) defines it; the hashes are identical to RFC 6962's.

Leaves and interior nodes are hashed with distinct one-byte prefixes so that a
leaf can never be passed off as a node (second-preimage resistance)::

    leaf = SHA-256(0x00 || data)        node = SHA-256(0x01 || left || right)

The tree over ``n`` leaves splits at ``k``, the largest power of two below
``n``; the empty tree's hash is ``SHA-256("")``.

Nothing here touches storage. Proof generation asks the caller for subtree
hashes through ``subtree(start, end)``, the hash of the (perfect or right-edge
partial) subtree over leaves ``[start, end)``. Every range asked for is
perfect, i.e. aligned and of power-of-two size, except at most one per proof,
which lies on the tree's right edge; a store that keeps perfect-subtree hashes
(tiles) therefore answers a proof in O(log n) reads, composing that one
partial range from ``range_decomposition``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from auditledger.errors import ValidationError, VerificationError

_LEAF_HASH_PREFIX = b"\x00"
_NODE_HASH_PREFIX = b"\x01"

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(start, end)``: the hash of the subtree over leaves ``[start, end)``."""


@dataclass(frozen=True, slots=True)
class Node:
    """A perfect subtree: ``2**level`` leaves starting at leaf ``index * 2**level``."""

    level: int
    index: int
    hash: bytes


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash of ``data``."""
    return hashlib.sha256(_LEAF_HASH_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash of two child hashes."""
    return hashlib.sha256(_NODE_HASH_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over ``leaves``, which are already leaf hashes."""
    frontier: list[bytes] = []
    for size, h in enumerate(leaves):
        frontier, _ = _append_one(size, frontier, h, None)
    return root_from_frontier(frontier)


# --- incremental maintenance (compact ranges) ---------------------------------
#
# The frontier of a tree of ``size`` leaves is the list of its right-edge perfect
# subtree hashes, largest (leftmost) first: one per set bit of ``size``. It is
# all that is needed to append and to compute the root, so appends cost
# amortised one node hash per leaf.


def _append_one(size: int, frontier: list[bytes], h: bytes, completed: list[Node] | None) -> tuple[list[bytes], int]:
    level = 0
    # Each trailing set bit of ``size`` is a perfect subtree the new leaf completes.
    while (size >> level) & 1:
        h = node_hash(frontier.pop(), h)
        level += 1
        if completed is not None:
            completed.append(Node(level, size >> level, h))
    frontier.append(h)
    return frontier, size + 1


def append_leaves(size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]) -> tuple[list[bytes], list[Node]]:
    """Append leaf hashes to a tree of ``size`` leaves given by its ``frontier``.

    Returns the new frontier and every perfect subtree of level >= 1 that the
    new leaves completed, in the order they were completed (level 0 nodes are
    the leaf hashes themselves).
    """
    if size < 0:
        raise ValidationError("size", f"must be >= 0, got {size}")
    if len(frontier) != size.bit_count():
        raise ValidationError(
            "frontier",
            f"a tree of {size} leaves has {size.bit_count()} frontier hashes, got {len(frontier)}",
        )
    new_frontier = list(frontier)
    completed: list[Node] = []
    for h in leaves:
        new_frontier, size = _append_one(size, new_frontier, h, completed)
    return new_frontier, completed


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """The tree root from its frontier (largest subtree first)."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = node_hash(h, acc)
    return acc


def range_decomposition(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` whose hashes fold into ``subtree(start, end)``.

    Valid for the ranges the proof functions ask for (``start`` aligned to a
    power of two at least ``end - start``); fold the hashes with
    ``root_from_frontier``.
    """
    out: list[tuple[int, int]] = []
    for level in range((end - start).bit_length() - 1, -1, -1):
        if ((end - start) >> level) & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def subtree_hasher(leaves: Sequence[bytes]) -> SubtreeHash:
    """A ``subtree`` function over leaf hashes held in memory (O(n) per call)."""
    return lambda start, end: root(leaves[start:end])


# --- proofs (RFC 9162 sections 2.1.3 and 2.1.4) --------------------------------


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1, deepest sibling first."""
    if not 0 <= index < size:
        raise ValidationError("index", f"must be in [0, {size}), got {index}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            path.append(subtree(mid, end))
            end = mid
        else:
            path.append(subtree(start, mid))
            start = mid
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 2.1.4.1, deepest node first."""
    if not 0 <= old_size <= new_size:
        raise ValidationError("old_size", f"must be in [0, {new_size}], got {old_size}")
    if old_size in (0, new_size):
        return []
    path: list[bytes] = []
    start, end, complete = 0, new_size, True
    while True:
        m = old_size - start
        if m == end - start:
            # The old tree's subtree itself; the verifier knows it already
            # when it is the whole old tree (the ``b`` flag of SUBPROOF).
            if not complete:
                path.append(subtree(start, end))
            break
        mid = start + _split(end - start)
        if m <= mid - start:
            path.append(subtree(mid, end))
            end = mid
        else:
            path.append(subtree(start, mid))
            start, complete = mid, False
    path.reverse()
    return path


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise VerificationError(f"{what} proof element {i} is {len(h)} bytes, not {HASH_SIZE}")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check an inclusion proof exactly as RFC 9162 2.1.3.2 says; raise on failure."""
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes(proof, "inclusion")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationError(f"inclusion proof is too long for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(f"inclusion proof is too short for leaf {index} of {size}")
    if r != root:
        raise VerificationError(f"inclusion proof for leaf {index} does not lead to the root of tree size {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check a consistency proof exactly as RFC 9162 2.1.4.2 says; raise on failure."""
    if not 0 <= old_size <= new_size:
        raise VerificationError(f"tree size went from {old_size} to {new_size}: not an extension")
    _check_hashes(proof, "consistency")
    if old_size == 0 or old_size == new_size:
        # The RFC procedure covers 0 < old < new; these cases need no proof at all.
        if proof:
            raise VerificationError(f"consistency proof {old_size} -> {new_size} must be empty")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise VerificationError("old root is not the empty tree's root")
        if old_size == new_size and old_root != new_root:
            raise VerificationError(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise VerificationError(f"consistency proof {old_size} -> {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(f"consistency proof {old_size} -> {new_size} is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(f"consistency proof {old_size} -> {new_size} is too short")
    if fr != old_root:
        raise VerificationError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise VerificationError(f"consistency proof does not lead to the new root (size {new_size})")
