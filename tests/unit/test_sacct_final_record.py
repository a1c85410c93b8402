"""Array tasks and hetjob components take their numbers from Slurm's final record only, never
from slurmdbd's partition-less stand-in row (what sacct shows for a short job whose step record
arrived before the job's start record)."""

from dataclasses import dataclass

import pytest

from dagster_hpc.allocation import hetjob, runner
from dagster_hpc.transport.base import CommandResult

ROW = "{jid}|{name}|COMPLETED|0:0|1|1|1|00:00.095|1||billing=1,cpu=1,mem=256M,node=1|node1|{part}|None\n"


@dataclass
class Scripted:
    answers: list[str]
    calls: int = 0

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        assert command.startswith("sacct "), command
        self.calls += 1
        return CommandResult(0, self.answers[min(self.calls, len(self.answers)) - 1], "")


@pytest.fixture(autouse=True)
def _fast(monkeypatch) -> None:
    monkeypatch.setattr(runner, "ARRAY_SACCT_INTERVAL_S", 0.01)
    monkeypatch.setattr(hetjob, "HET_SACCT_INTERVAL_S", 0.01)


def test_array_task_waits_for_its_own_record() -> None:
    stand_in = ROW.format(jid="50_0", name="allocation", part="")
    final = ROW.format(jid="50_0", name="dhpc-x", part="debug")
    transport = Scripted([stand_in, final])
    out = runner._sacct_tasks(transport, {0: "50_0"}, [0])
    assert transport.calls == 2 and out[0].partition == "debug"


def test_hetjob_component_waits_for_its_own_record() -> None:
    stand_in = ROW.format(jid="60+0", name="allocation", part="") + ROW.format(
        jid="60+1", name="dhpc-x", part="gpu"
    )
    final = ROW.format(jid="60+0", name="dhpc-x", part="debug") + ROW.format(
        jid="60+1", name="dhpc-x", part="gpu"
    )
    transport = Scripted([stand_in, final])
    out = hetjob._het_metrics(transport, "60", 2)
    assert transport.calls == 2 and (out[0].partition, out[1].partition) == ("debug", "gpu")
