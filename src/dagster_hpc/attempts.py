"""The attempts of one job (Dagster side): ``attempts.tsv`` lines -> records, log lines, metadata.

The job wrapper (jobscript.py) appends one line when an attempt starts and one when it ends:

    start<TAB>N<TAB>EPOCH<TAB>NODE
    end<TAB>N<TAB>EPOCH<TAB>RC<TAB>HOW

HOW is ``completed``, ``failed``, ``requeued`` (the payload saved its checkpoint and asked),
``terminated`` (SIGTERM from Slurm: preemption, time limit or scancel), ``exhausted`` (asked
once more than max_requeues allows), ``requeue-failed`` (``scontrol requeue`` refused) or
``exited`` (a job without requeue). An attempt killed outright (SIGKILL, node failure) has no
end line. The Pipes reader tails the file like the logs, so every line is seen exactly once,
also across a reattach; ``attempt_metadata`` turns the records into one step's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_hpc.metrics import METADATA_PREFIX

# The Pipes extra naming the checkpoint directory (pipes/checkpoint.py EXTRA_DIR: kept equal).
CHECKPOINT_EXTRA = "dagster_hpc_checkpoint_dir"
ATTEMPTS_KEY = f"{METADATA_PREFIX}attempts"
ATTEMPT_STATES_KEY = f"{METADATA_PREFIX}attempt_states"
ATTEMPT_HISTORY_KEY = f"{METADATA_PREFIX}attempt_history"

# The wrapper's HOW -> the attempt's state as Slurm would name it. ``terminated`` and a missing
# end line are Slurm's to name (sacct --duplicates: PREEMPTED, TIMEOUT, CANCELLED, NODE_FAIL).
_STATE_OF_HOW = {
    "completed": "COMPLETED",
    "failed": "FAILED",
    "exited": "EXITED",
    "requeued": "REQUEUED",
    "exhausted": "FAILED",
    "requeue-failed": "FAILED",
}
_HOW_TEXT = {
    "requeued": "requeued (the payload saved its checkpoint and asked; Slurm starts the next "
    "attempt after its requeue delay)",
    "terminated": "by SIGTERM (preemption, the time limit or scancel): Slurm requeues or ends it",
    "exhausted": "asking for one requeue more than max_requeues allows",
    "requeue-failed": "scontrol requeue failed (see stderr)",
}


@dataclass
class Attempt:
    number: int
    started: int
    node: str
    ended: int | None = None
    exit_code: int | None = None
    how: str | None = None

    @property
    def elapsed_s(self) -> int | None:
        return None if self.ended is None else max(0, self.ended - self.started)


class AttemptLog:
    """Feeds ``attempts.tsv`` lines (in file order) into records; returns what to log."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def feed(self, line: str) -> str | None:
        parts = line.rstrip("\n").split("\t")
        try:
            if parts[0] == "start" and len(parts) >= 3:
                attempt = Attempt(int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else "")
                self.attempts.append(attempt)
                if attempt.number > 1:
                    where = f" on {attempt.node}" if attempt.node else ""
                    return f"attempt {attempt.number} started{where} (the job was requeued)"
                return None
            if parts[0] == "end" and len(parts) >= 5:
                number = int(parts[1])
                attempt = next((a for a in self.attempts if a.number == number), None)
                if attempt is None:
                    return None
                attempt.ended, attempt.exit_code, attempt.how = (
                    int(parts[2]),
                    int(parts[3]),
                    parts[4],
                )
                text = _HOW_TEXT.get(attempt.how)
                if text is None:
                    return None  # an ordinary end: the step's own outcome says it
                return f"attempt {number} ended after {attempt.elapsed_s} s: {text}"
        except ValueError:
            return None  # a torn or foreign line: never fatal
        return None


def attempt_states(attempts: list[Attempt], slurm_states: list[str] | None) -> list[str]:
    """One state per attempt: the wrapper's own record, or Slurm's (sacct --duplicates) for an
    attempt that SIGTERM or SIGKILL ended."""
    out = []
    for i, attempt in enumerate(attempts):
        state = _STATE_OF_HOW.get(attempt.how or "")
        if state is None:
            if slurm_states is not None and i < len(slurm_states) and slurm_states[i]:
                state = slurm_states[i]
            else:
                state = "TERMINATED" if attempt.how == "terminated" else "ENDED_UNRECORDED"
        out.append(state)
    return out


def attempt_metadata(
    attempts: list[Attempt], slurm: list[tuple[str, int | None]] | None = None
) -> dict[str, Any]:
    """``slurm/attempts`` (count), ``slurm/attempt_states`` ("REQUEUED, REQUEUED, COMPLETED")
    and ``slurm/attempt_history`` (JSON: number, state, elapsed_s, node, exit_code, how).
    ``slurm``: sacct's (state, elapsed) per attempt, in start order, when it was asked."""
    states = attempt_states(attempts, [s for s, _ in slurm] if slurm else None)
    history = []
    for i, (attempt, state) in enumerate(zip(attempts, states, strict=True)):
        elapsed = attempt.elapsed_s
        if elapsed is None and slurm is not None and i < len(slurm):
            elapsed = slurm[i][1]
        history.append(
            {
                "attempt": attempt.number,
                "state": state,
                "elapsed_s": elapsed,
                "node": attempt.node,
                "exit_code": attempt.exit_code,
                "how": attempt.how or "",
            }
        )
    return {
        ATTEMPTS_KEY: len(attempts),
        ATTEMPT_STATES_KEY: ", ".join(states),
        ATTEMPT_HISTORY_KEY: dg.MetadataValue.json(history),
    }


def summary(metadata: dict[str, Any]) -> str:
    """ "3 attempts: 1 REQUEUED 14 s, 2 REQUEUED 13 s, 3 FAILED 12 s" from the metadata above."""
    history = metadata.get(ATTEMPT_HISTORY_KEY)
    rows = getattr(history, "data", history)
    if not isinstance(rows, list) or not rows:
        return ""
    parts = []
    for row in rows:
        elapsed = "" if row.get("elapsed_s") is None else f" {row['elapsed_s']} s"
        parts.append(f"{row.get('attempt')} {row.get('state')}{elapsed}")
    return f"{len(rows)} attempt{'s' if len(rows) != 1 else ''}: {', '.join(parts)}"


def parse_duplicates(text: str, job_id: str) -> list[tuple[str, int | None]]:
    """``sacct --duplicates -X --parsable2 --format=JobID,State,ElapsedRaw`` -> (state, elapsed)
    per attempt of ``job_id``, in sacct's (start) order."""
    out: list[tuple[str, int | None]] = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0] == job_id:
            state = parts[1].split(" ")[0] if parts[1] else ""
            out.append((state, int(parts[2]) if parts[2].isdigit() else None))
    return out


def checkpoint_helper_source() -> Path:
    """pipes/checkpoint.py: staged into every run directory as ``dagster_hpc_checkpoint.py``."""
    return Path(__file__).resolve().parent / "pipes" / "checkpoint.py"
