"""The Dagster Component: `dg check defs` on the example project, `dg scaffold defs` of ours,
materialized locally (the example's component and a scaffolded one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DG = str(Path(sys.executable).parent / "dg")
COMPONENT = "dagster_hpc.components.HpcScriptComponent"


def _dg(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "DAGSTER_HPC_MODE": "local"}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [DG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_dg_check_defs_passes_on_the_example_project():
    out = _dg(EXAMPLES, "check", "defs", "--use-active-venv")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout + out.stderr


def test_scaffolded_component_checks_and_materializes(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLES / "dg.toml", project)
    shutil.copytree(EXAMPLES / "dagster_hpc_example", project / "dagster_hpc_example")
    out = _dg(project, "scaffold", "defs", COMPONENT, "nightly_stats")
    assert out.returncode == 0, out.stdout + out.stderr
    folder = project / "dagster_hpc_example" / "defs" / "nightly_stats"
    assert (folder / "payload.py").exists()
    assert "type: dagster_hpc.components.HpcScriptComponent" in (folder / "defs.yaml").read_text()
    out = _dg(project, "check", "defs", "--use-active-venv")
    assert out.returncode == 0, out.stdout + out.stderr
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("DAGSTER_HPC_MODE", "local")
    for name in [m for m in sys.modules if m.startswith("dagster_hpc_example")]:
        monkeypatch.delitem(sys.modules, name)
    import dagster_hpc_example.defs as defs_pkg

    defs = dg.Definitions.merge(
        dg.load_defs(defs_pkg, project_root=project),
        dg.Definitions(resources={"compute": _local()}),  # the example component uses it
    )
    result = dg.materialize([defs.resolve_assets_def("nightly_stats")])
    assert result.success


def _local():
    from dagster_hpc import ComputeResource

    return ComputeResource()


def test_example_component_materializes_locally(monkeypatch):
    # the project picks its mode at import: import it afresh in local mode (a test that ran
    # before may have left a slurm-mode import in sys.modules)
    monkeypatch.setenv("DAGSTER_HPC_MODE", "local")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in [m for m in sys.modules if m.startswith("dagster_hpc_example")]:
        monkeypatch.delitem(sys.modules, name)
    from dagster_hpc_example.definitions import defs

    asset = defs.resolve_assets_def("synthetic_quantiles")
    spec = asset.specs_by_key[dg.AssetKey("synthetic_quantiles")]
    assert "slurm" not in spec.kinds  # local mode
    result = dg.materialize([asset])
    md = result.asset_materializations_for_node("synthetic_quantiles")[0].metadata
    assert md["samples"].value == 50000 and 95 < md["q50"].value < 105


def test_numbers_from_yaml_mean_minutes_and_megabytes():
    from dagster.components.lib.executable_component.script_utils import ScriptSpec

    from dagster_hpc.components import HpcScriptComponent

    component = HpcScriptComponent(  # what `time_limit: 30` / `mem: 512` in defs.yaml become
        execution=ScriptSpec(path="p.py"),
        queue={"time_limit": 30, "mem": 512},
        assets=[dg.AssetSpec("x")],
    )
    assert component.slurm_queue == {"time_limit": "30", "mem": "512"}
    bad = component.model_copy(update={"queue": {"time_limt": "30"}})
    with pytest.raises(ConfigError, match="time_limit"):
        bad.build_underlying_assets_def(None)
