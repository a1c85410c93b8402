"""Job arrays: the pure parts (chunking, scripts, batched reads) and the local mode end to end
(the same run dir and wrappers as on Slurm, run by a local process pool)."""

from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.allocation.array import (
    chunks,
    parse_arrays_file,
    render_array_script,
    submit_command,
)
from dagster_hpc.allocation.batchread import read_changed
from dagster_hpc.allocation.tasks import TaskItem, normalize_items
from dagster_hpc.compute import ComputeResource
from dagster_hpc.errors import ConfigError, PayloadError
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
    assert "exec bash '/r/un dir'/t/\"$i\"/job.sh\n" in text
    with pytest.raises(ConfigError, match="throttle"):
        render_array_script(run_dir="/r", tasks=[1], queue=QueueConfig(), step="s", throttle=0)
    cmd = submit_command("/r", [("array.a.0.sh", [3, 17])])
    assert "sbatch --parsable array.a.0.sh" in cmd and "arrays.txt" in cmd
    assert parse_arrays_file("12 array.a.0.sh 3 17\n13;c array.a.1.sh 4\n") == [("12", [3, 17])]


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
    a, b = tmp_path / "a", tmp_path / "b b"
    a.write_text("hello\nworld\n")
    b.write_text("7\n")
    got = read_changed(
        LocalTransport(), [(str(a), 6), (str(tmp_path / "missing"), 0), (str(b), 2)], max_bytes=100
    )
    assert got == [b"world\n", b"", b""]


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
