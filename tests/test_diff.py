"""RFC 6902 patches and line diffs of before/after states."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditledger.diff import apply_patch, json_patch, side_by_side, to_text, unified
from auditledger.errors import ValidationError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=20,
)


def test_object_changes() -> None:
    """Changed, added and removed keys become replace, add and remove operations."""
    before = {"a": 1, "b": {"c": "x"}, "gone": True}
    after = {"a": 2, "b": {"c": "x", "d": [1]}}
    assert json_patch(before, after) == [
        {"op": "remove", "path": "/gone"},
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "add", "path": "/b/d", "value": [1]},
    ]


def test_pointer_escaping() -> None:
    """Keys with / and ~ are escaped as RFC 6901 says (~1 and ~0)."""
    assert json_patch({}, {"a/b~c": 1}) == [{"op": "add", "path": "/a~1b~0c", "value": 1}]


def test_create_and_delete_are_whole_document() -> None:
    """No before is an add at the root, no after a remove of the root, none at all no operation."""
    assert json_patch(None, {"x": 1}) == [{"op": "add", "path": "", "value": {"x": 1}}]
    assert json_patch("id: a", None) == [{"op": "remove", "path": ""}]
    assert json_patch(None, None) == []


def test_bool_is_not_int() -> None:
    """true and 1 are different JSON values, so changing one into the other is a replace."""
    assert json_patch({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert json_patch({"a": 1}, {"a": 1.0}) == []


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_patch_round_trip(before: Any, after: Any) -> None:
    """Applying json_patch(a, b) to a gives b, and applying json_patch(b, a) to b gives a."""
    assert apply_patch(before, json_patch(before, after)) == after
    assert apply_patch(after, json_patch(after, before)) == before


def test_apply_patch_refuses_missing_paths() -> None:
    """A patch naming a path that does not exist is a ValidationError naming the operation."""
    with pytest.raises(ValidationError, match=r"patch\[0\]\.path"):
        apply_patch({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}])


def test_to_text() -> None:
    """Texts stay as they are, JSON is pretty-printed with sorted keys, nothing is empty."""
    assert to_text("id: a\n") == "id: a\n"
    assert to_text({"b": 1, "a": 2}) == '{\n  "a": 2,\n  "b": 1\n}'
    assert to_text(None) == ""


def test_side_by_side_marks_changes() -> None:
    """Equal lines pair up; a changed line is a replace and an extra line an insert."""
    rows = side_by_side("a\nb\nc", "a\nB\nc\nd")
    assert [(r.kind, r.left, r.right) for r in rows] == [
        ("equal", "a", "a"),
        ("replace", "b", "B"),
        ("equal", "c", "c"),
        ("insert", None, "d"),
    ]
    assert rows[3].right_no == 4 and rows[3].left_no is None


def test_unified() -> None:
    """The unified diff shows removed and added lines with - and +."""
    text = unified("a\nb", "a\nc")
    assert "-b" in text and "+c" in text
