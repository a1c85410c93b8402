"""The runs ./scripts/run-example makes, opened in the UI it points to, re-execute as the UI's
"Re-execute" button does (GraphQL launchPipelineReexecution against a real `dagster dev`).

Defects this guards against: every run-example run lacked a recorded code location (the UI
showed a CheckError on "remote_job_origin"), the incremental demo ran as
__ephemeral_asset_job__, and the UI read the demo's store from another place than the main job
wrote it (round 3 re-run from the UI computed 3 samples instead of none)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.unit.ui_support import dagster_dev, reexecute_and_wait

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# what scripts/run-example runs, trimmed to one partition run and the incremental demo
MAIN_JOB = """
import dagster as dg
from dagster_hpc_example import run_all, run_incremental
instance = dg.DagsterInstance.get()
run_all._execute("regional_job", instance, "regional_measurements[eu]", "eu", run_all.IN_PROCESS)
rows, ok = run_incremental.run_rounds(instance)
assert ok, rows
"""


def _materialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    out = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


@pytest.mark.slow
def test_the_main_jobs_runs_reexecute_from_the_ui(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_HPC_")},
        "DAGSTER_HOME": str(home),
        "DAGSTER_HPC_EXAMPLE_DATA": str(data),
        "PYTHONPATH": str(EXAMPLES),
    }
    data.mkdir()
    payload = EXAMPLES / "dagster_hpc_example" / "payloads" / "make_numbers.sh"
    subprocess.run(
        ["bash", str(payload), "2000"], env={**env, "EXAMPLE_DATA_DIR": str(data)}, check=True
    )
    subprocess.run([sys.executable, "-c", MAIN_JOB], cwd=ROOT, env=env, check=True)

    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs()[::-1]  # oldest first
    assert [r.job_name for r in runs] == ["regional_job"] + ["incremental_demo_job"] * 3
    assert all(r.remote_job_origin is not None for r in runs)  # a code location is recorded
    regional, round3 = runs[0], runs[-1]

    dagster = Path(sys.executable).parent / "dagster"
    command = [
        str(dagster),
        "dev",
        "-m",
        "dagster_hpc_example.definitions",
        "-m",
        "incremental_demo.assets",
    ]
    with dagster_dev(
        command,
        cwd=EXAMPLES,
        env=env,
        log=tmp_path / "dagster-dev.log",
        expect_assets={"regional_measurements", "demo/raw", "demo/derived"},
    ) as port:
        new_id, status, job = reexecute_and_wait(port, regional.run_id)
        assert (status, job) == ("SUCCESS", "regional_job"), (
            tmp_path / "dagster-dev.log"
        ).read_text()[-3000:]
        new_demo, status, job = reexecute_and_wait(port, round3.run_id)
        assert (status, job) == ("SUCCESS", "incremental_demo_job")
    # round 3 again, from the UI: the same store as the main job's, so nothing to compute
    demo = _materialized(instance, new_demo)
    assert demo["demo/raw"]["computed"] == 0 and demo["demo/derived"]["computed"] == 0, demo
    assert _materialized(instance, new_id)["regional_measurements"]["region"] == "eu"
