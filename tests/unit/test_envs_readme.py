"""The "Environments on the cluster" page's (docs/environments.md) first code block builds the resource it describes."""

import re
from pathlib import Path

import pytest

from dagster_hpc.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "docs" / "environments.md"


def _block() -> str:
    section = README.read_text().split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_environments_block_configures_slurm_mode_with_a_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative lock is relative to the working directory
    namespace: dict = {}
    exec(compile(_block(), "README environments", "exec"), namespace)  # noqa: S102 - our own README
    compute = namespace["compute"]
    assert compute.mode == "slurm" and compute.slurm.env.lock == "payload-env/uv.lock"
    with pytest.raises(ConfigError, match="env lock file payload-env/uv.lock does not exist"):
        compute.slurm.env.check()
    (tmp_path / "payload-env").mkdir()
    (tmp_path / "payload-env" / "uv.lock").write_text("version = 1\n")
    compute.slurm.env.check()
