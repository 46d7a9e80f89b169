"""Merkle tree maths, checked against published vectors, a naive reference and hypothesis."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditledger import merkle
from auditledger.errors import ValidationError, VerificationError

# --- published vectors ---------------------------------------------------------
# The 8-leaf test data of the Certificate Transparency reference implementations
# (RFC 6962 / RFC 9162 trees, as used by certificate-transparency and Trillian).

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
LEAF_HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]

ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def _hx(*hashes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hx(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hx("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hx(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hx(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]


# --- naive reference, transcribed from the recursive definitions of RFC 9162 ---


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True) if 0 < m < len(d) else []


def leaves_of(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def tamperings(proof: list[bytes]) -> list[list[bytes]]:
    """Every way of spoiling a proof that a verifier must notice."""
    bad = [[*proof, proof[0] if proof else bytes(32)], [bytes(32), *proof]]
    if proof:
        bad.append(proof[:-1])
        for i in range(len(proof)):
            flipped = bytes([proof[i][0] ^ 1]) + proof[i][1:]
            bad.append([*proof[:i], flipped, *proof[i + 1 :]])
    return bad


# --- published vectors ---------------------------------------------------------


def test_leaf_and_node_hashes_use_distinct_prefixes() -> None:
    """A leaf hash is SHA-256 of 0x00||data and a node hash SHA-256 of 0x01||l||r."""
    assert merkle.leaf_hash(b"") == ROOTS[1]
    assert merkle.node_hash(LEAF_HASHES[0], LEAF_HASHES[1]) == ROOTS[2]
    assert ROOTS[0] == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_root_matches_published_vectors(size: int) -> None:
    """The root of the first n published leaves is the published root, n = 0..8."""
    assert merkle.root(LEAF_HASHES[:size]) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_proof_matches_published_vectors(index: int, size: int, path: list[bytes]) -> None:
    """Inclusion proofs equal the published audit paths and verify against the root."""
    subtree = merkle.subtree_hasher(LEAF_HASHES)
    assert merkle.inclusion_proof(index, size, subtree) == path
    merkle.verify_inclusion(LEAF_HASHES[index], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_consistency_proof_matches_published_vectors(old: int, new: int, path: list[bytes]) -> None:
    """Consistency proofs equal the published ones and verify between the two roots."""
    subtree = merkle.subtree_hasher(LEAF_HASHES)
    assert merkle.consistency_proof(old, new, subtree) == path
    merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], path)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS[1:])
def test_published_inclusion_proof_fails_when_misapplied(index: int, size: int, path: list[bytes]) -> None:
    """A published proof fails for a neighbouring index, another size, leaf or root."""
    leaf = LEAF_HASHES[index]
    bad_calls = [
        (leaf, index - 1, size, path, ROOTS[size]),
        (leaf, index + 1, size, path, ROOTS[size]),
        (leaf, index ^ 2, size, path, ROOTS[size]),
        (leaf, index, size * 2, path, ROOTS[size]),
        (leaf, index, size // 2, path, ROOTS[size]),
        (merkle.leaf_hash(b"WrongLeaf"), index, size, path, ROOTS[size]),
        (leaf, index, size, path, ROOTS[0]),
    ]
    for call in bad_calls:
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(*call)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS[1:])
def test_published_consistency_proof_fails_when_misapplied(old: int, new: int, path: list[bytes]) -> None:
    """A published proof fails for other sizes, wrong or swapped roots."""
    bad_calls = [
        (old - 1, new, ROOTS[old], ROOTS[new], path),
        (old + 1, new, ROOTS[old], ROOTS[new], path),
        (old ^ 2, new, ROOTS[old], ROOTS[new], path),
        (old, new * 2, ROOTS[old], ROOTS[new], path),
        (old, new // 2, ROOTS[old], ROOTS[new], path),
        (old, new, ROOTS[0], ROOTS[new], path),
        (old, new, ROOTS[old], ROOTS[0], path),
        (old, new, ROOTS[new], ROOTS[old], path),
        (old, new, ROOTS[old], ROOTS[new], []),
    ]
    for call in bad_calls:
        with pytest.raises(VerificationError):
            merkle.verify_consistency(*call)


# --- edge cases and errors -----------------------------------------------------


def test_trivial_consistency_needs_an_empty_proof_and_matching_roots() -> None:
    """From the empty tree or to the same size, only an empty proof and equal roots pass."""
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOTS[5], [])
    merkle.verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    with pytest.raises(VerificationError, match="must be empty"):
        merkle.verify_consistency(3, 3, ROOTS[3], ROOTS[3], [ROOTS[3]])
    with pytest.raises(VerificationError, match="different roots"):
        merkle.verify_consistency(3, 3, ROOTS[3], ROOTS[4], [])
    with pytest.raises(VerificationError, match="empty tree"):
        merkle.verify_consistency(0, 3, ROOTS[1], ROOTS[3], [])
    with pytest.raises(VerificationError, match="not an extension"):
        merkle.verify_consistency(4, 3, ROOTS[4], ROOTS[3], [])


def test_verification_rejects_out_of_range_index_and_short_hashes() -> None:
    """An index outside the tree or a proof element that is not 32 bytes fails clearly."""
    with pytest.raises(VerificationError, match="outside a tree"):
        merkle.verify_inclusion(LEAF_HASHES[0], 1, 1, [], ROOTS[1])
    with pytest.raises(VerificationError, match="outside a tree"):
        merkle.verify_inclusion(LEAF_HASHES[0], 0, 0, [], ROOTS[0])
    with pytest.raises(VerificationError, match="element 0 is 31 bytes"):
        merkle.verify_inclusion(LEAF_HASHES[2], 2, 3, [ROOTS[2][:31]], ROOTS[3])


def test_proof_generation_rejects_bad_arguments() -> None:
    """Asking for a proof outside the tree is a ValidationError naming the argument."""
    subtree = merkle.subtree_hasher(LEAF_HASHES)
    with pytest.raises(ValidationError, match="index"):
        merkle.inclusion_proof(8, 8, subtree)
    with pytest.raises(ValidationError, match="old_size"):
        merkle.consistency_proof(5, 4, subtree)
    with pytest.raises(ValidationError, match="frontier"):
        merkle.append_leaves(3, [ROOTS[1]], [])


def test_range_decomposition_lists_aligned_perfect_subtrees() -> None:
    """The right-edge range [8, 15) decomposes into 4 + 2 + 1 leaves, largest first."""
    assert merkle.range_decomposition(8, 15) == [(2, 2), (1, 6), (0, 14)]
    assert merkle.range_decomposition(0, 8) == [(3, 0)]


# --- naive reference and hypothesis ----------------------------------------------

sizes = st.integers(min_value=1, max_value=300)


@given(size=sizes)
def test_root_equals_reference(size: int) -> None:
    """root() equals the recursive MTH of RFC 9162 for any size."""
    leaves = leaves_of(size)
    assert merkle.root(leaves) == ref_mth(leaves)


@given(size=sizes, data=st.data())
def test_inclusion_proofs_equal_reference_and_verify(size: int, data: st.DataObject) -> None:
    """Every inclusion proof equals the reference PATH and verifies; tampering fails."""
    leaves = leaves_of(size)
    tree_root = ref_mth(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, merkle.subtree_hasher(leaves))
    assert proof == ref_path(index, leaves)
    merkle.verify_inclusion(leaves[index], index, size, proof, tree_root)
    for bad in tamperings(proof):
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(leaves[index], index, size, bad, tree_root)
    for other in {index - 1, index + 1} & set(range(size)):
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(leaves[index], other, size, proof, tree_root)


@given(size=sizes, data=st.data())
def test_consistency_proofs_equal_reference_and_verify(size: int, data: st.DataObject) -> None:
    """Every consistency proof equals the reference PROOF and verifies; tampering fails."""
    leaves = leaves_of(size)
    old = data.draw(st.integers(0, size))
    old_root, new_root = ref_mth(leaves[:old]), ref_mth(leaves)
    proof = merkle.consistency_proof(old, size, merkle.subtree_hasher(leaves))
    assert proof == ref_proof(old, leaves)
    merkle.verify_consistency(old, size, old_root, new_root, proof)
    for bad in tamperings(proof):
        with pytest.raises(VerificationError):
            merkle.verify_consistency(old, size, old_root, new_root, bad)
    if 0 < old < size:
        # A rewritten history: the old tree had a different last leaf.
        forged = ref_mth([*leaves[: old - 1], merkle.leaf_hash(b"forged")])
        with pytest.raises(VerificationError):
            merkle.verify_consistency(old, size, forged, new_root, proof)


@given(batches=st.lists(st.integers(0, 40), max_size=12))
def test_frontier_appends_track_root_and_completed_subtrees(batches: list[int]) -> None:
    """Appending in batches keeps the frontier's root right and reports every perfect subtree."""
    size, frontier, leaves = 0, list[bytes](), list[bytes]()
    for count in batches:
        new = leaves_of(size + count)[size:]
        frontier, completed = merkle.append_leaves(size, frontier, new)
        leaves += new
        for node in completed:
            start = node.index << node.level
            assert node.level >= 1
            assert start + (1 << node.level) <= len(leaves)
            assert node.hash == ref_mth(leaves[start : start + (1 << node.level)])
        # Exactly the perfect subtrees that became complete in this batch.
        expected = sum(len(leaves) >> lv for lv in range(1, 64)) - sum(size >> lv for lv in range(1, 64))
        assert len(completed) == expected
        size += count
        assert merkle.root_from_frontier(frontier) == ref_mth(leaves)


@settings(max_examples=50)
@given(size=st.integers(1, 600), data=st.data())
def test_proofs_served_from_stored_subtrees_need_one_partial_range(size: int, data: st.DataObject) -> None:
    """With perfect subtrees stored as they complete, proofs ask for at most one partial range."""
    leaves = leaves_of(size)
    _, completed = merkle.append_leaves(0, [], leaves)
    stored = {(n.level, n.index): n.hash for n in completed}
    stored.update({(0, i): h for i, h in enumerate(leaves)})
    partial_requests = 0

    def subtree(start: int, end: int) -> bytes:
        nonlocal partial_requests
        parts = merkle.range_decomposition(start, end)
        partial_requests += len(parts) > 1
        return merkle.root_from_frontier([stored[p] for p in parts])

    index = data.draw(st.integers(0, size - 1))
    assert merkle.inclusion_proof(index, size, subtree) == ref_path(index, leaves)
    assert partial_requests <= 1
    partial_requests = 0
    old = data.draw(st.integers(0, size))
    assert merkle.consistency_proof(old, size, subtree) == ref_proof(old, leaves)
    assert partial_requests <= 1
