from __future__ import annotations

import sys
from pathlib import Path

from dagster_hpc.cli import main
from dagster_hpc.jobscript import render_job_script

PAYLOADS = Path(__file__).parent / "payloads"


def test_render_prints_the_job_and_launch_scripts(capsys) -> None:
    rc = main(
        [
            "render",
            "--run-dir",
            "/scratch/r 1",
            str(PAYLOADS / "report.py"),
            "--",
            "--size",
            "two words",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    job, launch = out.split("# ===== launch.sh =====\n")
    assert job == "# ===== job.sh =====\n" + render_job_script("/scratch/r 1") + "\n"
    assert launch.endswith(f"exec {sys.executable} -u ./report.py --size 'two words'\n")


def test_render_slurm_mode_adds_sbatch_lines_from_queue_overrides(capsys, monkeypatch) -> None:
    for var in ("DAGSTER_HPC_SLURM_PARTITION", "DAGSTER_HPC_SLURM_MEM", "DAGSTER_HPC_SLURM_PYTHON"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DAGSTER_HPC_SSH_HOST", "login.example.org")
    rc = main(
        [
            "render",
            str(PAYLOADS / "hello.sh"),
            "--mode",
            "slurm",
            "--queue",
            "mem=2G",
            "--queue",
            "partition=gpu",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "#SBATCH --mem=2G" in out and "#SBATCH --partition=gpu" in out
    assert "exec bash ./hello.sh" in out


def test_render_rejects_bad_input_with_a_clear_message(capsys) -> None:
    assert main(["render", str(PAYLOADS / "missing.py")]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert main(["render", str(PAYLOADS / "report.py"), "--queue", "mem"]) == 2
    assert "--queue takes KEY=VALUE" in capsys.readouterr().err
    assert main(["render", str(PAYLOADS / "report.py"), "--mode", "cloud"]) == 2
    assert "unknown mode" in capsys.readouterr().err
