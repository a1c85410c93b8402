"""Session mode, hetjobs and GPU checks: the pure parts (scripts, validation, parsing)."""

import shutil
import subprocess

import pytest

from dagster_hpc.allocation.array import render_array_script
from dagster_hpc.allocation.hetjob import render_hetjob_script
from dagster_hpc.allocation.session import (
    SessionConfig,
    agent_text,
    allocation_dir,
    check_session,
    render_holder_script,
    session_job_name,
)
from dagster_hpc.backends.slurm_gres import check_partition_gpus, partition_gpus
from dagster_hpc.errors import ConfigError
from dagster_hpc.queue import QueueConfig


def test_holder_script_runs_the_agent_with_quoted_options() -> None:
    cfg = SessionConfig(idle_timeout_s=30, step_options=["--exact", "--mem=1G"])
    text = render_holder_script(
        queue=QueueConfig(ntasks=4, time_limit="10"),
        name=session_job_name("run", "abcdef123456"),
        config=cfg,
    )
    assert "#SBATCH --job-name=dhpc-session-run-abcdef12\n" in text
    assert "#SBATCH --output=agent.log\n" in text
    assert "#SBATCH --ntasks=4" in text
    assert text.rstrip().endswith("exec bash ./agent.sh 30 0.2 --exact --mem=1G")


def test_array_hetjob_and_session_headers_say_no_requeue_unless_asked() -> None:
    """Slurm requeues a batch job whose node fails (JobRequeue=1 by default): an array task, a
    hetjob or a session allocation would then run again behind the step. Same rule as a single
    job's header: --no-requeue unless the request says either way."""
    session = SessionConfig(idle_timeout_s=30)
    het = [QueueConfig(partition="debug"), QueueConfig(partition="gpu", gpus_per_node=1)]
    plain = {
        "array": render_array_script(run_dir="/r", tasks=[0, 1], queue=QueueConfig(), step="s"),
        "hetjob": render_hetjob_script(run_dir="/r", queues=het, step="s"),
        "session": render_holder_script(queue=QueueConfig(), name="n", config=session),
    }
    for kind, text in plain.items():
        head = text.split("#SBATCH hetjob")[0]  # job-wide: in a hetjob's first block
        assert head.count("#SBATCH --no-requeue\n") == 1, kind
    said = QueueConfig(extra_directives=["--requeue"])
    asked = {
        "array": render_array_script(run_dir="/r", tasks=[0], queue=said, step="s"),
        "hetjob": render_hetjob_script(run_dir="/r", queues=[het[0], said], step="s"),
        "session": render_holder_script(queue=said, name="n", config=session),
    }
    for kind, text in asked.items():
        assert "--no-requeue" not in text and "#SBATCH --requeue\n" in text, kind


def test_session_config_is_validated() -> None:
    for bad, match in (
        (SessionConfig(idle_timeout_s=0), "idle_timeout_s"),
        (SessionConfig(group="a b"), "group"),
        (SessionConfig(step_options=["rm -rf"]), "srun option"),
        (SessionConfig(queue={"nodes": -1}), "nodes"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_session(bad)


def test_a_session_steps_run_dir_leads_back_to_its_session_dir() -> None:
    assert allocation_dir("/b/run/session-run-ab12/steps/s0-cd34") == "/b/run/session-run-ab12"
    with pytest.raises(ConfigError, match="not the run directory of a session step"):
        allocation_dir("/b/run/s0-cd34")


def test_reattach_decision_names_the_session_step() -> None:
    from dagster_hpc.backends.base import JobHandle, JobState
    from dagster_hpc.backends.slurm_reattach import JobProbe, decide

    handle = JobHandle("slurm-session", "77", "/s/steps/a-1", "c")
    where = "session step in allocation 77 (run dir /s/steps/a-1)"
    running = decide(handle, JobProbe(JobState.RUNNING, None, True), where=where)
    assert running.reattach and running.message == f"reattaching to {where}: it is RUNNING"
    failed = decide(handle, JobProbe(None, 3, True), where=where)
    assert not failed.reattach and "exit code 3" in failed.message
    gone = decide(handle, JobProbe(None, None, True), where=where)  # the allocation ended first
    assert not gone.reattach


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_agent_script_is_shellcheck_clean(tmp_path) -> None:
    path = tmp_path / "agent.sh"
    path.write_text(agent_text())
    subprocess.run(["shellcheck", "-S", "warning", str(path)], check=True)


def test_hetjob_script_starts_every_component_and_waits() -> None:
    text = render_hetjob_script(
        run_dir="/r/x",
        queues=[QueueConfig(partition="debug"), QueueConfig(partition="gpu", gpus_per_node=1)],
        step="s",
    )
    head, body = text.split("# dagster-hpc hetjob", 1)
    assert head.count("#SBATCH hetjob") == 1
    assert (
        head.index("--partition=debug")
        < head.index("#SBATCH hetjob")
        < head.index("--partition=gpu")
    )
    assert "srun --het-group=0 --ntasks=1 --nodes=1 bash /r/x/t/0/job.sh &" in body
    assert "srun --het-group=1 --ntasks=1 --nodes=1 bash /r/x/t/1/job.sh &" in body
    assert 'wait "$p"' in body
    with pytest.raises(ConfigError, match="at least 2"):
        render_hetjob_script(run_dir="/r", queues=[QueueConfig()], step="s")


def test_gpu_requests_are_checked_against_the_partition() -> None:
    text = "debug;(null),gpu;gpu:2,big;gpu:a100:4(S:0-1),"
    assert partition_gpus(text) == {"debug": {}, "gpu": {"": 2}, "big": {"a100": 4, "": 4}}
    kw = {"cluster": "c"}
    check_partition_gpus(text, gpus_per_node=2, gres_type=None, partition="gpu", **kw)
    check_partition_gpus(text, gpus_per_node=None, gres_type=None, partition="debug", **kw)
    with pytest.raises(ConfigError, match=r"no nodes with GPUs: use a GPU partition \(big, gpu\)"):
        check_partition_gpus(text, gpus_per_node=1, gres_type=None, partition="debug", **kw)
    with pytest.raises(ConfigError, match="at most 2"):
        check_partition_gpus(text, gpus_per_node=3, gres_type=None, partition="gpu", **kw)
    with pytest.raises(ConfigError, match="a100 GPUs"):
        check_partition_gpus(text, gpus_per_node=1, gres_type="a100", partition="gpu", **kw)
