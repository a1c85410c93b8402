"""The job wrapper script (job.sh): the same text runs locally and is submitted to Slurm.

It is a pure function of its inputs, so users can print it (dry run) and tests can golden it.
What it does, in the job's run directory:

- sources the 0600 env file (extra_env may hold secrets: they are never written into job.sh,
  which Slurm copies into its spool and shows in ``scontrol write batch_script``);
- exports PYTHONUNBUFFERED=1 so payload logs reach Dagster while the job runs;
- runs the launcher's script as a child with stdout/stderr appended to the run dir's log
  files, forwarding TERM/USR1/USR2 to it (Slurm's pre-timeout ``--signal=B:...`` hits the
  wrapper, the payload must see it);
- writes the child's exit code to the ``exit_code`` file atomically (tmp + mv): that file is
  the truth about the outcome, whatever the scheduler remembers;
- exits with the same code.

Slurm may run the same job.sh again in the same run directory (a requeue after a checkpoint, a
preemption, a node failure): every start and end is one line of ``attempts.tsv`` (the attempt
number is exported as DAGSTER_HPC_ATTEMPT), and an ``exit_code`` file is only ever written for
an outcome that is final, so a later attempt never finds an earlier one's and mistakes it for
its own; an attempt that finds one does not run the payload again (it ended for good). With
``requeue`` (QueueConfig(requeue=True)), a payload that exits with ``EXIT_REQUEUE`` (after it
saved its checkpoint in DAGSTER_HPC_CHECKPOINT_DIR) is requeued with ``scontrol requeue`` up to
``max_requeues`` times; an attempt ended by SIGTERM (preemption, time limit, scancel) writes no
exit_code: Slurm requeues it or ends it, and the scheduler's state says which.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from dagster_hpc.errors import ConfigError
from dagster_hpc.rundir import (
    ATTEMPTS,
    CHECKPOINT_DIR,
    ENV_FILE,
    EXIT_CODE,
    LAUNCH_SCRIPT,
    STDERR,
    STDOUT,
)

FORWARDED_SIGNALS = ("TERM", "USR1", "USR2")
# Exit codes the wrapper uses for its own failures (chosen outside the usual payload range).
EXIT_CANNOT_CD = 97
EXIT_BAD_ENV_FILE = 96
EXIT_CANNOT_RECORD = 95  # the exit_code file could not be written (full filesystem)
# The payload asks to be requeued (its checkpoint is saved): pipes/checkpoint.py exits with it.
EXIT_REQUEUE = 98
# requeue: the payload asked for one more requeue than max_requeues allows (or Slurm started
# one attempt too many after preemptions).
EXIT_REQUEUES_EXHAUSTED = 94
# requeue: ``scontrol requeue`` failed (the site forbids requeue, or no Slurm job id).
EXIT_REQUEUE_FAILED = 93


@dataclass(frozen=True)
class RequeueSpec:
    """What the wrapper needs for requeue=True: the attempt budget and the checkpoint signal."""

    max_requeues: int
    signal: str  # e.g. "USR2": exported as DAGSTER_HPC_CHECKPOINT_SIGNAL for the payload


def _attempt_lines(requeue: RequeueSpec | None) -> str:
    """Bookkeeping right after ``cd``: count this attempt, refuse to run a finished job again."""
    lines = [
        "# Slurm may start this script again here (requeue, preemption, node failure): an",
        "# exit_code file is only written for a final outcome, so one found now is an earlier",
        "# attempt's: that outcome stands and the payload does not run twice",
        f"if [ -s ./{EXIT_CODE} ]; then read -r done_rc < ./{EXIT_CODE} || done_rc=1; "
        'exit "${done_rc:-1}"; fi',
        "attempt=1",
        f"if [ -f ./{ATTEMPTS} ]; then",
        f"  while IFS=$'\\t' read -r kind _rest; do [ \"$kind\" != start ] || attempt=$((attempt + 1)); done < ./{ATTEMPTS}",
        "fi",
        "printf -v started '%(%s)T' -1",
        f'printf \'start\\t%s\\t%s\\t%s\\n\' "$attempt" "$started" "${{SLURMD_NODENAME:-${{HOSTNAME:-}}}}" >> ./{ATTEMPTS}',
        "ended() {",
        "  printf -v now '%(%s)T' -1",
        f'  printf \'end\\t%s\\t%s\\t%s\\t%s\\n\' "$attempt" "$now" "$2" "$1" >> ./{ATTEMPTS}',
        "}",
    ]
    if requeue is not None:
        budget = requeue.max_requeues + 1
        lines += [
            f'if [ "$attempt" -gt {budget} ]; then',
            f'  echo "dagster-hpc: Slurm started attempt $attempt, but max_requeues={requeue.max_requeues}'
            f' allows {budget} attempts: the payload is not run again" >> ./{STDERR}',
            f"  ended exhausted {EXIT_REQUEUES_EXHAUSTED}; finish {EXIT_REQUEUES_EXHAUSTED}",
            "fi",
        ]
    return "\n".join(lines) + "\n"


def _requeue_env(requeue: RequeueSpec | None) -> str:
    if requeue is None:
        return 'export DAGSTER_HPC_ATTEMPT="$attempt"\n'
    return (
        'export DAGSTER_HPC_ATTEMPT="$attempt"\n'
        f'export DAGSTER_HPC_CHECKPOINT_DIR="$PWD/{CHECKPOINT_DIR}"\n'
        f"export DAGSTER_HPC_CHECKPOINT_SIGNAL={requeue.signal}\n"
        f"mkdir -p -m 0700 ./{CHECKPOINT_DIR}\n"
    )


def _ending(requeue: RequeueSpec | None) -> str:
    """After the payload exited with ``rc``: record the attempt and decide what comes next."""
    if requeue is None:
        return 'ended exited "$rc"\nfinish "$rc"\n'
    m = requeue.max_requeues
    return f"""\
if [ "$rc" = 0 ]; then ended completed 0; finish 0; fi
# SIGTERM came from Slurm (preemption, time limit, scancel): it requeues or ends the job itself
if [ "$terminated" = 1 ]; then ended terminated "$rc"; exit "$rc"; fi
if [ "$rc" != {EXIT_REQUEUE} ]; then ended failed "$rc"; finish "$rc"; fi
if [ "$attempt" -gt {m} ]; then
  echo "dagster-hpc: attempt $attempt asked to be requeued, but max_requeues={m} is used up ($attempt attempts)" >> ./{STDERR}
  ended exhausted {EXIT_REQUEUES_EXHAUSTED}; finish {EXIT_REQUEUES_EXHAUSTED}
fi
# recorded first: Slurm ends this script as soon as the requeue is accepted
ended requeued {EXIT_REQUEUE}
if [ -n "${{SLURM_JOB_ID:-}}" ] && scontrol requeue "$SLURM_JOB_ID" 2>> ./{STDERR}; then exit 0; fi
echo "dagster-hpc: attempt $attempt asked to be requeued, but scontrol requeue ${{SLURM_JOB_ID:-(no Slurm job)}} failed (see above)" >> ./{STDERR}
ended requeue-failed {EXIT_REQUEUE_FAILED}; finish {EXIT_REQUEUE_FAILED}
"""


_BODY = """\
# dagster-hpc job wrapper: runs {launch} with the run's environment, records its exit code.
set -u
finish() {{
  # a full filesystem must not look like success: without the exit_code file, exit non-zero
  printf '%s\\n' "$1" > ./{exit_code}.tmp && mv -f ./{exit_code}.tmp ./{exit_code} || {{
    echo "dagster-hpc: cannot record exit code $1 in $PWD/{exit_code} (filesystem full?)" >&2
    exit {exit_record}; }}
  exit "$1"
}}
cd -- {run_dir} || {{ echo "dagster-hpc: cannot enter run directory "{run_dir} >&2; exit {exit_cd}; }}
{attempts}set -a
. ./{env_file} || {{ echo "dagster-hpc: cannot source ./{env_file}" >&2; set +a; finish {exit_env}; }}
set +a
export PYTHONUNBUFFERED=1
{requeue_env}# traps first, so a signal that arrives as soon as the payload runs is never lost (the subshell
# below starts with default handlers: bash resets caught traps in subshells)
{child_init}
forward() {{ [ -n "$child" ] && kill -s "$1" "$child" 2>/dev/null || true; }}
{traps}
# a forked subshell sources the launch script (its `exec` replaces the subshell): no second bash
# start-up on the critical path of every job
( set +u; . ./{launch} ) >> ./{stdout} 2>> ./{stderr} < /dev/null &
child=$!
while :; do
  wait "$child"
  rc=$?
  # wait returns early (>128) when a trapped signal arrives: keep waiting while the child lives
  kill -0 "$child" 2>/dev/null || break
done
{ending}"""


def render_job_script(
    run_dir: str, *, header_lines: Sequence[str] = (), requeue: RequeueSpec | None = None
) -> str:
    """job.sh for ``run_dir`` (absolute path where the job runs).

    ``header_lines`` go right after the shebang (the Slurm backend passes ``#SBATCH ...``
    lines); each must be a single comment line. ``requeue``: QueueConfig(requeue=True).
    """
    if not run_dir.startswith("/"):
        raise ConfigError(f"the run directory must be an absolute path, got {run_dir!r}")
    for line in header_lines:
        if not line.startswith("#") or "\n" in line or "\r" in line:
            raise ConfigError(
                f"job script header lines must be single comment lines (e.g. '#SBATCH --time=10'), got {line!r}"
            )
    traps = "\n".join(
        f"trap '{'terminated=1; ' if sig == 'TERM' and requeue else ''}forward {sig}' {sig}"
        for sig in FORWARDED_SIGNALS
    )
    header = "".join(f"{line}\n" for line in header_lines)
    return (
        "#!/usr/bin/env bash\n"
        + header
        + _BODY.format(
            run_dir=shlex.quote(run_dir),
            launch=LAUNCH_SCRIPT,
            env_file=ENV_FILE,
            stdout=STDOUT,
            stderr=STDERR,
            exit_code=EXIT_CODE,
            exit_cd=EXIT_CANNOT_CD,
            exit_env=EXIT_BAD_ENV_FILE,
            exit_record=EXIT_CANNOT_RECORD,
            traps=traps,
            child_init='child="" terminated=0' if requeue else 'child=""',
            attempts=_attempt_lines(requeue),
            requeue_env=_requeue_env(requeue),
            ending=_ending(requeue),
        )
    )


def render_env_file(env: dict[str, str]) -> str:
    """The 0600 env file sourced by job.sh: ``export NAME='value'`` lines, every value quoted."""
    lines = ["# dagster-hpc run environment (mode 0600; may hold secrets: never copy into job.sh)"]
    for name, value in env.items():
        validate_env_name(name)
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def validate_env_name(name: object) -> None:
    if (
        not isinstance(name, str)
        or not name
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isalnum() or c == "_" for c in name)
        or not name.isascii()
    ):
        raise ConfigError(
            f"environment variable name {name!r} is not valid: use letters, digits and '_', not starting with a digit"
        )
