"""The public face: a curated, sorted, complete __all__ (as httpx does)."""

from __future__ import annotations

import auditledger


def test_all_is_sorted_and_importable() -> None:
    """Every name in __all__ exists and the list is sorted."""
    assert auditledger.__all__ == sorted(auditledger.__all__)
    for name in auditledger.__all__:
        assert hasattr(auditledger, name), name


def test_all_lists_every_public_name() -> None:
    """No public name is exported without being listed."""
    public = {n for n in vars(auditledger) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(auditledger, n)).__name__ == "module"}
    assert public - modules - set(auditledger.__all__) == set()
