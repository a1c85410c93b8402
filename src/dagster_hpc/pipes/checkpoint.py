"""Checkpoint and requeue, on the payload side (Python standard library only).

This file is staged into every run directory as ``dagster_hpc_checkpoint.py``, next to the
payload: a payload imports it as ``from dagster_hpc_checkpoint import Checkpoint`` and needs
nothing else from dagster-hpc (dagster-pipes stays its only dependency). It must therefore
import nothing but the standard library. With ``QueueConfig(requeue=True)``:

- the job wrapper exports ``DAGSTER_HPC_CHECKPOINT_DIR`` (``<run dir>/checkpoint``, kept across
  attempts; also the Pipes extra ``dagster_hpc_checkpoint_dir``), ``DAGSTER_HPC_ATTEMPT``
  (1, 2, ...) and ``DAGSTER_HPC_CHECKPOINT_SIGNAL`` (e.g. ``USR2``: Slurm sends it
  ``signal_before_timeout`` seconds before the time limit);
- ``Checkpoint.from_env()`` reads them and catches that signal and SIGTERM (preemption);
- the payload saves its state when ``stop_requested`` and calls ``requeue()``, which exits with
  ``EXIT_REQUEUE``: the wrapper then asks Slurm to requeue the job, and the next attempt starts
  in the same run directory and ``load()``s the state.

    from dagster_pipes import open_dagster_pipes
    from dagster_hpc_checkpoint import Checkpoint

    with open_dagster_pipes() as pipes:
        ckpt = Checkpoint.from_env(pipes)
        state = ckpt.load(default={"done": 0})
        while state["done"] < 100:
            work(state)
            state["done"] += 1
            ckpt.requeue_if_asked(state)  # saves and exits only when the signal came
        pipes.report_asset_materialization(metadata={"attempts": ckpt.attempt})

Without requeue (local mode, or no ``requeue=True``) the same code runs to its end: the signal
never comes, ``attempt`` is 1, the directory is ``<run dir>/checkpoint``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

# The exit code that asks the job wrapper for a requeue (jobscript.EXIT_REQUEUE: a unit test
# keeps the two equal; this file cannot import the library).
EXIT_REQUEUE = 98
ENV_DIR = "DAGSTER_HPC_CHECKPOINT_DIR"
ENV_ATTEMPT = "DAGSTER_HPC_ATTEMPT"
ENV_SIGNAL = "DAGSTER_HPC_CHECKPOINT_SIGNAL"
EXTRA_DIR = "dagster_hpc_checkpoint_dir"
# Without the variable (no requeue): <run dir>/checkpoint, or ./checkpoint outside a run.
DEFAULT_DIR_NAME = "checkpoint"
STATE_FILE = "state.json"


class Checkpoint:
    """Where to save, which attempt this is, and whether Slurm asked us to stop."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        attempt: int = 1,
        signal_name: str | None = None,
        pipes: Any = None,
    ):
        self.directory = Path(directory)
        self.attempt = attempt
        self.signal_name = signal_name
        self._pipes = pipes  # a dagster_pipes.PipesContext, for log lines in Dagster
        self.stop_signal: str | None = None  # the signal that arrived, if any

    @classmethod
    def from_env(cls, pipes: Any = None, *, watch: bool = True) -> Checkpoint:
        """From the wrapper's variables (or the Pipes extra); ``watch`` installs the handlers."""
        directory = os.environ.get(ENV_DIR) or _extra(pipes)
        if not directory:
            run_dir = os.environ.get("DAGSTER_HPC_RUN_DIR") or os.getcwd()
            directory = os.path.join(run_dir, DEFAULT_DIR_NAME)
        raw_attempt = os.environ.get(ENV_ATTEMPT, "1")
        attempt = int(raw_attempt) if raw_attempt.isdigit() and int(raw_attempt) > 0 else 1
        ckpt = cls(directory, attempt=attempt, signal_name=os.environ.get(ENV_SIGNAL), pipes=pipes)
        if watch:
            ckpt.watch()
        return ckpt

    # -- the signal ---------------------------------------------------------------------------
    def watch(self) -> None:
        """Catch the checkpoint signal and SIGTERM: they only set ``stop_requested`` (the payload
        saves at its next safe point). Main thread only (Python's rule for signal handlers)."""
        names = [n for n in (self.signal_name, "TERM") if n]
        for name in dict.fromkeys(names):
            number = getattr(signal, f"SIG{name.upper().removeprefix('SIG')}", None)
            if number is None and name.isdigit():
                number = int(name)
            if number is not None:
                signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, _frame: Any) -> None:
        self.stop_signal = signal.Signals(number).name

    @property
    def stop_requested(self) -> bool:
        """True once the pre-timeout signal (or SIGTERM: preemption, scancel) arrived."""
        return self.stop_signal is not None

    @property
    def resumed(self) -> bool:
        """True when an earlier attempt left a saved state."""
        return (self.directory / STATE_FILE).is_file()

    # -- state --------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A file in the checkpoint directory (for payloads that save their own formats)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.directory / name

    def load(self, default: Any = None) -> Any:
        """The JSON state the last ``save`` wrote, or ``default`` (first attempt)."""
        try:
            return json.loads((self.directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return default

    def save(self, state: Any) -> None:
        """Write ``state`` as JSON atomically (tmp, fsync, rename): a kill mid-save leaves the
        previous checkpoint intact."""
        target = self.path(STATE_FILE)
        tmp = target.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    # -- requeue --------------------------------------------------------------------------------
    def requeue(self) -> NoReturn:
        """Exit asking to be requeued (call ``save`` first). The wrapper requeues the job while
        max_requeues allows; the next attempt starts in the same run directory."""
        why = f" ({self.stop_signal})" if self.stop_signal else ""
        self._log(f"attempt {self.attempt}{why}: checkpoint saved, asking to be requeued")
        close = getattr(self._pipes, "close", None)
        if close is not None:
            close()  # a clean "closed" (else it would carry this SystemExit as an exception)
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(EXIT_REQUEUE)

    def requeue_if_asked(self, state: Any) -> None:
        """At a safe point: when the signal arrived, save ``state`` and requeue; else nothing."""
        if self.stop_requested:
            self.save(state)
            self.requeue()

    def _log(self, text: str) -> None:
        log = getattr(self._pipes, "log", None)
        if log is not None:
            log.info(text)
        else:
            print(f"dagster-hpc checkpoint: {text}", file=sys.stderr)


def _extra(pipes: Any) -> str | None:
    if pipes is None:
        return None
    try:
        value = pipes.get_extra(EXTRA_DIR)
    except Exception:  # noqa: BLE001 - dagster_pipes raises when the extra is absent
        return None
    return value if isinstance(value, str) else None
