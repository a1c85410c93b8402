"""Job arrays: the pure parts (chunking, scripts, batched reads) and the local mode end to end
(the same run dir and wrappers as on Slurm, run by a local process pool)."""

import json
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.allocation.array import (
    chunks,
    parse_arrays_file,
    render_array_script,
    script_tasks,
    submit_command,
    unrecorded_chunks,
)
from dagster_hpc.allocation.batchread import parse_changed, read_changed
from dagster_hpc.allocation.tasks import TaskChannel, TaskItem, TaskReader, normalize_items
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import ConfigError, PayloadError, TransportError
from dagster_hpc.queue import QueueConfig
from dagster_hpc.transport.local import LocalTransport

PAYLOAD = Path(__file__).parents[1] / "integration" / "slurm_payloads" / "partition.py"


def test_chunks_respect_max_array_size() -> None:
    parts = chunks(range(100), 40)
    assert [len(c) for c in parts] == [40, 40, 20]
    assert parts[2][0] == 80 and parts[2][-1] == 99
    assert chunks([3, 17], 40) == [[3, 17]]
    with pytest.raises(ConfigError):
        chunks([1], 0)


def test_array_script_maps_array_index_to_task_through_a_list() -> None:
    text = render_array_script(
        run_dir="/r/un dir", tasks=[3, 17], queue=QueueConfig(time_limit="5"), step="s", throttle=4
    )
    assert "#SBATCH --array=0-1%4\n" in text
    assert "#SBATCH --output=slurm-%A_%a.log\n" in text
    assert "TASKS=(3 17)\n" in text
    assert ". '/r/un dir'/t/\"$i\"/job.sh\n" in text
    with pytest.raises(ConfigError, match="throttle"):
        render_array_script(run_dir="/r", tasks=[1], queue=QueueConfig(), step="s", throttle=0)
    cmd = submit_command("/r", [("array.a.0.sh", [3, 17])])
    assert "sbatch --parsable array.a.0.sh" in cmd and "arrays.txt" in cmd
    assert parse_arrays_file("12 array.a.0.sh 3 17\n13;c array.a.1.sh 4\n") == [("12", [3, 17])]
    assert cmd.index("flock") < cmd.index("sbatch")  # a reattach waits for a submission in flight
    assert script_tasks(text) == [3, 17] and script_tasks("#!/bin/bash\n") is None


def test_chunks_submitted_but_not_recorded_are_found_by_their_script() -> None:
    rows = [
        ("12", "RUNNING", "/r/array.a.0.sh"),  # recorded in arrays.txt
        ("13", "PENDING", "/r/array.a.1.sh"),  # submitted, then the connection dropped
        ("13", "RUNNING", "/r/array.a.1.sh"),  # (one squeue row per task)
        ("14", "RUNNING", "/r2/array.a.0.sh"),  # another run dir's
        ("15", "RUNNING", "/r/job.sh"),  # not a chunk script
    ]
    assert unrecorded_chunks(rows, "/r/", {"12"}) == {"13": "/r/array.a.1.sh"}


def test_items_are_validated_before_anything_runs() -> None:
    assert [i.key for i in normalize_items([{"lr": 0.1}, {"key": "b"}])] == ["0", "b"]
    assert normalize_items(["x"]) == [TaskItem("x")]
    for bad, match in (
        ([], "empty"),
        ("ab", "list"),
        ([{"f": object()}], "JSON"),
        (["a", "a"], "twice"),
    ):
        with pytest.raises(ConfigError, match=match):
            normalize_items(bad)


def test_batched_read_reads_only_grown_files(tmp_path: Path) -> None:
    a, b, c, big = tmp_path / "a", tmp_path / "b b", tmp_path / "c c", tmp_path / "big"
    a.write_text("hello\nworld\n")
    b.write_text("7\n")
    c.write_bytes(b"\x00binary\xff\n")
    big.write_bytes(b"x" * 150)
    requests = [
        (str(a), 6),  # grown past an earlier offset: dd
        (str(tmp_path / "missing"), 0),
        (str(b), 2),  # not longer than its offset
        (str(c), 0),  # new since the start: the tar
        (str(big), 0),  # new, but longer than max_bytes: dd of max_bytes
    ]
    got = read_changed(LocalTransport(), requests, max_bytes=100)
    assert got == [b"world\n", b"", b"", b"\x00binary\xff\n", b"x" * 100]


def test_batched_read_answer_that_does_not_add_up_is_an_error() -> None:
    import base64

    with pytest.raises(TransportError, match="fewer bytes"):
        parse_changed(base64.b64encode(b"5 -\nabc").decode(), ["/a", "/b"])
    with pytest.raises(TransportError, match="answered for 1 of 2"):
        parse_changed(base64.b64encode(b"-\n").decode(), ["/a", "/b"])
    with pytest.raises(TransportError, match="broken tar"):
        parse_changed(base64.b64encode(b"t\nnot a tar" + b"\x01" * 600).decode(), ["/a"])


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, level: str):
        return lambda text: self.events.append((level, text))


def test_task_reader_groups_a_ticks_lines_into_one_event_per_stream_and_level(
    tmp_path: Path,
) -> None:
    channels = []
    for i in range(3):
        d = tmp_path / "t" / str(i)
        d.mkdir(parents=True)
        (d / "stdout.log").write_text(f"out {i}\nmore {i}\n")
        (d / "stderr.log").write_text(f"err {i}\n")
        msgs = [{"method": "log", "params": {"message": f"log {i}", "level": "INFO"}}]
        msgs.append({"method": "log", "params": {"message": f"careful {i}", "level": "WARNING"}})
        (d / "pipes_messages.jsonl").write_text("".join(f"{json.dumps(m)}\n" for m in msgs))
        (d / "exit_code").write_text("0\n")
        channels.append(TaskChannel(i, f"k{i}", str(d)))
    log = _Log()
    reader = TaskReader(LocalTransport(), channels, log=log, interval_s=0.01)
    reader.start()
    reader.stop()
    assert log.events == [
        ("info", "[k0] out 0\n[k0] more 0\n[k1] out 1\n[k1] more 1\n[k2] out 2\n[k2] more 2"),
        ("info", "[stderr] [k0] err 0\n[stderr] [k1] err 1\n[stderr] [k2] err 2"),
        ("info", "[k0] log 0\n[k1] log 1\n[k2] log 2"),
        ("warning", "[k0] careful 0\n[k1] careful 1\n[k2] careful 2"),
    ]
    assert reader.log_events == 4 and all(ch.exit_code == 0 and ch.drained for ch in channels)
    assert list(channels[1].stderr_tail) == ["err 1"]


def test_run_array_local_fan_out_each_item_its_own_channel(tmp_path: Path) -> None:
    seen = {}

    @dg.asset
    def sweep(context: dg.AssetExecutionContext, compute: ComputeResource):
        outcome = compute.run_array(
            context, PAYLOAD, items=[{"key": "a1", "lr": 0.1}, {"key": "b2"}, "c3"]
        )
        seen.update({r.key: r for r in outcome.results})
        return dg.MaterializeResult(metadata=outcome.summary_metadata())

    result = dg.materialize(
        [sweep], resources={"compute": ComputeResource(base_dir=str(tmp_path), array_throttle=2)}
    )
    assert result.success
    assert sorted(seen) == ["a1", "b2", "c3"]
    assert seen["b2"].metadata["square"].value == 4
    assert "lr" in seen["a1"].metadata["extras_seen"].value and seen["a1"].extras["lr"] == 0.1


def test_run_array_local_failure_names_the_item(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DHPC_FAIL_KEY", "b2")

    @dg.asset
    def sweep(context: dg.AssetExecutionContext, compute: ComputeResource):
        compute.run_array(context, PAYLOAD, items=["a1", "b2"], extra_env={"DHPC_FAIL_KEY": "b2"})

    with pytest.raises(PayloadError, match=r"1 of 2 array items failed: b2") as info:
        dg.materialize([sweep], resources={"compute": ComputeResource(base_dir=str(tmp_path))})
    assert "b2 fails on purpose" in str(info.value) and "exit code 3" in str(info.value)


def test_a_succeeded_arrays_run_dir_goes_with_the_final_sacct(tmp_path: Path) -> None:
    """Retention's removal of a successful array's run dir rides on the first round trip of
    the final sacct settle (as for single jobs): one round trip less per step."""
    from dagster_hpc.allocation import runner
    from dagster_hpc.backends.base import JobHandle
    from dagster_hpc.backends.slurm import RUN_DIR_REMOVED_MARK, SlurmBackend
    from dagster_hpc.transport.base import CommandResult

    row = "50_0|dhpc-x|COMPLETED|0:0|1|1|1|00:00.095|1||cpu=1,mem=256M,node=1|node1|debug|None\n"
    commands: list[str] = []

    class Sacct:
        def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
            commands.append(command)
            return CommandResult(0, row + RUN_DIR_REMOVED_MARK + "\n", "")

    backend = SlurmBackend(
        Sacct(), cluster="fake", remote_base_dir=str(tmp_path), record_launch=False
    )
    assert backend.folded_removal(None)[0] == ""
    suffix, removed = backend.folded_removal("/r/run dir")
    out = runner._sacct_tasks(Sacct(), {0: "50_0"}, [0], first_suffix=suffix, on_first=removed)
    assert len(commands) == 1 and out[0].partition == "debug"
    assert commands[0].endswith(f"; rm -rf -- '/r/run dir' && echo {RUN_DIR_REMOVED_MARK}")
    assert backend.run_dir_removed(JobHandle("slurm-array", "50", "/r/run dir", "fake"))
