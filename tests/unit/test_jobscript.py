from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from dagster_hpc.errors import ConfigError
from dagster_hpc.jobscript import render_env_file, render_job_script
from dagster_hpc.rundir import ENV_FILE, EXIT_CODE, JOB_SCRIPT, LAUNCH_SCRIPT, STDERR, STDOUT
from tests.unit.conftest import wait_until
from tests.unit.golden import assert_golden

# Long enough for a loaded 2-core machine to start bash; short enough to keep the suite fast.
SIGNAL_TEST_TIMEOUT_S = 20


def test_job_script_golden_plain() -> None:
    assert_golden("job_plain.sh", render_job_script("/scratch/runs/r1/step a"))


def test_job_script_golden_with_slurm_header() -> None:
    header = ["#SBATCH --job-name=dagster-hpc", "#SBATCH --time=00:10:00"]
    assert_golden("job_sbatch.sh", render_job_script("/scratch/runs/r1", header_lines=header))


@pytest.mark.parametrize("bad", ["--time=10", "#SBATCH --x\nrm -rf /", "#ok\r"])
def test_bad_header_lines_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="single comment lines"):
        render_job_script("/abs", header_lines=[bad])


def test_relative_run_dir_rejected() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        render_job_script("relative/dir")


def test_env_file_quotes_values_and_rejects_bad_names() -> None:
    text = render_env_file({"TOKEN": "s3cr3t'; echo pwned", "EMPTY": ""})
    assert "export TOKEN='s3cr3t'\"'\"'; echo pwned'" in text
    with pytest.raises(ConfigError, match="not valid"):
        render_env_file({"1BAD": "x"})
    with pytest.raises(ConfigError, match="not valid"):
        render_env_file({"A;B": "x"})


def _make_run_dir(tmp_path: Path, launch: str, env: dict[str, str]) -> Path:
    run_dir = tmp_path / "run dir"
    run_dir.mkdir()
    (run_dir / JOB_SCRIPT).write_text(render_job_script(str(run_dir)))
    (run_dir / LAUNCH_SCRIPT).write_text(launch)
    (run_dir / ENV_FILE).write_text(render_env_file(env))
    return run_dir


def test_wrapper_sources_env_records_exit_code_and_keeps_secrets_out(tmp_path: Path) -> None:
    launch = 'echo "secret=$MY_SECRET unbuffered=$PYTHONUNBUFFERED"\necho oops >&2\nexit 3\n'
    run_dir = _make_run_dir(tmp_path, launch, {"MY_SECRET": "hunter2 $(id)"})
    proc = subprocess.run(
        ["bash", str(run_dir / JOB_SCRIPT)], capture_output=True, timeout=SIGNAL_TEST_TIMEOUT_S
    )
    assert proc.returncode == 3
    assert (run_dir / EXIT_CODE).read_text() == "3\n"
    assert (run_dir / STDOUT).read_text() == "secret=hunter2 $(id) unbuffered=1\n"
    assert (run_dir / STDERR).read_text() == "oops\n"
    assert "hunter2" not in (run_dir / JOB_SCRIPT).read_text()
    assert not list(run_dir.glob(f"{EXIT_CODE}.tmp"))


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM])
def test_wrapper_forwards_signals_to_the_payload(tmp_path: Path, sig: signal.Signals) -> None:
    name = sig.name.removeprefix("SIG")
    launch = f"trap 'echo got-{name}; exit 42' {name}\necho ready\nwhile :; do sleep 0.05; done\n"
    run_dir = _make_run_dir(tmp_path, launch, {})
    proc = subprocess.Popen(["bash", str(run_dir / JOB_SCRIPT)])
    wait_until(
        lambda: "ready" in _read(run_dir / STDOUT),
        timeout_s=SIGNAL_TEST_TIMEOUT_S,
        what="the payload to trap its signals",
    )
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=SIGNAL_TEST_TIMEOUT_S) == 42
    assert f"got-{name}" in _read(run_dir / STDOUT)
    assert (run_dir / EXIT_CODE).read_text() == "42\n"


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
