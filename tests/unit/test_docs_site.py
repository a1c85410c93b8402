"""The documentation site: every page is in the nav, the configuration reference is generated."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[2]


def _reference():
    spec = importlib.util.spec_from_file_location(
        "docs_reference", ROOT / "scripts" / "docs_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.M))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages - listed == set(), "add these pages to the nav in mkdocs.yml"
    assert listed - pages == set(), "the nav names pages that do not exist"


def test_reference_tables_come_from_the_classes():
    ref = _reference()
    text = ref.render("dagster_hpc.QueueConfig")
    from dagster_hpc import QueueConfig

    for name in QueueConfig.model_fields:
        assert f"| `{name}` |" in text
    assert "`DAGSTER_HPC_SLURM_PARTITION`" in text
    ssh = ref.render("dagster_hpc.SSHConnectionResource")
    assert "| `host` | `str` | required | `DAGSTER_HPC_SSH_HOST` |" in ssh
    assert "| `ntasks` | `int \\| None` | `None` |" in ref.render("dagster_hpc.SrunLauncher")
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert "| `time_limit` |" in ref.expand(page) and "<!-- reference:" not in ref.expand(page)


class _Undocumented(BaseModel):
    documented: int = Field(default=1, description="fine")
    forgotten: int = 2


def test_an_undocumented_setting_fails_the_build():
    ref = _reference()
    with pytest.raises(ref.ReferenceError, match="_Undocumented.forgotten has no description"):
        ref.render(f"{__name__}._Undocumented")
    with pytest.raises(ref.ReferenceError, match="does not exist"):
        ref.render("dagster_hpc.NoSuchThing")
