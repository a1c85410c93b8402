"""One code path: the dry run prints exactly the scripts a run writes and sbatch receives,
asset-metadata queue overrides and ``env=`` included (only the run directory differs)."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import ComputeResource, EnvConfig, QueueConfig, SlurmResource
from dagster_hpc.cli import main

PAYLOADS = Path(__file__).parent / "payloads"
QUEUE_OVERRIDE = {"mem": "300M", "cpus_per_task": 2}


def _asset() -> dg.AssetsDefinition:
    @dg.asset(name="dry_run_asset", metadata={"dagster-hpc/queue": QUEUE_OVERRIDE})
    def _a(context, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "report.py", args=["--n", "3"]).get_results()

    return _a


def _slurm(tmp_path: Path, **kw) -> ComputeResource:
    return ComputeResource(
        mode="slurm",
        keep_run_dirs="always",
        slurm=SlurmResource(
            remote_base_dir=str(tmp_path / "remote"),
            queue=QueueConfig(time_limit="5", mem="256M"),
            **kw,
        ),
    )


def _split(text: str) -> tuple[str, str]:
    job, launch = text.removeprefix("# ===== job.sh =====\n").split("\n# ===== launch.sh =====\n")
    return job, launch


def test_dry_run_equals_the_submitted_script_with_env_and_asset_override(
    fake_slurm: Path, tmp_path: Path
) -> None:
    # a pre-deployed environment (this test's own venv): its interpreter must be in the script
    resource = _slurm(tmp_path, env=EnvConfig(path=sys.prefix))
    asset = _asset()
    result = dg.materialize([asset], resources={"compute": resource})
    md = result.asset_materializations_for_node("dry_run_asset")[0].metadata
    run_dir = md["slurm/run_dir"].value
    submitted = (fake_slurm / f"job.{md['slurm/job_id'].value}.sh").read_text()
    launched = (Path(run_dir) / "launch.sh").read_text()

    dry = resource.render_job_script(PAYLOADS / "report.py", args=["--n", "3"], asset=asset)
    job, launch = _split(dry)
    assert job.replace("/path/to/run-dir", run_dir) == submitted
    assert launch == launched
    assert "#SBATCH --mem=300M" in job and "#SBATCH --cpus-per-task=2" in job  # the override
    assert "#SBATCH --job-name=dhpc-dry_run_asset" in job
    assert f"{sys.prefix}/bin/python" in launch and "python3" not in launch  # env=, not python3


def test_dry_run_with_run_dir_is_byte_identical(fake_slurm: Path, tmp_path: Path) -> None:
    resource = _slurm(tmp_path, python=sys.executable)
    asset = _asset()
    result = dg.materialize([asset], resources={"compute": resource})
    md = result.asset_materializations_for_node("dry_run_asset")[0].metadata
    run_dir = md["slurm/run_dir"].value
    submitted = (fake_slurm / f"job.{md['slurm/job_id'].value}.sh").read_text()
    dry = resource.render_job_script(
        PAYLOADS / "report.py", args=["--n", "3"], asset=asset, run_dir=run_dir, check=True
    )
    assert _split(dry)[0] == submitted


def test_local_dry_run_equals_the_local_run_dir(tmp_path: Path) -> None:
    resource = ComputeResource(base_dir=str(tmp_path / "runs"), keep_run_dirs="always")
    asset = _asset()
    result = dg.materialize([asset], resources={"compute": resource})
    run_dir = (
        result.asset_materializations_for_node("dry_run_asset")[0]
        .metadata["dagster_hpc/run_dir"]
        .value
    )
    job, launch = _split(
        resource.render_job_script(PAYLOADS / "report.py", args=["--n", "3"], run_dir=run_dir)
    )
    assert job == (Path(run_dir) / "job.sh").read_text()
    assert launch == (Path(run_dir) / "launch.sh").read_text()


def test_cli_render_reads_the_asset_metadata(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DAGSTER_HPC_SLURM_MEM", "DAGSTER_HPC_ENV_LOCK", "DAGSTER_HPC_ENV_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_HPC_SSH_HOST", "login.example.org")  # never contacted
    rc = main(
        [
            "render",
            "--mode",
            "slurm",
            "--asset",
            "tests.unit.test_dry_run:CLI_ASSET",
            str(PAYLOADS / "hello.sh"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "#SBATCH --job-name=dhpc-dry_run_asset" in out and "#SBATCH --mem=300M" in out
    assert main(["render", "--asset", "tests.unit.test_dry_run:PAYLOADS", "x"]) == 2
    assert "not a Dagster asset" in capsys.readouterr().err


CLI_ASSET = _asset()
