"""The README's quick start is code users copy: run exactly its two blocks."""

import re
from pathlib import Path

import dagster as dg

README = Path(__file__).resolve().parents[2] / "README.md"


def _quick_start_blocks() -> tuple[str, str]:
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the quick start should hold the asset block and the payload block"
    return blocks[0], blocks[1]


def test_quick_start_asset_and_payload_run_as_documented(tmp_path, monkeypatch) -> None:
    asset_code, payload_code = _quick_start_blocks()
    (tmp_path / "payloads").mkdir()
    (tmp_path / "payloads" / "features.py").write_text(payload_code)
    monkeypatch.chdir(tmp_path)  # the asset names its payload relative to the working directory
    namespace: dict = {}
    exec(compile(asset_code, "README quick start", "exec"), namespace)  # noqa: S102 - our own README
    defs: dg.Definitions = namespace["defs"]
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([namespace["features"]], resources=defs.resources, instance=instance)
    assert result.success
    assert result.asset_materializations_for_node("features")[0].metadata["rows"].value == 1000
    messages = [e.user_message for e in instance.all_logs(result.run_id) if not e.is_dagster_event]
    assert "plain prints become Dagster log lines" in messages
    assert "threshold=0.5" in messages
