"""Operator CLI pieces without a cluster: squeue parsing, log following, cost from the event log."""

from __future__ import annotations

import io
import json

import dagster as dg

from dagster_hpc.cli import main
from dagster_hpc.cli.jobs import follow_log, parse_jobs
from dagster_hpc.cost import run_cost
from dagster_hpc.transport.local import LocalTransport

RUN = "3f1c2a9e-0000-4000-8000-000000000001"
SQUEUE = (
    f"101|dhpc-train|RUNNING|None|1:02|gpu|/home/u/.dagster-hpc/runs/{RUN}/train-1a2b3c4d\n"
    f"102|dhpc-embed_docs|PENDING|Resources|0:00|cpu|/home/u/.dagster-hpc/runs/{RUN}/embed_docs-99aa00bb\n"
    "103|interactive|RUNNING|None|3:00|cpu|/home/u\n"
)


def test_parse_jobs_keeps_ours_with_run_and_step():
    jobs = parse_jobs(SQUEUE)
    assert [(j.job_id, j.run_id, j.step, j.reason) for j in jobs] == [
        ("101", RUN, "train", ""),
        ("102", RUN, "embed_docs", "Resources"),
    ]


def test_follow_log_prints_until_the_exit_code_file_appears(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_bytes(b"line 1\n")
    out = io.BytesIO()
    ticks = []

    def sleep(_s):
        ticks.append(1)
        with log.open("ab") as fh:
            fh.write(f"line {len(ticks) + 1}\n".encode())
        if len(ticks) == 3:
            (tmp_path / "exit_code").write_text("0\n")

    follow_log(LocalTransport(), str(tmp_path), "stdout.log", follow=True, out=out, sleep=sleep)
    assert out.getvalue().decode().splitlines() == ["line 1", "line 2", "line 3", "line 4"]


def test_cost_per_job_asset_and_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    @dg.multi_asset(specs=[dg.AssetSpec("a"), dg.AssetSpec("b")])
    def ab():
        md = {"slurm/job_id": "7", "slurm/state": "COMPLETED", "slurm/node_hours": 0.5,
              "slurm/cpu_hours": 2.0, "slurm/gpu_hours": 1.0}  # fmt: skip
        yield dg.MaterializeResult(asset_key="a", metadata=md)
        yield dg.MaterializeResult(asset_key="b", metadata=md)

    @dg.asset
    def c(context):
        context.log_event(
            dg.AssetObservation(
                asset_key="c",
                metadata={
                    "slurm/job_id": "8",
                    "slurm/state": "OUT_OF_MEMORY",
                    "slurm/node_hours": 0.25,
                    "slurm/cpu_hours": 1.0,
                    "slurm/gpu_hours": 0.0,
                },  # fmt: skip
            )
        )

    with dg.DagsterInstance.get() as instance:
        run_id = dg.materialize([ab, c], instance=instance).run_id
        cost = run_cost(instance, run_id)
    assert cost.total("node_hours") == 0.75 and cost.total("cpu_hours") == 3.0
    assert cost.per_asset()["a"] == {"node_hours": 0.25, "cpu_hours": 1.0, "gpu_hours": 0.5}
    assert main(["cost", run_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"] == {"node_hours": 0.75, "cpu_hours": 3.0, "gpu_hours": 1.0}
    assert {j["job_id"]: j["state"] for j in data["jobs"]} == {
        "7": "COMPLETED",
        "8": "OUT_OF_MEMORY",
    }
    assert main(["cost", run_id]) == 0
    assert "total" in capsys.readouterr().out
    assert main(["cost", "no-such-run"]) == 2
