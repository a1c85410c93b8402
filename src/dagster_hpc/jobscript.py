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
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from dagster_hpc.errors import ConfigError
from dagster_hpc.rundir import ENV_FILE, EXIT_CODE, LAUNCH_SCRIPT, STDERR, STDOUT

FORWARDED_SIGNALS = ("TERM", "USR1", "USR2")
# Exit codes the wrapper uses for its own failures (chosen outside the usual payload range).
EXIT_CANNOT_CD = 97
EXIT_BAD_ENV_FILE = 96

_BODY = """\
# dagster-hpc job wrapper: runs {launch} with the run's environment, records its exit code.
set -u
finish() {{
  printf '%s\\n' "$1" > ./{exit_code}.tmp && mv -f ./{exit_code}.tmp ./{exit_code}
  exit "$1"
}}
cd -- {run_dir} || {{ echo "dagster-hpc: cannot enter run directory "{run_dir} >&2; exit {exit_cd}; }}
set -a
. ./{env_file} || {{ echo "dagster-hpc: cannot source ./{env_file}" >&2; set +a; finish {exit_env}; }}
set +a
export PYTHONUNBUFFERED=1
# traps first, so a signal that arrives as soon as the payload runs is never lost (the subshell
# below starts with default handlers: bash resets caught traps in subshells)
child=""
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
finish "$rc"
"""


def render_job_script(run_dir: str, *, header_lines: Sequence[str] = ()) -> str:
    """job.sh for ``run_dir`` (absolute path where the job runs).

    ``header_lines`` go right after the shebang (the Slurm backend passes ``#SBATCH ...``
    lines); each must be a single comment line.
    """
    if not run_dir.startswith("/"):
        raise ConfigError(f"the run directory must be an absolute path, got {run_dir!r}")
    for line in header_lines:
        if not line.startswith("#") or "\n" in line or "\r" in line:
            raise ConfigError(
                f"job script header lines must be single comment lines (e.g. '#SBATCH --time=10'), got {line!r}"
            )
    traps = "\n".join(f"trap 'forward {sig}' {sig}" for sig in FORWARDED_SIGNALS)
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
            traps=traps,
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
