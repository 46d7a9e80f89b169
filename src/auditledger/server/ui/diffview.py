"""What the diff page shows: rows of a side-by-side or unified diff, and a JSON summary.

Lines come from :func:`auditledger.diff.side_by_side`; a changed pair of
lines is split further into runs of characters so that the page can mark
exactly what changed inside the line. JSON states get a structural summary
built from their RFC 6902 patch (:func:`auditledger.diff.json_patch`): the
paths added, removed and changed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from auditledger.diff import DiffLine, json_patch, side_by_side

# Past this many lines a pair is not split into characters: SequenceMatcher is
# quadratic and a 1 MiB state must not stall the page.
_INLINE_MAX = 2000

Run = tuple[str, bool]  # (text, changed)


@dataclass(frozen=True, slots=True)
class Row:
    kind: str  # equal | delete | insert | replace
    left_no: int | None
    left: list[Run] | None
    right_no: int | None
    right: list[Run] | None


@dataclass(frozen=True, slots=True)
class Summary:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DiffView:
    rows: list[Row]
    unified: list[tuple[str, int | None, list[Run]]]  # (sign, line number, runs)
    is_json: bool
    summary: Summary | None
    changes: int


def _runs(a: str, b: str) -> tuple[list[Run], list[Run]]:
    if len(a) + len(b) > _INLINE_MAX:
        return [(a, True)], [(b, True)]
    left: list[Run] = []
    right: list[Run] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if i2 > i1:
            left.append((a[i1:i2], tag != "equal"))
        if j2 > j1:
            right.append((b[j1:j2], tag != "equal"))
    return left, right


def _row(line: DiffLine) -> Row:
    if line.kind == "replace" and line.left is not None and line.right is not None:
        left, right = _runs(line.left, line.right)
        return Row(line.kind, line.left_no, left, line.right_no, right)
    changed = line.kind != "equal"
    return Row(
        line.kind,
        line.left_no,
        None if line.left is None else [(line.left, changed)],
        line.right_no,
        None if line.right is None else [(line.right, changed)],
    )


def _is_json(state: Any) -> bool:
    return state is not None and not isinstance(state, str)


def summary(before: Any, after: Any) -> Summary:
    """Paths (JSON Pointers) added, removed and changed between two JSON states."""
    out = Summary()
    for op in json_patch(before, after):
        path = op["path"] or "/"
        {"add": out.added, "remove": out.removed}.get(op["op"], out.changed).append(path)
    return out


def build(before: Any, after: Any) -> DiffView:
    rows = [_row(line) for line in side_by_side(before, after)]
    unified: list[tuple[str, int | None, list[Run]]] = []
    for row in rows:
        if row.kind == "equal":
            unified.append((" ", row.right_no, row.right or []))
            continue
        if row.left is not None:
            unified.append(("-", row.left_no, row.left))
        if row.right is not None:
            unified.append(("+", row.right_no, row.right))
    is_json = _is_json(before) or _is_json(after)
    both_json = (before is None or _is_json(before)) and (after is None or _is_json(after))
    return DiffView(
        rows,
        unified,
        is_json,
        summary(before, after) if is_json and both_json else None,
        sum(1 for r in rows if r.kind != "equal"),
    )
