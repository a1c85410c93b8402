"""Golden files: generated scripts are public API, so any change to them must be deliberate."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with golden/<name>; record it when missing (never in CI)."""
    path = GOLDEN_DIR / name
    if not path.exists():
        if os.environ.get("CI"):
            raise AssertionError(
                f"golden file {path} is missing in CI: record it locally and commit it"
            )
        path.write_text(text)
        return
    expected = path.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                str(path),
                "generated",
            )
        )
        raise AssertionError(
            f"generated text differs from {path}:\n{diff}\n"
            f"If this change is intended, delete {path} and re-run the test to re-record it."
        )
