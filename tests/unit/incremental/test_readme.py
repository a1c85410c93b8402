"""The README's incremental quick start runs exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_incremental_snippet_runs(tmp_path):
    text = README.read_text()
    section = text[text.index("## Incremental processing") :]
    section = section[: section.index("\n## ", 5)]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "DeltaStore(store_root" in snippet
    exec(compile(snippet, "README.md#incremental", "exec"), {"store_root": str(tmp_path)})
