"""The pure parts of the fault handling (the faults themselves: tests/integration/test_faults.py):
the stdout forwarding cap, the workdir probe after a killed submission, full filesystems,
unreachable accounting, --no-requeue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc import ComputeResource, ConfigError, ExecLauncher
from dagster_hpc.backends.slurm_fs import job_full_error, parse_df, says_full, staging_full_error
from dagster_hpc.backends.slurm_reattach import parse_workdir_probe
from dagster_hpc.backends.slurm_script import (
    FLOCK_PREFLIGHT,
    check_preflight,
    parse_preflight,
    preflight_command,
    sbatch_header,
)
from dagster_hpc.backends.slurm_submit import (
    NO_FLOCK_MARK,
    REMOVED_MARK,
    SUBMIT_LOCK,
    submit_command,
)
from dagster_hpc.errors import FilesystemFullError
from dagster_hpc.metrics import accounting_unreachable
from dagster_hpc.pipes import RunDirMessageReader
from dagster_hpc.pipes.reader import (
    CAPPED_METADATA_KEY,
    FORWARD_CAP_BYTES,
    FORWARD_CAP_MIN_BYTES,
)
from dagster_hpc.queue import QueueConfig
from dagster_hpc.rundir import EXIT_CODE, PIPES_MESSAGES, STDOUT
from dagster_hpc.transport.base import CommandResult
from dagster_hpc.transport.local import LocalTransport

RUN_DIR = "/home/u/runs/r1/step-1"
JOIN_TIMEOUT_S = 60


class _Handler:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def handle_message(self, message: dict) -> None:
        self.messages.append(message)


def test_stdout_past_the_cap_is_not_read_and_the_messages_still_arrive(tmp_path: Path) -> None:
    cap = 10_000
    (tmp_path / STDOUT).write_bytes(b"".join(b"line %05d\n" % i for i in range(5000)))  # 55 kB
    (tmp_path / PIPES_MESSAGES).write_text(json.dumps({"method": "log", "params": {}}) + "\n")
    (tmp_path / EXIT_CODE).write_text("0\n")
    lines: list[str] = []
    warnings: list[str] = []
    reader = RunDirMessageReader(
        LocalTransport(),
        str(tmp_path),
        lambda _s, got: lines.extend(got),
        interval_s=0.001,
        warn=warnings.append,
        forward_cap_bytes=cap,
    )
    handler = _Handler()
    with reader.read_messages(handler):  # type: ignore[arg-type]
        assert reader.exited.wait(JOIN_TIMEOUT_S)
    assert len(handler.messages) == 1
    assert lines[: cap // 11] == [f"line {i:05d}" for i in range(cap // 11)]
    assert sum(len(line) + 1 for line in lines) <= cap + 1  # the cut last line has no newline
    assert set(reader.capped) == {"stdout"}
    (note,) = reader.capped_metadata().values()
    assert note.startswith(f"{tmp_path}/{STDOUT} from byte {cap} on") and "left in place" in note
    assert any("forwarding cap" in w for w in warnings)


def test_the_cap_is_a_validated_resource_setting_that_reaches_the_reader(tmp_path: Path) -> None:
    assert ComputeResource().forward_cap_bytes == FORWARD_CAP_BYTES
    with pytest.raises(ConfigError, match=r"forward_cap_bytes=8 is below 65536 .* in bytes"):
        ComputeResource(forward_cap_bytes=8)
    with pytest.raises(ConfigError, match="did you mean 'forward_cap_bytes'"):
        ComputeResource(forward_cap_byte=1 << 20)
    cap = FORWARD_CAP_MIN_BYTES
    line = "y" * 99  # 100 bytes a line: 3 caps' worth of stdout in all

    @dg.asset
    def chatty(context, compute: ComputeResource):  # this module's annotations are strings
        argv = [
            "sh",
            "-c",
            f"i=0; while [ $i -lt {3 * cap // 100} ]; do echo {line}; i=$((i+1)); done",
        ]
        yield from compute.run(context, argv, launcher=ExecLauncher(), pipes=False).get_results()

    instance = dg.DagsterInstance.ephemeral()
    resource = ComputeResource(base_dir=str(tmp_path), forward_cap_bytes=cap)
    result = dg.materialize([chatty], resources={"compute": resource}, instance=instance)
    lines = [
        part for e in instance.all_logs(result.run_id) if not e.is_dagster_event
        for part in e.user_message.split("\n") if part.startswith("y")
    ]  # fmt: skip
    assert cap - 100 <= sum(len(x) + 1 for x in lines) <= cap + 1  # the setting, not the default
    md = result.asset_materializations_for_node("chatty")[0].metadata
    assert f"from byte {cap} on" in md[CAPPED_METADATA_KEY.format(stream="stdout")].value
    kept = list(tmp_path.rglob(STDOUT))  # the run directory is kept: the rest is there
    assert [p.stat().st_size for p in kept] == [3 * cap // 100 * 100]


@pytest.mark.parametrize(
    ("stdout", "job_id", "error"),
    [
        ("#squeue_rc=0\n7|/other\n12|" + RUN_DIR + "/\n", "12", ""),
        ("#lock_rc=0\n#dir=yes\n#squeue_rc=0\n7|/other\n12|" + RUN_DIR + "\n", "12", ""),
        ("#squeue_rc=0\n7|/other\n", None, ""),  # not in squeue, not in sacct: no job
        ("#lock_rc=1\n#dir=yes\n#squeue_rc=0\n", None, "still holds its lock"),
        (
            "#squeue_rc=1\nsqueue: error: Unable to contact slurm controller\n",
            None,
            "squeue failed",
        ),
        ("#squeue_rc=1\nsqueue: error\n12|" + RUN_DIR + "\n", "12", ""),  # sacct found it
    ],
)
def test_parse_workdir_probe(stdout: str, job_id: str | None, error: str) -> None:
    found = parse_workdir_probe(stdout, RUN_DIR)
    assert found.job_id == job_id
    assert error in found.error and bool(found.error) == bool(error)


def test_the_submission_holds_its_lock_from_before_the_unpack() -> None:
    cmd = submit_command("tar -x -f -", RUN_DIR)
    assert cmd.index(SUBMIT_LOCK) < cmd.index("tar -x") < cmd.index("sbatch")


def _path_without_flock(tmp_path: Path) -> Path:
    """A PATH directory with the tools a submission needs, a recording sbatch, and no flock."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mkdir", "rm", "grep", "touch"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    for fake, body in (("sbatch", f"touch {tmp_path}/sbatch-called; echo 7"), ("squeue", "true")):
        (bin_dir / fake).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / fake).chmod(0o755)
    return bin_dir


def test_a_login_node_without_flock_is_refused_and_never_submits_unlocked(tmp_path: Path) -> None:
    bin_dir = _path_without_flock(tmp_path)

    def sh(command: str, path: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["/bin/bash", "-c", command], env={"PATH": path}, capture_output=True, text=True,
            timeout=JOIN_TIMEOUT_S, check=False,
        )  # fmt: skip

    assert sh("true" + FLOCK_PREFLIGHT, str(bin_dir)).stdout == "flock=missing\n"
    assert sh("true" + FLOCK_PREFLIGHT, os.environ["PATH"]).stdout == "flock=ok\n"  # util-linux
    # the whole preflight still parses (its parts are concatenated) and answers the line
    full = preflight_command(base_dir=str(tmp_path / "base"), python="python3", activate=None)
    answered = sh(full, f"{bin_dir}:/usr/bin:/bin")
    assert answered.returncode == 0, answered.stderr
    assert parse_preflight(answered.stdout)["base"] == "ok"
    assert parse_preflight(answered.stdout)["flock"] == "ok"  # /usr/bin has it
    answer = {"base": "ok", "python": "ok", "flock": "missing"}
    kw = dict(cluster="c", base_dir="/b", python="python3", activate=None, partition=None)
    with pytest.raises(ConfigError, match="flock is not on the login node's PATH.*util-linux"):
        check_preflight(answer, **kw)  # type: ignore[arg-type]
    check_preflight({**answer, "flock": "ok"}, **kw)  # type: ignore[arg-type]
    # flock gone after the preflight was cached: the submission stops before sbatch
    run_dir = tmp_path / "runs" / "step-1"
    done = sh(submit_command("touch staged", str(run_dir)), str(bin_dir))
    assert done.returncode != 0 and NO_FLOCK_MARK in done.stderr and REMOVED_MARK in done.stderr
    assert not (tmp_path / "sbatch-called").exists() and not run_dir.exists()


def test_no_requeue_unless_asked() -> None:
    assert "#SBATCH --no-requeue" in sbatch_header(QueueConfig(), step="s")
    asked = sbatch_header(QueueConfig(extra_directives=["--requeue"]), step="s")
    assert "#SBATCH --no-requeue" not in asked


def test_full_filesystem_texts() -> None:
    assert says_full("/usr/bin/tar: env.sh: Cannot write: No space left on device")
    assert not says_full("Permission denied")
    assert parse_df("tmpfs 256 256 0 100% /mnt/small\n") == (0, "/mnt/small")
    assert parse_df("garbage") is None
    error = staging_full_error(
        RUN_DIR, "c", "tar: x: Cannot write: No space left on device", removed=True
    )
    assert isinstance(error, FilesystemFullError) and error.path == RUN_DIR and not error.job_id
    assert "Nothing was submitted" in str(error) and "removed" in str(error)


class _DfTransport(LocalTransport):
    def __init__(self, answer: str):
        super().__init__()
        self.answer, self.calls = answer, 0

    def run(self, command, *, timeout=None, stdin=None):  # type: ignore[override]
        self.calls += 1
        return CommandResult(0, self.answer, "")


def test_job_on_a_full_filesystem_is_named_only_when_it_looks_like_it() -> None:
    full = _DfTransport("tmpfs 256 256 0 100% /mnt/small\n")
    kw = dict(run_dir=RUN_DIR, cluster="c", job_id="5", state="FAILED", metadata={})
    error = job_full_error(full, exit_code=None, stderr_tail="", **kw)  # type: ignore[arg-type]
    assert isinstance(error, FilesystemFullError) and error.job_id == "5" and RUN_DIR in str(error)
    plain = _DfTransport("tmpfs 256 256 0 100% /mnt/small\n")
    assert job_full_error(plain, exit_code=1, stderr_tail="Traceback", **kw) is None  # type: ignore[arg-type]
    assert plain.calls == 0  # an ordinary failing payload costs no extra round trip
    roomy = _DfTransport("/dev/vda 100 10 90000 10% /\n")
    assert job_full_error(roomy, exit_code=None, stderr_tail="", **kw) is None  # type: ignore[arg-type]


def test_unreachable_accounting_is_recognised() -> None:
    text = (
        "sacct: error: Sending PersistInit msg: Connection refused\n"
        "sacct: error: Problem talking to the database: Connection refused\n"
    )
    assert (
        accounting_unreachable(text)
        == "sacct: error: Problem talking to the database: Connection refused"
    )
    assert accounting_unreachable("12|COMPLETED|0:0\n") == ""
