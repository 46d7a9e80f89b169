"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run() -> None:
    """Every ```python block of the README executes without error."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    """The quick start's test command is exactly what .ci/run runs."""
    text = README.read_text("utf-8")
    assert "./dev run" in text and "./dev test" in text
    ci = (README.parent / ".ci" / "run").read_text("utf-8")
    assert "exec ./dev test" in ci
