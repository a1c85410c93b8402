"""srun/MPI, torchrun and Ray launchers: golden scripts, bad input, and the generated scripts
really run in local mode (bash, real processes; Ray through a fake `ray` that records its pids)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import ComputeResource
from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers import LaunchRequest, RayLauncher, SrunLauncher, TorchrunLauncher
from dagster_hpc.launchers.command import payload_command
from dagster_hpc.launchers.ray_script import EXIT_RAY_NOT_UP, RAY_TEMP_ROOT_MAX
from dagster_hpc.launchers.torchrun import EXIT_NO_TORCH
from tests.unit.golden import assert_golden

AWKWARD_ARGS = ("plain", "two words", "it's $HOME; rm -rf /", "--flag=`id`")
FAKES = Path(__file__).parent / "launcher_payloads"
FAKE_RAY = FAKES / "fake-ray"
# Upper bound for a generated script to start and end its processes on a loaded 2-core machine.
SCRIPT_TIMEOUT_S = 60
TEST_NODE_IP = "echo 127.0.0.$((10 + ${SLURMD_NODENAME#node}))"


def _run_local(
    tmp_path: Path,
    script: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = SCRIPT_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run a launch script the way the job wrapper does, outside any Slurm allocation."""
    (tmp_path / "launch.sh").write_text(script)
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(env or {})
    return subprocess.run(
        ["bash", "launch.sh"],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# A killed process may take a moment to disappear (teardown, reaping by init).
GONE_TIMEOUT_S = 5


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def _gone(*pids: int) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- golden scripts --------------------------------------------------------------------------


def test_srun_launcher_golden() -> None:
    launcher = SrunLauncher(
        ntasks=4, cpus_per_task=2, mpi="pmix", srun_options=("--cpu-bind=cores",)
    )
    req = LaunchRequest(payload="solve mpi.py", args=AWKWARD_ARGS, python="/opt/env/bin/python")
    assert_golden("launch_srun.sh", launcher.render(req))


def test_srun_launcher_inherits_allocation_golden() -> None:
    req = LaunchRequest(argv=("./a.out", "--in", "x y"))
    assert_golden("launch_srun_inherit.sh", SrunLauncher().render(req))


def test_srun_launcher_local_mpirun_golden() -> None:
    req = LaunchRequest(payload="ring.sh")
    assert_golden(
        "launch_srun_mpirun.sh", SrunLauncher(ntasks_per_node=2, local="mpirun").render(req)
    )


def test_torchrun_launcher_golden() -> None:
    launcher = TorchrunLauncher(
        torchrun_args=("--max-restarts=2",), srun_options=("--cpu-bind=none",)
    )
    req = LaunchRequest(payload="train.py", args=AWKWARD_ARGS, python="/opt/env/bin/python")
    assert_golden("launch_torchrun.sh", launcher.render(req))


def test_torchrun_launcher_node_ip_command_golden() -> None:
    """Node names that do not resolve: the first node's address is the rendezvous endpoint and
    every node's address its --local-addr."""
    req = LaunchRequest(payload="train.py", python="/opt/env/bin/python")
    assert_golden(
        "launch_torchrun_node_ip.sh", TorchrunLauncher(node_ip_command=TEST_NODE_IP).render(req)
    )


def test_torchrun_fixed_nproc_per_node() -> None:
    text = TorchrunLauncher(nproc_per_node=8).render(LaunchRequest(payload="t.py"))
    assert "dhpc_nproc=8\n" in text
    assert "SLURM_GPUS_ON_NODE" not in text


def test_ray_launcher_golden() -> None:
    launcher = RayLauncher(
        node_ip_command=TEST_NODE_IP, ray_start_args=("--include-dashboard=false",)
    )
    req = LaunchRequest(payload="pipeline.py", args=AWKWARD_ARGS, python="/opt/env/bin/python")
    assert_golden("launch_ray.sh", launcher.render(req))


def test_ray_launcher_without_node_ip_command_uses_the_head_name() -> None:
    text = RayLauncher().render(LaunchRequest(payload="p.py"))
    assert "dhpc_head_ip=$dhpc_head" in text
    assert "--node-ip-address" not in text
    assert "ray stop" not in text


@pytest.mark.parametrize(
    ("payload", "argv", "expected"),
    [
        ("a.py", (), "py -u ./a.py x"),
        ("b.sh", (), "bash ./b.sh x"),
        ("tool", (), "./tool x"),
        (None, ("echo", "a b"), "echo 'a b' x"),
    ],
)
def test_payload_command_by_kind(payload, argv, expected) -> None:
    assert (
        payload_command(LaunchRequest(payload=payload, argv=argv, args=("x",), python="py"))
        == expected
    )


# --- bad input: ConfigError at construction / before anything runs ----------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ntasks": 0}, "ntasks=0 must be a positive"),
        ({"ntasks_per_node": True}, "ntasks_per_node=True"),
        ({"cpus_per_task": "2"}, "cpus_per_task='2'"),
        ({"mpi": "pmix; rm -rf /"}, "not an srun MPI plugin"),
        ({"local": "ssh"}, "unknown local .ssh.: use one of .tasks., .mpirun."),
        ({"srun_options": "--exclusive"}, "single string"),
        ({"srun_options": ("--cpu-bind=cores; id",)}, "cannot be passed safely"),
        ({"srun_options": ("-N2",)}, "cannot be passed safely"),
        ({"srun_options": ("--output=x.log",)}, "set by the launcher"),
        ({"srun_options": ("--ntasks=3",)}, "set by the launcher"),
        ({"srun_options": ("--mpi=pmi2",)}, "set by the launcher"),
    ],
)
def test_srun_launcher_rejects_bad_input(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SrunLauncher(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nproc_per_node": 0}, "nproc_per_node=0"),
        ({"torchrun_args": ("--nnodes=4",)}, "not allowed"),
        ({"torchrun_args": ("--rdzv_endpoint=x:1",)}, "not allowed"),
        ({"torchrun_args": ("train.py",)}, "not allowed"),
        ({"torchrun_args": "--max-restarts=1"}, "single string"),
        ({"srun_options": ("--ntasks-per-node=2",)}, "set by the launcher"),
        ({"node_ip_command": "hostname -i\nrm -rf /"}, "one-line shell command"),
        ({"node_ip_command": ""}, "one-line shell command"),
    ],
)
def test_torchrun_launcher_rejects_bad_input(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TorchrunLauncher(**kwargs)


def test_torchrun_needs_a_python_file(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("echo hi\n")
    with pytest.raises(ConfigError, match="not a .py file"):
        TorchrunLauncher().check_payload(script)
    TorchrunLauncher().check_payload(tmp_path / "train.py")
    with pytest.raises(ConfigError, match="runs a .py training script"):
        TorchrunLauncher().render(LaunchRequest(argv=("python", "train.py")))


def test_torchrun_bad_payload_fails_in_run_before_anything_runs(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("touch ran\n")

    @dg.asset
    def trained(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, script, launcher=TorchrunLauncher()).get_results()

    result = dg.materialize(
        [trained],
        resources={"compute": ComputeResource(base_dir=str(tmp_path / "runs"))},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error
    while error.cause is not None and error.cls_name != "ConfigError":
        error = error.cause
    assert error.cls_name == "ConfigError" and "not a .py file" in error.message
    assert not (tmp_path / "runs").exists(), (
        "nothing may be staged for a payload the launcher rejects"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"node_ip_command": "echo a\necho b"}, "one-line shell command"),
        ({"node_ip_command": "  "}, "one-line shell command"),
        ({"ray": ""}, "ray executable"),
        ({"join_timeout_s": 0}, "join_timeout_s=0"),
        ({"stop_grace_s": -1}, "stop_grace_s=-1"),
        ({"stop_grace_s": True}, "stop_grace_s=True"),
        ({"ray_start_args": ("--head",)}, "set by the launcher"),
        ({"ray_start_args": ("--temp-dir=/tmp/x",)}, "set by the launcher"),
        ({"ray_start_args": ("object-store",)}, "must be one --option"),
        ({"ray_start_args": "--num-cpus=2"}, "single string"),
        ({"srun_options": ("--exclude=node1",)}, "set by the launcher"),
    ],
)
def test_ray_launcher_rejects_bad_input(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        RayLauncher(**kwargs)


# --- srun launcher, local mode: real processes -----------------------------------------------


def test_srun_local_mode_starts_every_task_with_slurm_variables(tmp_path: Path) -> None:
    req = LaunchRequest(
        argv=(
            "bash",
            "-c",
            'echo "$SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SLURM_NTASKS" > rank-$SLURM_PROCID',
        )
    )
    done = _run_local(tmp_path, SrunLauncher(ntasks=3).render(req))
    assert done.returncode == 0, done.stderr
    assert sorted(p.read_text().strip() for p in tmp_path.glob("rank-*")) == [
        "0 0 0 3",
        "1 1 0 3",
        "2 2 0 3",
    ]


def test_srun_local_mode_single_task_runs_in_place(tmp_path: Path) -> None:
    req = LaunchRequest(argv=("bash", "-c", 'echo "$SLURM_PROCID/$SLURM_NTASKS"; exit 5'))
    done = _run_local(tmp_path, SrunLauncher().render(req))
    assert (done.returncode, done.stdout) == (5, "0/1\n")


def test_srun_local_mode_a_failed_task_ends_the_others(tmp_path: Path) -> None:
    """Like --kill-on-bad-exit=1: rank 1 fails at once, ranks 0 and 2 would sleep 300 s."""
    body = 'if [ "$SLURM_PROCID" = 1 ]; then exit 7; fi; exec sleep 300'
    start = time.monotonic()
    done = _run_local(
        tmp_path, SrunLauncher(ntasks=3).render(LaunchRequest(argv=("bash", "-c", body)))
    )
    assert done.returncode == 7, done.stderr
    assert time.monotonic() - start < 10


def test_srun_local_mode_forwards_term_to_every_task(tmp_path: Path) -> None:
    body = 'trap "echo got-term > term-$SLURM_PROCID; kill $!; exit 0" TERM; echo up > up-$SLURM_PROCID; sleep 300 & wait'
    (tmp_path / "launch.sh").write_text(
        SrunLauncher(ntasks=2).render(LaunchRequest(argv=("bash", "-c", body)))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.Popen(["bash", "launch.sh"], cwd=tmp_path, env=env)
    deadline = time.monotonic() + SCRIPT_TIMEOUT_S
    while len(list(tmp_path.glob("up-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=SCRIPT_TIMEOUT_S) == 0
    assert sorted(p.name for p in tmp_path.glob("term-*")) == ["term-0", "term-1"]


def test_srun_launcher_same_asset_runs_in_local_mode(tmp_path: Path) -> None:
    """The payload of the 2-node Slurm test, unchanged, through ComputeResource in local mode."""

    @dg.asset
    def ranks(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context, FAKES / "ranks.py", launcher=SrunLauncher(ntasks=2)
        ).get_results()

    result = dg.materialize([ranks], resources={"compute": ComputeResource(base_dir=str(tmp_path))})
    metadata = result.asset_materializations_for_node("ranks")[0].metadata
    assert metadata["procids"].value == [0, 1]
    assert metadata["ntasks"].value == 2
    assert metadata["pids"].value == 2


# --- torchrun launcher, local mode -------------------------------------------------------------


def test_torchrun_without_torch_says_so(tmp_path: Path) -> None:
    """The interpreter has no torch: exit 94 and a message naming the interpreter, nothing else runs."""
    (tmp_path / "train.py").write_text("open('ran', 'w').close()\n")
    done = _run_local(
        tmp_path,
        TorchrunLauncher().render(LaunchRequest(payload="train.py", python=sys.executable)),
    )
    assert done.returncode == EXIT_NO_TORCH
    assert f"needs PyTorch in {sys.executable}" in done.stderr
    assert not (tmp_path / "ran").exists()


# --- Ray launcher, local mode, fake `ray` (records argv and pids) -------------------------------


def _ray_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(FAKES), "FAKE_RAY_LOG": str(tmp_path / "fake-ray-log"), **extra}


def _ray_script(tmp_path: Path, launcher: RayLauncher, *args: str) -> str:
    (tmp_path / "ray_payload.py").write_text((FAKES / "ray_payload.py").read_text())
    return launcher.render(
        LaunchRequest(payload="ray_payload.py", args=args, python=sys.executable)
    )


def _records(tmp_path: Path, kind: str) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted((tmp_path / "fake-ray-log").glob(f"{kind}-*.json"))
    ]


def test_ray_local_mode_runs_payload_against_its_own_head_and_stops_it(tmp_path: Path) -> None:
    script = _ray_script(tmp_path, RayLauncher(ray=str(FAKE_RAY)), "--exit", "4")
    done = _run_local(tmp_path, script, env=_ray_env(tmp_path))
    assert done.returncode == 4, done.stderr  # the payload's exit code, after the shutdown
    (head,) = _records(tmp_path, "start")
    port = next(a.split("=", 1)[1] for a in head["argv"] if a.startswith("--port="))
    assert head["argv"][:3] == ["start", "--head", "--block"]
    temp = next(a.split("=", 1)[1] for a in head["argv"] if a.startswith("--temp-dir="))
    # this run dir is too long for Ray's 107-byte socket paths: the temp dir moves to /tmp
    assert len(f"{tmp_path}/ray-cluster") > RAY_TEMP_ROOT_MAX
    assert temp.startswith(f"{os.environ.get('TMPDIR', '/tmp')}/dhpc-ray-") and temp.endswith(
        "/head"
    ), temp
    assert head["drain_timeout"] == "0", "Ray's 30 s drain on TERM is skipped"
    assert not Path(temp).parent.exists(), "the temp dir outside the run dir is removed"
    kept = tmp_path / "ray-cluster" / "logs-head" / "raylet.out"
    assert kept.read_text() == f"fake raylet of {head['pid']}\n", "Ray's logs stay with the run"
    assert head["pgid"] == head["pid"], "the head must run in its own process group"
    assert head["ray_address"] is None
    seen = json.loads((tmp_path / "payload-seen.json").read_text())
    assert seen == {"ray_address": f"127.0.0.1:{port}", "hosts": [head["host"]], "nodes": 1}
    assert [t["pid"] for t in _records(tmp_path, "term")] == [head["pid"]]
    assert _gone(head["pid"], head["child"])
    assert "killing it" not in done.stderr


def test_ray_temp_dir_stays_in_a_short_run_dir() -> None:
    """A run dir short enough for Ray's socket paths keeps the temp dirs (and Ray's logs)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp", prefix="r") as short:
        run = Path(short)
        script = _ray_script(run, RayLauncher(ray=str(FAKE_RAY)))
        done = _run_local(run, script, env=_ray_env(run))
        assert done.returncode == 0, done.stderr
        (head,) = _records(run, "start")
        assert f"--temp-dir={run}/ray-cluster/head" in head["argv"]
        assert (run / "ray-cluster" / "head" / "session_latest" / "logs" / "raylet.out").exists()


def test_ray_shutdown_kills_a_head_that_ignores_term_after_the_grace_period(tmp_path: Path) -> None:
    script = _ray_script(tmp_path, RayLauncher(ray=str(FAKE_RAY), stop_grace_s=1))
    start = time.monotonic()
    done = _run_local(tmp_path, script, env=_ray_env(tmp_path, FAKE_RAY_IGNORE_TERM="1"))
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    (head,) = _records(tmp_path, "start")
    assert (
        f"Ray process group {head['pid']} still running after the stop request and its grace period: killing it"
        in done.stderr
    )
    assert _gone(head["pid"], head["child"])
    assert elapsed < 1 + 10, f"shutdown took {elapsed:.1f} s"


def test_ray_join_timeout_stops_the_cluster_and_never_runs_the_payload(tmp_path: Path) -> None:
    script = _ray_script(tmp_path, RayLauncher(ray=str(FAKE_RAY), join_timeout_s=1.5))
    done = _run_local(tmp_path, script, env=_ray_env(tmp_path, FAKE_RAY_HIDE_NODES="1"))
    assert done.returncode == EXIT_RAY_NOT_UP
    assert "0 of 1 Ray nodes joined within 1.5 s" in done.stderr
    assert "did not come up" in done.stderr and "ray-cluster/head.log" in done.stderr
    assert not (tmp_path / "payload-seen.json").exists()
    (head,) = _records(tmp_path, "start")
    assert _gone(head["pid"], head["child"])


def test_ray_head_that_cannot_start_fails_fast(tmp_path: Path) -> None:
    script = _ray_script(tmp_path, RayLauncher(ray=str(FAKE_RAY)))
    start = time.monotonic()
    done = _run_local(tmp_path, script, env=_ray_env(tmp_path, FAKE_RAY_FAIL="1"))
    assert done.returncode == EXIT_RAY_NOT_UP
    assert "exited before the cluster was up" in done.stderr
    assert time.monotonic() - start < 15  # not the 120 s join timeout


def test_ray_cancel_during_the_run_forwards_term_then_stops_the_cluster(tmp_path: Path) -> None:
    (tmp_path / "wait.py").write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (open('payload-term', 'w').close(), sys.exit(143)))\n"
        "open('payload-up', 'w').close()\n"
        "time.sleep(300)\n"
    )
    (tmp_path / "launch.sh").write_text(
        RayLauncher(ray=str(FAKE_RAY)).render(
            LaunchRequest(payload="wait.py", python=sys.executable)
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | _ray_env(tmp_path)
    proc = subprocess.Popen(["bash", "launch.sh"], cwd=tmp_path, env=env)
    deadline = time.monotonic() + SCRIPT_TIMEOUT_S
    while not (tmp_path / "payload-up").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=SCRIPT_TIMEOUT_S) == 143
    assert (tmp_path / "payload-term").exists()
    (head,) = _records(tmp_path, "start")
    assert _gone(head["pid"], head["child"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("srun", 'exec "${dhpc_srun[@]}" -- '),
        ("torchrun", "-m torch.distributed.run"),
        ("ray", "start --head --block"),
    ],
)
def test_cli_render_shows_the_hpc_launchers(name, expected, capsys) -> None:
    from dagster_hpc.cli import main

    assert main(["render", "--launcher", name, str(FAKES / "ranks.py")]) == 0
    launch = capsys.readouterr().out.split("# ===== launch.sh =====\n", 1)[1]
    assert (
        launch.splitlines()[1]
        == f"# generated by dagster-hpc ({name} launcher): runs the payload inside the job"
    )
    assert expected in launch
