"""Before/after diffs: RFC 6902 JSON Patches and line diffs of texts.

Pure functions, no I/O: the API computes Kestra's ``appliedPatch`` and
``revertPatch`` with :func:`json_patch`, the web UI draws its side-by-side
view with :func:`side_by_side`. A state is a JSON value or a text (a YAML
source); ``None`` means "no state" (before a CREATE, after a DELETE).

Patch paths are JSON Pointers (RFC 6901): ``~`` is written ``~0`` and ``/``
``~1``. :func:`apply_patch` exists so that tests (and callers who want to be
sure) can check ``apply_patch(before, json_patch(before, after)) == after``.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from auditledger.errors import ValidationError

Patch = list[dict[str, Any]]


def _pointer(parts: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0 but True != 1 (Python's == says True == 1).
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def json_patch(before: Any, after: Any) -> Patch:
    """The RFC 6902 operations that turn ``before`` into ``after``.

    ``None`` on one side adds or removes the whole document (path ``""``);
    texts that differ are replaced whole (line diffs are :func:`side_by_side`).
    """
    if before is None and after is None:
        return []
    if before is None:
        return [{"op": "add", "path": "", "value": after}]
    if after is None:
        return [{"op": "remove", "path": ""}]
    ops: Patch = []
    _diff(before, after, [], ops)
    return ops


def _diff(a: Any, b: Any, path: list[str], ops: Patch) -> None:
    if _same(a, b):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key not in b:
                ops.append({"op": "remove", "path": _pointer([*path, key])})
        for key, value in b.items():
            if key in a:
                _diff(a[key], value, [*path, key], ops)
            else:
                ops.append({"op": "add", "path": _pointer([*path, key]), "value": value})
        return
    if isinstance(a, list) and isinstance(b, list):
        _diff_list(a, b, path, ops)
        return
    ops.append({"op": "replace", "path": _pointer(path), "value": b})


def _diff_list(a: list[Any], b: list[Any], path: list[str], ops: Patch) -> None:
    # Keep the common head and tail; in the middle, change elements pairwise,
    # then remove surplus (from the end backwards, so indexes stay valid) or add.
    head = 0
    while head < min(len(a), len(b)) and _same(a[head], b[head]):
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and _same(a[len(a) - 1 - tail], b[len(b) - 1 - tail]):
        tail += 1
    mid_a = a[head : len(a) - tail]
    mid_b = b[head : len(b) - tail]
    common = min(len(mid_a), len(mid_b))
    for i in range(common):
        _diff(mid_a[i], mid_b[i], [*path, str(head + i)], ops)
    for i in range(len(mid_a) - 1, common - 1, -1):
        ops.append({"op": "remove", "path": _pointer([*path, str(head + i)])})
    for i in range(common, len(mid_b)):
        ops.append({"op": "add", "path": _pointer([*path, str(head + i)]), "value": mid_b[i]})


def apply_patch(document: Any, patch: Patch) -> Any:
    """``document`` with RFC 6902 ``add``/``remove``/``replace`` operations applied (a copy)."""
    doc = copy.deepcopy(document)
    for i, op in enumerate(patch):
        name, path = op.get("op"), op.get("path")
        if not isinstance(path, str) or (path and not path.startswith("/")):
            raise ValidationError(f"patch[{i}].path", f"not a JSON Pointer: {path!r}")
        if path == "":
            doc = None if name == "remove" else copy.deepcopy(op.get("value"))
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
        parent = doc
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            last: Any = parts[-1]
            if isinstance(parent, list):
                last = len(parent) if last == "-" else int(last)
            if name == "add":
                if isinstance(parent, list):
                    parent.insert(last, copy.deepcopy(op["value"]))
                else:
                    parent[last] = copy.deepcopy(op["value"])
            elif name == "remove":
                del parent[last]
            elif name == "replace":
                if isinstance(parent, dict) and last not in parent:
                    raise KeyError(last)
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise ValidationError(f"patch[{i}].op", f"unsupported operation {name!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValidationError(f"patch[{i}].path", f"{path!r} does not exist in the document") from None
    return doc


# ---------------------------------------------------------------- texts


def to_text(state: Any) -> str:
    """A state as text: texts as they are, JSON pretty-printed with sorted keys, None as ``""``."""
    if state is None:
        return ""
    if isinstance(state, str):
        return state
    return orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


Kind = Literal["equal", "delete", "insert", "replace"]


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One row of a side-by-side diff; a side's number and text are None where it has no line."""

    kind: Kind
    left_no: int | None
    left: str | None
    right_no: int | None
    right: str | None


def side_by_side(before: Any, after: Any) -> list[DiffLine]:
    """Rows pairing the lines of ``to_text(before)`` and ``to_text(after)``, changes marked."""
    left = to_text(before).splitlines()
    right = to_text(after).splitlines()
    rows: list[DiffLine] = []
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs = zip(range(i1, i2), range(j1, j2), strict=True)
            rows += [DiffLine("equal", i + 1, left[i], j + 1, right[j]) for i, j in pairs]
            continue
        span = max(i2 - i1, j2 - j1)
        for k in range(span):
            i, j = i1 + k, j1 + k
            has_l, has_r = i < i2, j < j2
            kind: Kind = "replace" if has_l and has_r else ("delete" if has_l else "insert")
            rows.append(
                DiffLine(kind, i + 1 if has_l else None, left[i] if has_l else None,
                         j + 1 if has_r else None, right[j] if has_r else None)
            )
    return rows


def unified(before: Any, after: Any, *, context: int = 3, labels: tuple[str, str] = ("before", "after")) -> str:
    """A unified diff (``diff -u`` style) of the two states as text."""
    lines = difflib.unified_diff(
        to_text(before).splitlines(), to_text(after).splitlines(), labels[0], labels[1], n=context, lineterm=""
    )
    return "\n".join(lines)
