"""The dry run is what Slurm stored: a job submitted with ``env=`` and an asset-metadata queue
override, read back with ``scontrol write batch_script``, equals the dry run's job script byte for
byte apart from the run directory (which a run chooses when it submits)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dagster_hpc.compute import DRY_RUN_DIR, ComputeResource
from dagster_hpc.envs.config import EnvConfig
from tests.integration.slurm_support import PAYLOADS, payload_python, remote, slurm_resource, unique

QUEUE_OVERRIDE = {"mem": "300M", "cpus_per_task": 2, "time_limit": "4"}


def test_scontrol_batch_script_equals_the_dry_run(cluster) -> None:
    payload_env = str(Path(payload_python(cluster)).parents[1])  # a pre-deployed venv
    name = unique("dry_run").replace("-", "_")  # a valid asset name

    @dg.asset(name=name, metadata={"dagster-hpc/queue": QUEUE_OVERRIDE})
    def asset(context, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "short.py", args=["--n", "1"]).get_results()

    resource = ComputeResource(
        mode="slurm",
        keep_run_dirs="always",
        slurm=slurm_resource(cluster, python=None, env=EnvConfig(path=payload_env)),
    )
    result = dg.materialize([asset], resources={"compute": resource})
    md = result.get_asset_materialization_events()[-1].materialization.metadata
    job_id, run_dir = md["slurm/job_id"].value, md["slurm/run_dir"].value
    stored = remote(cluster, f"scontrol write batch_script {job_id} -")

    dry = resource.render_job_script(PAYLOADS / "short.py", args=["--n", "1"], asset=asset)
    job, launch = dry.removeprefix("# ===== job.sh =====\n").split("\n# ===== launch.sh =====\n")
    assert job.replace(DRY_RUN_DIR, run_dir) == stored
    assert "#SBATCH --mem=300M" in stored and "#SBATCH --cpus-per-task=2" in stored
    assert f"#SBATCH --job-name=dhpc-{name}" in stored
    assert launch == remote(cluster, f"cat {run_dir}/launch.sh")
    assert f"{payload_env}/bin/python" in launch  # the environment's interpreter, not python3
