"""Single jobs, array tasks and hetjob components take their numbers from a final record only
(``backends/slurm_sacct.settle``): Slurm's own job record, or slurmdbd's stand-in row (named
"allocation", no partition) once it is complete and slurmctld names the partition in the same
round trip. Never from a RUNNING or PENDING record."""

from dataclasses import dataclass

import pytest

from dagster_hpc.allocation import hetjob, runner
from dagster_hpc.backends import slurm_sacct
from dagster_hpc.backends.slurm_sacct import PARTITION_MARK, settle, settle_command
from dagster_hpc.transport.base import CommandResult

ROW = "{jid}|{name}|{state}|0:0|1|1|1|00:00.095|1||billing=1,cpu=1,mem=256M,node=1|node1|{part}|None\n"
STEP = "{jid}.batch|batch|{state}|0:0|1|1|1|00:00.095|1||cpu=1,mem=256M,node=1|node1||\n"


def rows(jid: str, name: str = "dhpc-x", part: str = "debug", state: str = "COMPLETED") -> str:
    return ROW.format(jid=jid, name=name, part=part, state=state) + STEP.format(
        jid=jid, state=state
    )


def stand_in(jid: str, state: str = "COMPLETED", step: str = "COMPLETED") -> str:
    return ROW.format(jid=jid, name="allocation", part="", state=state) + STEP.format(
        jid=jid, state=step
    )


def slurmctld(jid: str, part: str = "debug") -> str:
    return f"{PARTITION_MARK}|{jid}|{part}\n"


@dataclass
class Scripted:
    answers: list[str]
    calls: int = 0

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        assert command.startswith("r=$(sacct "), command
        self.calls += 1
        return CommandResult(0, self.answers[min(self.calls, len(self.answers)) - 1], "")


@pytest.fixture(autouse=True)
def _fast(monkeypatch) -> None:
    monkeypatch.setattr(slurm_sacct, "SACCT_SETTLE_INTERVAL_S", 0.01)
    monkeypatch.setattr(slurm_sacct, "SACCT_SETTLE_FIRST_S", 0.01)


def test_the_command_asks_slurmctld_for_the_partition_only_for_a_stand_in() -> None:
    cmd = settle_command(["50", "51"])
    assert "--jobs 50,51" in cmd and "*'|allocation|'*) squeue" in cmd


def test_a_complete_stand_in_with_slurmctlds_partition_is_final_at_once() -> None:
    transport = Scripted([stand_in("7") + slurmctld("7", "gpu")])
    got = settle(transport, ["7"], ["7"]).metrics["7"]
    assert transport.calls == 1 and got.partition == "gpu" and got.state == "COMPLETED"


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (stand_in("7"), "no partition from slurmctld"),
        (stand_in("7", state="PENDING") + slurmctld("7"), "stand-in still PENDING"),
        (stand_in("7", step="RUNNING") + slurmctld("7"), "a step still RUNNING"),
        (rows("7", state="RUNNING"), "the job's own record, RUNNING"),
    ],
)
def test_a_record_that_is_not_final_is_asked_again(first: str, why: str) -> None:
    transport = Scripted([first, rows("7")])
    got = settle(transport, ["7"], ["7"]).metrics["7"]
    assert transport.calls == 2, why
    assert (got.partition, got.state) == ("debug", "COMPLETED")


def test_the_budget_bounds_the_wait_and_keeps_the_last_record() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    transport = Scripted([rows("7", state="RUNNING")])
    got = settle(transport, ["7"], ["7"], budget_s=2.0, clock=lambda: now[0], sleep=sleep)
    assert got.metrics["7"].state == "RUNNING"  # the caller's state check leaves its numbers out
    assert 2.0 <= now[0] < 2.0 + slurm_sacct.SACCT_SETTLE_INTERVAL_S + 0.01
    assert transport.calls == got.rounds > 2


def test_array_task_waits_for_a_final_record() -> None:
    transport = Scripted([stand_in("50_0"), rows("50_0")])
    out = runner._sacct_tasks(transport, {0: "50_0"}, [0])
    assert transport.calls == 2 and out[0].partition == "debug"


def test_array_tasks_take_complete_stand_ins_in_one_round_trip() -> None:
    answer = stand_in("50_0") + rows("50_1") + slurmctld("50_0") + slurmctld("50_1")
    transport = Scripted([answer])
    out = runner._sacct_tasks(transport, {0: "50_0", 1: "50_1"}, [0, 1])
    assert transport.calls == 1 and (out[0].partition, out[1].partition) == ("debug", "debug")


def test_hetjob_component_waits_for_a_final_record() -> None:
    first = stand_in("60+0") + rows("60+1", part="gpu")
    final = rows("60+0") + rows("60+1", part="gpu")
    transport = Scripted([first, final])
    out = hetjob._het_metrics(transport, "60", 2)
    assert transport.calls == 2 and (out[0].partition, out[1].partition) == ("debug", "gpu")


def test_hetjob_component_stand_in_with_slurmctlds_partition() -> None:
    first = (
        stand_in("60+0") + rows("60+1", part="gpu") + slurmctld("60+0") + slurmctld("60+1", "gpu")
    )
    transport = Scripted([first])
    out = hetjob._het_metrics(transport, "60", 2)
    assert transport.calls == 1 and (out[0].partition, out[1].partition) == ("debug", "gpu")


def test_a_session_steps_own_record_is_final_without_a_partition() -> None:
    step = "70.3|dhpc-x|COMPLETED|0:0|1|1|1|00:00.095|1|20M|cpu=1,mem=256M,node=1|node1||\n"
    transport = Scripted([step])
    got = settle(transport, ["70.3"], ["70.3"]).metrics["70.3"]
    assert transport.calls == 1 and got.max_rss_mb == 20.0


@dataclass
class Recorded:
    """Answers sacct from ``rows`` (every row whose task is asked for) and records the ids."""

    rows: dict[str, str]
    asked: list[list[str]]

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        ids = command.split("--jobs ", 1)[1].split(" ", 1)[0].strip("'").split(",")
        self.asked.append(ids)
        return CommandResult(0, "".join(self.rows.get(i, "") for i in ids), "")


def test_collect_final_keeps_final_records_only() -> None:
    transport = Recorded({"50_0": rows("50_0"), "50_1": rows("50_1", state="RUNNING")}, [])
    into: dict = {}
    assert slurm_sacct.collect_final(transport, ["50_0", "50_1", "50_2"], into)
    assert list(into) == ["50_0"] and transport.asked == [["50_0", "50_1", "50_2"]]


def test_collect_final_stops_when_accounting_is_off() -> None:
    class Off:
        def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
            return CommandResult(1, "", "sacct: error: Slurm accounting storage is disabled\n")

    assert not slurm_sacct.collect_final(Off(), ["50_0"], {})


def test_the_final_settle_asks_only_for_the_tasks_not_yet_known() -> None:
    transport = Recorded({f"50_{i}": rows(f"50_{i}") for i in range(4)}, [])
    known: dict = {}
    slurm_sacct.collect_final(transport, ["50_0", "50_1"], known)
    out = runner._sacct_tasks(transport, {i: f"50_{i}" for i in range(4)}, range(4), known=known)
    assert transport.asked[-1] == ["50_2", "50_3"] and sorted(out) == [0, 1, 2, 3]


def test_every_task_known_means_no_final_round_trip() -> None:
    transport = Recorded({"50_0": rows("50_0")}, [])
    known: dict = {}
    slurm_sacct.collect_final(transport, ["50_0"], known)
    out = runner._sacct_tasks(transport, {0: "50_0"}, [0], known=known)
    assert len(transport.asked) == 1 and out[0].state == "COMPLETED"


def test_the_wait_asks_for_ended_tasks_only_and_at_most_every_interval(monkeypatch) -> None:
    from dagster_hpc.allocation.tasks import TaskChannel

    transport = Recorded({"50_0": rows("50_0"), "50_1": rows("50_1")}, [])
    channels = [TaskChannel(i, f"k{i}", f"/r/t/{i}") for i in range(3)]
    channels[0].exit_code, channels[1].exit_code = 0, 3
    early = runner._EarlyRecords(transport, channels, {i: f"50_{i}" for i in range(3)})
    now = 1e9
    early.poll(now)
    early.poll(now + runner.ARRAY_EARLY_SACCT_INTERVAL_S / 2)  # too soon: not asked
    assert transport.asked == [["50_0", "50_1"]] and sorted(early.metrics) == ["50_0", "50_1"]
    channels[2].exit_code = 0
    early.poll(now + runner.ARRAY_EARLY_SACCT_INTERVAL_S)
    assert transport.asked[-1] == ["50_2"]  # the known ones are not asked again


# --- a single job's first query: final_record.sh ----------------------------------------------
NO_TRES_ROW = "{jid}|{name}|COMPLETED|0:0|1|1|1|00:00.095|1|20M|node1|{part}|None\n"
NO_TRES_STEP = "{jid}.batch|batch|COMPLETED|0:0|1|1|1|00:00.095|1|20M|node1||\n"
CTLD_TRES = "cpu=1,mem=1000M,node=1,billing=1"


def ended(jid: str, part: str = "debug", state: str = "COMPLETED") -> str:
    return f"{slurm_sacct.ENDED_MARK}|{jid}|{state}|{part}|{CTLD_TRES}|\n"


class FirstThenSettle(Scripted):
    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        want = "sh -c " if self.calls == 0 else "r=$(sacct "
        assert command.startswith(want), command
        self.calls += 1
        return CommandResult(0, self.answers[min(self.calls, len(self.answers)) - 1], "")


def test_the_final_record_takes_tres_and_partition_from_slurmctld() -> None:
    answer = ended("7") + NO_TRES_ROW.format(jid="7", name="dhpc-x", part="debug")
    answer += NO_TRES_STEP.format(jid="7")
    transport = FirstThenSettle([answer])
    cmd = slurm_sacct.final_record_command("7")
    got = settle(transport, ["7"], ["7"], first_command=cmd).metrics["7"]
    assert transport.calls == 1
    assert got.alloc_tres == {"cpu": "1", "mem": "1000M", "node": "1", "billing": "1"}
    assert (got.partition, got.max_rss_mb, got.node_list) == ("debug", 20.0, "node1")


def test_a_stand_in_is_complete_with_slurmctlds_line_alone() -> None:
    answer = ended("7", part="gpu") + NO_TRES_ROW.format(jid="7", name="allocation", part="")
    answer += NO_TRES_STEP.format(jid="7")
    transport = FirstThenSettle([answer])
    got = settle(transport, ["7"], ["7"], first_command="sh -c x").metrics["7"]
    assert transport.calls == 1 and got.partition == "gpu" and got.alloc_tres["cpu"] == "1"


def test_a_job_that_never_got_nodes_keeps_sacct_s_empty_allocation() -> None:
    row = "7|dhpc-x|CANCELLED by 0|0:0|0|0|0|00:00:00|0||None assigned|debug|None\n"
    transport = FirstThenSettle([ended("7", state="CANCELLED") + row])
    got = settle(transport, ["7"], ["7"], first_command="sh -c x").metrics["7"]
    assert got.state == "CANCELLED" and got.alloc_tres == {}  # squeue's would be the request


def test_later_rounds_ask_sacct_with_alloc_tres() -> None:
    first = ended("7") + NO_TRES_ROW.format(jid="7", name="dhpc-x", part="debug").replace(
        "COMPLETED", "RUNNING", 1
    )
    transport = FirstThenSettle([first, rows("7")])
    got = settle(transport, ["7"], ["7"], first_command="sh -c x").metrics["7"]
    assert transport.calls == 2 and got.alloc_tres["mem"] == "256M"  # sacct's own


FAKE_SQUEUE = """#!/bin/sh
n=$(cat "$D/squeue.n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/squeue.n"
echo "$*" >> "$D/squeue.args"
[ "$n" -le "$RUNNING_FOR" ] && { echo 'RUNNING|debug|cpu=2,node=1|'; exit 0; }
[ -n "$FORGOTTEN" ] && exit 0
echo 'COMPLETED|debug|cpu=2,node=1|'
"""
FAKE_SACCT = """#!/bin/sh
n=$(cat "$D/sacct.n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/sacct.n"
echo "$*" >> "$D/sacct.args"
[ "$n" -le "$SACCT_RUNNING_FOR" ] && s=RUNNING || s=COMPLETED
echo "9|dhpc-x|$s|0:0|1|1|1|00:00.095|1||node1|debug|None"
"""


def _run_program(tmp_path, **env: str) -> tuple[str, dict[str, int], str, str]:
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "D": str(tmp_path)}
    full_env.update({"RUNNING_FOR": "0", "SACCT_RUNNING_FOR": "0", **env})
    out = subprocess.run(
        ["bash", "-c", slurm_sacct.final_record_command("9")],
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    calls = {n: int((tmp_path / f"{n}.n").read_text()) for n in ("squeue", "sacct")}
    return out, calls, (tmp_path / "sacct.args").read_text(), (tmp_path / "squeue.args").read_text()


def test_program_waits_for_slurmctld_to_end_the_job_then_asks_sacct_once(tmp_path) -> None:
    out, calls, sacct_args, squeue_args = _run_program(tmp_path, RUNNING_FOR="2")
    assert calls == {"squeue": 3, "sacct": 1}
    assert out.splitlines()[0] == f"{slurm_sacct.ENDED_MARK}|9|COMPLETED|debug|cpu=2,node=1|"
    assert "AllocTRES" not in sacct_args and "--jobs 9" in squeue_args
    text, ctld = slurm_sacct.split_partitions(out)
    m = slurm_sacct.final(slurm_sacct.parse_sacct(text, "9", ctld.fields("9")), ctld)
    assert m is not None and m.alloc_tres == {"cpu": "2", "node": "1"}


def test_program_asks_sacct_again_while_slurmdbd_lags(tmp_path) -> None:
    out, calls, _, _ = _run_program(tmp_path, SACCT_RUNNING_FOR="1")
    assert calls == {"squeue": 1, "sacct": 2} and "|COMPLETED|" in out.splitlines()[-1]


def test_program_is_bounded_when_the_job_never_ends(tmp_path) -> None:
    out, calls, _, _ = _run_program(tmp_path, RUNNING_FOR="99", SACCT_RUNNING_FOR="99")
    assert calls == {
        "squeue": len(slurm_sacct.FINAL_SQUEUE_PAUSES_S),
        "sacct": 1 + len(slurm_sacct.FINAL_SACCT_PAUSES_S),
    }
    assert "|RUNNING|" in out  # the caller's settle decides; never taken as final


def test_program_asks_for_alloc_tres_when_slurmctld_forgot_the_job(tmp_path) -> None:
    out, calls, sacct_args, _ = _run_program(tmp_path, FORGOTTEN="1")
    assert calls["squeue"] == 1 and "AllocTRES" in sacct_args
    assert slurm_sacct.ENDED_MARK not in out


def test_a_session_step_is_asked_with_sacct_alone_not_the_whole_job_program() -> None:
    """squeue --jobs <allocation>.<step> lists the allocation, still RUNNING: the final-record
    program would wait out its pauses (~1.3 s a step, 8 steps = 10 s measured) and hand the
    step the allocation's TRES. A step's final record is its own sacct row."""
    from dagster_hpc.backends.slurm import SlurmBackend

    step = "70.3|dhpc-x|COMPLETED|0:0|1|1|1|00:00.095|1|20M|cpu=1,mem=256M,node=1|node1||\n"
    transport = Scripted([step])
    backend = SlurmBackend.__new__(SlurmBackend)
    backend._transport = transport
    _, got = backend._settled_sacct("70.3")  # Scripted refuses anything but a plain sacct
    assert transport.calls == 1 and got is not None and got.max_rss_mb == 20.0
    assert got.alloc_tres  # the step's own, from its sacct row
