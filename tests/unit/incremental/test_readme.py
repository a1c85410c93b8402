"""The incremental page's (docs/incremental.md) quick start runs exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "docs" / "incremental.md"


def test_readme_incremental_snippet_runs(tmp_path):
    text = README.read_text()
    section = text
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "DeltaStore(store_root" in snippet
    # exactly as written: nothing injected, every name it uses is defined in the snippet itself
    exec(compile(snippet, "README.md#incremental", "exec"), {})


def test_readme_incremental_asset_snippet_runs(tmp_path):
    """The incremental_asset block, run after the quick start (which defines derived and graph)."""
    text = README.read_text()
    section = text
    first, second = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    namespace: dict = {}
    exec(compile(first, "README.md#incremental", "exec"), namespace)
    exec(
        compile(
            second.replace("/shared/metadata", str(tmp_path)), "README.md#incremental_asset", "exec"
        ),
        namespace,
    )
    assert namespace["derived_asset"].key.to_user_string() == "demo/derived"
