"""Many Pipes channels in one run directory: the common ground of arrays, hetjobs and sessions.

A multi-task run directory holds the payload and ``launch.sh`` once, and one task directory per
task (``t/<index>/``) with exactly the files a single job has (``job.sh`` wrapper, 0600
``env.sh``, ``pipes_context.json``, ``pipes_messages.jsonl``, ``stdout.log``, ``stderr.log``,
``exit_code``): task ``i`` is a complete, ordinary dagster-hpc job in ``t/i``, so everything the
wrapper guarantees (signals forwarded, exit code written atomically, secrets only in the 0600
env file) holds per task. Who starts the task wrappers differs (``sbatch --array``, ``srun
--het-group``, the session agent); this module stages the directory and reads all tasks back
in ONE batched read per tick (``TaskReader``), every line and message labelled with its key.

Log events are grouped per tick: everything the tasks printed to stdout in one read becomes ONE
Dagster log event (its lines in order, each ``[key] line``), the same for stderr and for each
level of Pipes log messages. A Dagster log event is a row in the event log, written before the
next one (25-100 ms each with the SQLite storage on a loaded 2-core machine): one event per line
made an array of 100 tasks printing two lines each spend ~10 s in Dagster's storage.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster_pipes

from dagster_hpc.allocation.batchread import read_changed
from dagster_hpc.errors import AuthenticationError, ConfigError, HostKeyError, TransportError
from dagster_hpc.jobscript import render_env_file, render_job_script
from dagster_hpc.pipes.forward import LOG_LINES_PER_EVENT, STDERR_PREFIX
from dagster_hpc.pipes.tail import FileTail
from dagster_hpc.request import JobRequest
from dagster_hpc.rundir import (
    ENV_FILE,
    EXIT_CODE,
    JOB_SCRIPT,
    LAUNCH_SCRIPT,
    PIPES_CONTEXT,
    PIPES_MESSAGES,
    STDERR,
    STDOUT,
)
from dagster_hpc.transport.base import Transport

TASKS_DIR = "t"
# Bytes per file per tick; a full chunk means more is waiting (read again at once).
TASK_READ_CHUNK_BYTES = 1 << 20
# stderr lines kept per task for its error message.
TASK_STDERR_TAIL_LINES = 20
# While reads keep failing (an SSH outage), repeat the warning at most this often.
TASK_FAILURE_WARN_EVERY_S = 30.0
# After the stop request, give up the final drain when the transport keeps failing this long.
TASK_FINAL_DRAIN_RETRY_S = 30.0
# A task whose exit_code appeared is read once more with nothing new before it is closed: the
# wrapper writes exit_code after the payload's last byte, but our batch may have read the logs a
# moment before the exit_code file (and shared filesystems publish files out of order).
TASK_QUIET_READS_AFTER_EXIT = 1


@dataclass(frozen=True)
class TaskItem:
    """One unit of a fan-out: its key (partition key, item name), extras and environment."""

    key: str
    extras: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def normalize_items(items: Sequence[Any]) -> list[TaskItem]:
    """``items`` of ``run_array``: TaskItem, mappings (extras; key = index) or plain strings
    (keys). Keys must be unique: they label logs, name failures and pick reruns."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ConfigError(
            f"items must be a list (of dicts, strings or TaskItem), got {type(items).__name__}"
        )
    if not items:
        raise ConfigError("items is empty: give run_array at least one item")
    out: list[TaskItem] = []
    for i, item in enumerate(items):
        if isinstance(item, TaskItem):
            out.append(item)
        elif isinstance(item, str):
            out.append(TaskItem(key=item))
        elif isinstance(item, Mapping):
            try:
                json.dumps(dict(item))
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"items[{i}] must be JSON-serialisable (it becomes the task's Pipes extras): {exc}"
                ) from None
            out.append(TaskItem(key=str(item.get("key", i)), extras=dict(item)))
        else:
            raise ConfigError(
                f"items[{i}] must be a dict (extras), a string (key) or TaskItem, got {item!r}"
            )
    seen: set[str] = set()
    for item in out:
        if item.key in seen:
            raise ConfigError(f"item key {item.key!r} appears twice: keys must be unique")
        seen.add(item.key)
    return out


def task_dir(run_dir: str, index: int) -> str:
    return f"{run_dir.rstrip('/')}/{TASKS_DIR}/{index}"


def write_multitask_dir(
    staging: Path,
    run_dir: str,
    request: JobRequest,
    *,
    python: str,
    items: Sequence[TaskItem],
    indices: Sequence[int],
    env_for: Callable[[int, TaskItem, str], dict[str, str]],
    context_for: Callable[[int, TaskItem], dict[str, Any]],
    shared: bool = True,
) -> None:
    """Stage the payload and launch.sh once (``shared``) and task dirs ``t/<i>`` for ``indices``.

    ``env_for(i, item, task_dir)`` is the task's environment (without the Pipes bootstrap,
    added here); ``context_for(i, item)`` its Pipes context data.
    """
    staging.mkdir(parents=True, exist_ok=True)
    shared_files = [request.payload_file] if request.payload_file else []
    shared_files += list(request.extra_files)
    if shared:
        for src in shared_files:
            shutil.copy2(src, staging / src.name)
        _write(
            staging / LAUNCH_SCRIPT, request.launcher.render(request.launch_request(python)), 0o700
        )
    for i in indices:
        item = items[i]
        local = staging / TASKS_DIR / str(i)
        local.mkdir(parents=True, mode=0o700, exist_ok=True)
        remote = task_dir(run_dir, i)
        env = env_for(i, item, remote)
        env[dagster_pipes.DAGSTER_PIPES_CONTEXT_ENV_VAR] = dagster_pipes.encode_env_var(
            {"path": f"{remote}/{PIPES_CONTEXT}"}
        )
        env[dagster_pipes.DAGSTER_PIPES_MESSAGES_ENV_VAR] = dagster_pipes.encode_env_var(
            {"path": f"{remote}/{PIPES_MESSAGES}"}
        )
        _write(local / PIPES_CONTEXT, json.dumps(context_for(i, item)), 0o600)
        _write(local / ENV_FILE, render_env_file(env), 0o600)
        _write(local / JOB_SCRIPT, render_job_script(remote), 0o700)
        # the wrapper sources ./launch.sh and the launcher names the payload relative to the cwd
        for name in [LAUNCH_SCRIPT, *(f.name for f in shared_files)]:
            link = local / name
            if not link.is_symlink():
                os.symlink(f"../../{name}", link)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


@dataclass
class TaskChannel:
    """What one task wrote, as read so far (thread-confined to the reader thread until done)."""

    index: int
    key: str
    dir: str
    messages: FileTail = field(init=False)
    stdout: FileTail = field(init=False)
    stderr: FileTail = field(init=False)
    exit_code: int | None = None
    drained: bool = False
    quiet_after_exit: int = 0
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=TASK_STDERR_TAIL_LINES))
    materializations: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    custom: list[Any] = field(default_factory=list)
    exception: str | None = None
    message_count: int = 0

    def __post_init__(self) -> None:
        self.messages = FileTail(f"{self.dir}/{PIPES_MESSAGES}")
        self.stdout = FileTail(f"{self.dir}/{STDOUT}")
        self.stderr = FileTail(f"{self.dir}/{STDERR}")

    def reset(self) -> None:
        """Forget what was read (the task is rerun and its files start from scratch)."""
        fresh = TaskChannel(self.index, self.key, self.dir)
        self.__dict__.update(fresh.__dict__)


LogFn = Callable[[str], None]


class TaskReader:
    """Tails every task of a multi-task run dir in one batched read per tick (one thread)."""

    def __init__(
        self,
        transport: Transport,
        channels: Sequence[TaskChannel],
        *,
        log: Any,
        interval_s: float,
        idle_interval_s: float | None = None,
        idle_after_s: float = 0.0,
        label: Callable[[TaskChannel], str] | None = None,
    ):
        self._transport = transport
        self.channels = list(channels)
        self._log = log
        self._interval_s = interval_s
        self._idle_interval_s = idle_interval_s
        self._idle_after_s = idle_after_s
        self._label = label or (lambda ch: ch.key)
        self._out: dict[str, list[str]] = {"stdout": [], "stderr": []}  # this tick's lines
        self._logs: dict[str, list[str]] = {}  # this tick's Pipes log messages by level
        self.log_events = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.changed = threading.Event()  # set whenever a task's exit code appears
        self.reads = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dagster-hpc-tasks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Final drain of every task (until quiet), then end the thread; re-raise its error."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> TaskReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def set_interval(self, interval_s: float) -> None:
        """The tick while data keeps coming (from the next tick on; the idle tick stays)."""
        self._interval_s = interval_s

    def add(self, channels: Sequence[TaskChannel]) -> None:
        with self._lock:
            self.channels.extend(channels)

    def exited(self) -> list[TaskChannel]:
        with self._lock:
            return [ch for ch in self.channels if ch.exit_code is not None]

    def all_exited(self) -> bool:
        with self._lock:
            return all(ch.exit_code is not None for ch in self.channels)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - re-raised by stop() in the caller's thread
            self.error = exc
            self.changed.set()

    def _loop(self) -> None:
        failing_since: float | None = None
        warned_at: float | None = None
        last_data = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            try:
                full, got = self._tick(final=stopping)
                if failing_since is not None:
                    self._log.warning(
                        f"dagster-hpc: reading the tasks' files works again after "
                        f"{time.monotonic() - failing_since:.1f} s"
                    )
                failing_since = None
            except (AuthenticationError, HostKeyError):
                raise
            except TransportError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if stopping and now - failing_since > TASK_FINAL_DRAIN_RETRY_S:
                    self._log.warning(f"dagster-hpc: gave up reading the tasks' files: {exc}")
                    return
                if warned_at is None or now - warned_at > TASK_FAILURE_WARN_EVERY_S:
                    warned_at = now
                    self._log.warning(
                        f"dagster-hpc: reading the tasks' files failed, retrying from the same offsets: {exc}"
                    )
                time.sleep(self._interval_s)
                continue
            if full:
                continue
            if stopping and not got:
                for ch in self._active():
                    self._close(ch)
                self._emit_tick()
                return
            if stopping:
                continue
            if got:
                last_data = time.monotonic()
            if (
                not got
                and self._idle_interval_s is not None
                and time.monotonic() - last_data > self._idle_after_s
            ):
                delay = self._idle_interval_s
            else:
                delay = self._interval_s  # read each tick: set_interval may change it
            self._stop.wait(delay)

    def _active(self) -> list[TaskChannel]:
        with self._lock:
            return [ch for ch in self.channels if not ch.drained]

    def _tick(self, *, final: bool) -> tuple[bool, bool]:
        active = self._active()
        if not active:
            return False, False
        requests: list[tuple[str, int]] = []
        for ch in active:
            requests += [(t.path, t.offset) for t in (ch.messages, ch.stdout, ch.stderr)]
            requests.append((f"{ch.dir}/{EXIT_CODE}", 0))
        chunks = read_changed(self._transport, requests, max_bytes=TASK_READ_CHUNK_BYTES)
        self.reads += 1
        full = got_any = False
        for n, ch in enumerate(active):
            msg, out, err, code = chunks[4 * n : 4 * n + 4]
            had_exit = ch.exit_code is not None
            self._lines(ch, "stdout", ch.stdout.feed(out))
            self._lines(ch, "stderr", ch.stderr.feed(err))
            for line in ch.messages.feed(msg):
                self._message(ch, line)
            data = bool(msg or out or err)
            got_any = got_any or data
            full = full or any(len(c) >= TASK_READ_CHUNK_BYTES for c in (msg, out, err))
            if ch.exit_code is None and code.endswith(b"\n"):
                try:
                    ch.exit_code = int(code.strip())
                except ValueError:
                    ch.exit_code = -1
            if had_exit and not data:
                ch.quiet_after_exit += 1
                if ch.quiet_after_exit >= TASK_QUIET_READS_AFTER_EXIT:
                    self._close(ch)
            elif ch.exit_code is not None and not had_exit:
                self.changed.set()
        self._emit_tick()
        return full, got_any

    def _close(self, ch: TaskChannel) -> None:
        self._lines(ch, "stdout", ch.stdout.flush())
        self._lines(ch, "stderr", ch.stderr.flush())
        for line in ch.messages.flush():
            self._message(ch, line)
        with self._lock:
            ch.drained = True
        self.changed.set()

    def _lines(self, ch: TaskChannel, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        if stream == "stderr":
            ch.stderr_tail.extend(lines)
        label = self._label(ch)
        prefix = "" if stream == "stdout" else STDERR_PREFIX
        self._out[stream].extend(f"{prefix}[{label}] {line}" for line in lines)

    def _emit_tick(self) -> None:
        """This tick's lines as few log events as possible: one per stream and Pipes log level
        (split every LOG_LINES_PER_EVENT lines), in the order they were read."""
        batches = [(self._log.info, self._out["stdout"]), (self._log.info, self._out["stderr"])]
        batches += [
            (getattr(self._log, level, self._log.info), msgs) for level, msgs in self._logs.items()
        ]
        for emit, lines in batches:
            for start in range(0, len(lines), LOG_LINES_PER_EVENT):
                emit("\n".join(lines[start : start + LOG_LINES_PER_EVENT]))
                self.log_events += 1
        self._out = {"stdout": [], "stderr": []}
        self._logs = {}

    def _message(self, ch: TaskChannel, line: str) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
            method = message["method"]
            params = message.get("params") or {}
        except (json.JSONDecodeError, KeyError, TypeError):
            self._log.warning(
                f"dagster-hpc: [{self._label(ch)}] ignored a malformed Pipes line: {line[:200]!r}"
            )
            return
        ch.message_count += 1
        label = self._label(ch)
        if method == "log":
            level = str(params.get("level", "info")).lower()
            self._logs.setdefault(level, []).append(f"[{label}] {params.get('message', '')}")
        elif method == "report_asset_materialization":
            ch.materializations.append(params)
        elif method == "report_asset_check":
            ch.checks.append(params)
        elif method == "closed":
            exc = params.get("exception") if isinstance(params, dict) else None
            if exc:
                ch.exception = f"{exc.get('name', 'Exception')}: {exc.get('message', '')}"
        elif method in ("report_custom_message",):
            ch.custom.append(params.get("payload"))
        # "opened", "log_external_stream": nothing to do
