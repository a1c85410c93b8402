"""Local mode end to end through Dagster (dg.materialize and the multiprocess executor)."""

import os
import stat
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import BashLauncher, ComputeResource, ConfigError, ExecLauncher, PayloadError
from dagster_hpc.backends.local import LocalBackend
from tests.unit.conftest import wait_until

PAYLOADS = Path(__file__).parent / "payloads"
# Upper bound for process start + teardown on a loaded 2-core machine.
PROCESS_TIMEOUT_S = 30


def _user_logs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Log lines (split out of grouped events) written by the step, in event order."""
    return [
        line
        for entry in instance.all_logs(run_id)
        if not entry.is_dagster_event
        for line in entry.user_message.split("\n")
    ]


def _materialize(
    assets, compute: ComputeResource, **kwargs
) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(assets, resources={"compute": compute}, instance=instance, **kwargs)
    return result, instance


def test_logs_metadata_extras_env_and_run_id_reach_dagster(tmp_path: Path) -> None:
    @dg.asset
    def reported(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context,
            PAYLOADS / "report.py",
            args=["--size", "two words"],
            extras={"greeting": "hello"},
            extra_env={"MY_SETTING": "from-extra-env"},
        ).get_results()

    result, instance = _materialize([reported], ComputeResource(base_dir=str(tmp_path)))
    assert result.success
    metadata = result.asset_materializations_for_node("reported")[0].metadata
    assert metadata["extras_seen"].value == "hello"
    assert metadata["env_seen"].value == "from-extra-env"
    assert metadata["run_id_env"].value == result.run_id
    assert metadata["args"].value == "--size two words"
    assert metadata["dagster_hpc/backend"].value == "local"
    logs = _user_logs(instance, result.run_id)
    progress = [line for line in logs if line.startswith("progress ")]
    assert progress == [f"progress {i}" for i in range(5)]
    assert "[stderr] a warning on stderr" in logs
    assert "via pipes log" in logs


def test_resource_env_is_merged_under_call_env(tmp_path: Path) -> None:
    @dg.asset
    def merged(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "report.py").get_results()

    compute = ComputeResource(base_dir=str(tmp_path), extra_env={"MY_SETTING": "from-resource"})
    result, _ = _materialize([merged], compute)
    assert (
        result.asset_materializations_for_node("merged")[0].metadata["env_seen"].value
        == "from-resource"
    )


def test_partition_key_reaches_payload_and_asset_check_result_arrives(tmp_path: Path) -> None:
    partitions = dg.StaticPartitionsDefinition(["eu", "us"])

    @dg.asset(
        partitions_def=partitions,
        check_specs=[dg.AssetCheckSpec("positive", asset="regional", blocking=True)],
    )
    def regional(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context, PAYLOADS / "report.py", extras={"with_check": True}
        ).get_results()

    @dg.asset(deps=["regional"], partitions_def=partitions)
    def downstream() -> None:
        raise AssertionError("a failed blocking check must stop the downstream asset")

    result, _ = _materialize(
        [regional, downstream],
        ComputeResource(base_dir=str(tmp_path)),
        partition_key="us",
        raise_on_error=False,
    )
    metadata = result.asset_materializations_for_node("regional")[0].metadata
    assert metadata["partition_env"].value == "us"
    assert metadata["partition_pipes"].value == "us"
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("positive", False)]
    assert checks[0].metadata["value"].value == -1
    assert not result.success  # the blocking check failed, so downstream did not run
    assert not result.asset_materializations_for_node("downstream")


def test_ten_thousand_lines_none_lost(tmp_path: Path) -> None:
    n = 10_000

    @dg.asset
    def chatty(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "many_lines.py", args=[str(n)]).get_results()

    result, instance = _materialize([chatty], ComputeResource(base_dir=str(tmp_path)))
    lines = [line for line in _user_logs(instance, result.run_id) if line.startswith("line ")]
    assert lines == [f"line {i:05d}" for i in range(n)]
    assert result.asset_materializations_for_node("chatty")[0].metadata["printed"].value == n


def test_failing_payload_names_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    @dg.asset
    def broken(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "fail.py").get_results()

    with pytest.raises(PayloadError) as info:
        _materialize([broken], ComputeResource(base_dir=str(tmp_path)))
    message = str(info.value)
    assert "exit code 3" in message and "FAILED" in message
    assert "the real reason: input file missing" in message
    assert "diagnostic line 39" in message
    assert "diagnostic line 0\n" not in message  # a tail, not the whole stream
    assert "stderr.log" in message


def test_bash_script_and_argv_payloads(tmp_path: Path) -> None:
    @dg.asset
    def shell(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run(context, PAYLOADS / "hello.sh", args=["world"])
        compute.run(
            context, ["sh", "-c", 'echo "argv says $0"', "it works"], launcher=ExecLauncher()
        )
        return dg.MaterializeResult()  # these payloads do not use Pipes

    result, instance = _materialize([shell], ComputeResource(base_dir=str(tmp_path)))
    logs = _user_logs(instance, result.run_id)
    assert "bash says world from sx" in logs  # cwd is the run dir (named after the step)
    assert "argv says it works" in logs


@pytest.mark.parametrize(
    ("kwargs", "resource", "match"),
    [
        ({"payload": PAYLOADS / "missing.py"}, {}, "is not a file"),
        ({"payload": PAYLOADS / "report.py"}, {"mode": "cloud"}, "unknown mode 'cloud'.*local"),
        ({"payload": PAYLOADS / "hello.sh", "launcher": ExecLauncher()}, {}, "not executable"),
        (
            {"payload": PAYLOADS / "report.py", "extra_env": {"N": 3}},
            {},
            "extra_env\\['N'\\] must be a string",
        ),
        ({"payload": PAYLOADS / "report.py", "args": "--flag"}, {}, "single string"),
        ({"payload": PAYLOADS / "report.py", "extras": {"x": object()}}, {}, "JSON-serializable"),
        ({"payload": []}, {}, "non-empty argv"),
        ({"payload": PAYLOADS / "report.py", "queue": {"mem": "lots"}}, {}, "mem"),
        (
            {"payload": PAYLOADS / "report.py", "queue": {"partitoin": "cpu"}},
            {},
            "unknown keyword .partitoin. \\(did you mean .partition.\\?\\)",
        ),
    ],
)
def test_bad_input_rejected_before_anything_runs(
    tmp_path: Path, kwargs: dict, resource: dict, match: str
) -> None:
    assert not os.access(PAYLOADS / "hello.sh", os.X_OK), (
        "hello.sh must stay non-executable for this test"
    )

    @dg.asset
    def bad(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run(context, **kwargs)

    with pytest.raises(ConfigError, match=match):
        _materialize([bad], ComputeResource(base_dir=str(tmp_path), **resource))
    assert list(tmp_path.iterdir()) == []  # no run directory: nothing was started


def test_executable_script_runs_directly(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho direct run ok\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    @dg.asset
    def direct(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run(context, script)
        return dg.MaterializeResult()

    result, instance = _materialize([direct], ComputeResource(base_dir=str(tmp_path / "runs")))
    assert "direct run ok" in _user_logs(instance, result.run_id)


def test_explicit_bash_launcher_runs_non_executable_script(tmp_path: Path) -> None:
    @dg.asset
    def via_bash(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run(context, PAYLOADS / "hello.sh", launcher=BashLauncher(), args=["bash"])
        return dg.MaterializeResult()

    result, _ = _materialize([via_bash], ComputeResource(base_dir=str(tmp_path)))
    assert result.success


def test_local_cancel_stops_the_whole_process_group(tmp_path: Path) -> None:
    from dagster_hpc.jobscript import render_env_file, render_job_script

    backend = LocalBackend(tmp_path)
    run_dir = backend.run_dir_for("run", "step")
    staging = backend.local_staging_dir(run_dir)
    (staging / "job.sh").write_text(render_job_script(run_dir))
    (staging / "launch.sh").write_text((PAYLOADS / "sleeper.sh").read_text())
    (staging / "env.sh").write_text(render_env_file({}))
    handle = backend.submit(str(staging), run_dir)
    wait_until(
        lambda: "started" in _read(Path(run_dir) / "stdout.log"),
        timeout_s=PROCESS_TIMEOUT_S,
        what="the payload to start",
    )
    assert backend.poll(handle).state.value == "RUNNING"
    backend.cancel(handle)
    assert backend.poll(handle).state.finished
    alive = subprocess.run(["pgrep", "-g", handle.job_id], capture_output=True, text=True)
    assert alive.stdout.strip() == ""  # the payload's `sleep` died with its wrapper


def test_multiprocess_executor_runs_each_step_in_its_own_process(tmp_path: Path) -> None:
    from tests.unit import mp_defs

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.execute_job(dg.reconstructable(mp_defs.mp_job), instance=instance) as result:
            assert result.success
            pids = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
            assert len(pids) == 2 and os.getpid() not in pids
            for name in ("mp_one", "mp_two"):
                metadata = result.asset_materializations_for_node(name)[0].metadata
                assert metadata["extras_seen"].value == name


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_interrupting_the_dagster_process_cancels_the_job(tmp_path: Path) -> None:
    """Dagster turns run termination into an interrupt in the step: the job must not outlive it."""
    import signal
    import sys

    pids_file = tmp_path / "pids"
    driver = subprocess.Popen(
        [
            sys.executable,
            str(PAYLOADS / "interrupt_driver.py"),
            str(PAYLOADS / "long_running.sh"),
            str(tmp_path / "runs"),
            str(pids_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until(pids_file.exists, timeout_s=PROCESS_TIMEOUT_S * 3, what="the payload to start")
    payload_pid, sleep_pid = (int(p) for p in pids_file.read_text().split())
    assert _alive(payload_pid) and _alive(sleep_pid)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=PROCESS_TIMEOUT_S * 2)
    assert b"cancelling local job" in stderr
    wait_until(
        lambda: not _alive(payload_pid) and not _alive(sleep_pid),
        timeout_s=PROCESS_TIMEOUT_S,
        what="the payload and its child to die",
    )


def test_log_lines_reach_dagster_while_the_job_still_runs(tmp_path: Path) -> None:
    """The payload only finishes after the test saw its first line in Dagster's event log."""
    import threading

    flag = tmp_path / "flag"
    instance = dg.DagsterInstance.ephemeral()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for run in instance.get_runs():
                if any(
                    "waiting for flag" in e.user_message
                    for e in instance.all_logs(run.run_id)
                    if not e.is_dagster_event
                ):
                    assert not list(tmp_path.glob("runs/*/*/exit_code"))  # the job is still running
                    flag.touch()
                    return
            time.sleep(0.02)

    @dg.asset
    def live(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context, PAYLOADS / "wait_for_flag.py", args=[str(flag)]
        ).get_results()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = dg.materialize(
            [live],
            resources={"compute": ComputeResource(base_dir=str(tmp_path / "runs"))},
            instance=instance,
        )
    finally:
        done.set()
        watcher.join()
    assert flag.exists()
    assert result.asset_materializations_for_node("live")[0].metadata["saw_flag"].value is True


def test_extra_files_are_shipped_next_to_the_payload(tmp_path: Path) -> None:
    extra = PAYLOADS / "extra"

    @dg.asset
    def with_files(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(
            context,
            PAYLOADS / "uses_helper.py",
            extra_files=[extra / "helper.py", extra / "settings.txt"],
        ).get_results()

    result, _ = _materialize([with_files], ComputeResource(base_dir=str(tmp_path)))
    metadata = result.asset_materializations_for_node("with_files")[0].metadata
    assert (metadata["answer"].value, metadata["data"].value) == (42, "mode=fast")


@pytest.mark.parametrize(
    ("files", "match"),
    [
        (["extra/job.sh"], "clashes"),
        (["extra/helper.py", "extra/helper.py"], "clashes"),
        (["extra/nope.txt"], "is not a file"),
        ("extra/helper.py", "single path"),
    ],
)
def test_bad_extra_files_rejected_before_anything_runs(tmp_path: Path, files, match: str) -> None:
    paths = [PAYLOADS / f for f in files] if isinstance(files, list) else str(PAYLOADS / files)

    @dg.asset
    def bad_files(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run(context, PAYLOADS / "report.py", extra_files=paths)

    with pytest.raises(ConfigError, match=match):
        _materialize([bad_files], ComputeResource(base_dir=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_a_rejected_pipes_message_fails_the_step_and_cancels_the_job(tmp_path: Path) -> None:
    @dg.asset
    def owner(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "bad_report.py").get_results()

    started = time.monotonic()
    result, instance = _materialize(
        [owner], ComputeResource(base_dir=str(tmp_path)), raise_on_error=False
    )
    assert not result.success
    assert time.monotonic() - started < PROCESS_TIMEOUT_S * 2  # did not wait for the 120 s sleep
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("cancelling local job" in m for m in logs)
    assert (
        "Unknown message method: no_such_method"
        in result.failure_data_for_node("owner").error.to_string()
    )


def test_plain_ops_can_run_payloads_too(tmp_path: Path) -> None:
    @dg.op
    def shell_op(context: dg.OpExecutionContext, compute: ComputeResource) -> None:
        compute.run(context, ["sh", "-c", 'echo "op run $DAGSTER_HPC_RUN_ID"'])

    @dg.job(resource_defs={"compute": ComputeResource(base_dir=str(tmp_path))})
    def op_job() -> None:
        shell_op()

    instance = dg.DagsterInstance.ephemeral()
    result = op_job.execute_in_process(instance=instance)
    assert result.success
    assert f"op run {result.run_id}" in _user_logs(instance, result.run_id)
