"""Pipes messages + stdout/stderr + the exit-code file, tailed through any ``Transport``.

One background thread; each tick is ONE ``Transport.watch_files`` call (one round trip over
SSH) covering the exit_code file (read first) and the Pipes messages file, stdout.log and
stderr.log. Over SSH the login node waits for a change itself (transport/watch.py): a tick
returns when something was written or the window ended, so a silent job costs one round trip
per window and the window backs off while nothing changes (docs/reader-polling.md). Local
transports read at once and the reader sleeps between ticks, backing off the same way.

Lines are forwarded in file order; a partial last line is held back until it is complete (or
the job has ended). Offsets only advance by what was received, so a failed read (e.g. a
dropped SSH connection) is simply retried from the same offsets: nothing is lost or doubled.
Because the exit_code file is read before the logs, the tick that sees it has also seen every
byte written before it: no extra drain round trip after the job's end.

A requeued job runs again in the same run directory and appends to the same files: the offsets
simply continue, so every attempt's messages and lines arrive exactly once. The wrapper's
``attempts.tsv`` is tailed in the same read (attempt starts and ends, logged as they happen).
A Pipes ``closed`` message is held back until the job's exit code is known: an attempt that
was requeued closed its channel, and the next attempt's messages must not come "after closed".
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_pipes import PIPES_PROTOCOL_VERSION, PIPES_PROTOCOL_VERSION_FIELD, PipesParams

from dagster_hpc.attempts import Attempt, AttemptLog
from dagster_hpc.errors import AuthenticationError, ConfigError, HostKeyError, TransportError
from dagster_hpc.pipes.tail import FileTail
from dagster_hpc.rundir import ATTEMPTS, EXIT_CODE, PIPES_MESSAGES, STDERR, STDOUT
from dagster_hpc.transport.base import Transport
from dagster_hpc.transport.watch import WatchResult

# Local files are cheap to read: a short tick keeps the per-asset overhead near zero.
DEFAULT_TAIL_INTERVAL_S = 0.02
# Transports that do not wait (local files): right after new data (or at start) read again
# after interval/TICK_SPEEDUP, then back off by TICK_BACKOFF per idle tick up to the interval
# (and up to idle_interval_s once quiet for idle_after_s).
TICK_SPEEDUP = 8.0
TICK_BACKOFF = 1.5
# Transports that wait on the login node (SSH): the first wait after a change lasts
# WATCH_WINDOW_MIN_S and doubles per silent window up to WATCH_WINDOW_MAX_S, so a job printing
# nothing costs ~120 round trips an hour (not 36,000), and a job that prints once and runs for
# a few seconds costs no more round trips than a trivial one. A stop request (a job killed
# without an exit code, an interrupted run) waits at most one window.
WATCH_WINDOW_MIN_S = 10.0
WATCH_WINDOW_MAX_S = 30.0
WATCH_WINDOW_BACKOFF = 2.0
# Inside a window the login node checks the files (one stat) after WATCH_CHECK_MIN_S, growing
# by 1.5x per unchanged check up to WATCH_CHECK_MAX_S: a short job's end is seen within tens of
# ms, a line printed after an hour of silence within 2 s, at ~1,800 stats an hour.
WATCH_CHECK_MIN_S = 0.02
WATCH_CHECK_MAX_S = 2.0
# ...except during the first WATCH_FAST_FOR_S after the start or the last change: then it checks
# at least every WATCH_CHECK_FAST_S, so a short job's end is seen within 50 ms (as fast as a
# client polling squeue every 0.1 s), at ~100 stats per change.
WATCH_CHECK_FAST_S = 0.05
WATCH_FAST_FOR_S = 5.0
# Output comes in bursts (a payload's last messages, then its exit): after a change the login
# node watches the exit_code file alone (no process) for up to this long, so that the burst and
# the job's end usually share one answer; live lines arrive at most this much later.
WATCH_LINGER_S = 0.15
# Bytes per file per tick; a full chunk means "more is waiting": read again without sleeping.
READ_CHUNK_BYTES = 4 << 20
# Bytes of stdout (and of stderr) forwarded to Dagster per job, by default
# (``ComputeResource(forward_cap_bytes=...)``): a payload that prints a gigabyte would otherwise
# stall the step behind millions of log events and fill the Dagster host's disk (the event log).
# Past the cap the file is no longer read; the rest stays in the run directory on the cluster
# (kept, whatever keep_run_dirs says), and the log and metadata say so.
FORWARD_CAP_BYTES = 8 << 20
# The smallest cap accepted: below it the setting is almost surely a size in the wrong unit
# (forward_cap_bytes=8 meant as 8 MiB), and a few hundred log lines are always worth forwarding.
FORWARD_CAP_MIN_BYTES = 64 << 10
# Metadata key naming what was not forwarded (one per capped stream: stdout, stderr).
CAPPED_METADATA_KEY = "dagster-hpc/{stream}_not_forwarded"
# How many stderr lines we keep for error messages.
STDERR_TAIL_LINES = 30
# Without an exit code (a killed job, an interrupted run) the final drain ends after this many
# consecutive empty batches once stop was requested.
FINAL_DRAIN_QUIET_BATCHES = 2
# While reads keep failing (an SSH outage), repeat the warning at most this often.
FAILURE_WARN_EVERY_S = 30.0
# After stop is requested, give up the final drain if the transport keeps failing this long
# (the files stay in the run directory; the error says where).
FINAL_DRAIN_RETRY_S = 30.0


def check_forward_cap(value: object) -> int:
    """ConfigError unless ``value`` is a whole number of bytes >= FORWARD_CAP_MIN_BYTES."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"forward_cap_bytes={value!r} is not a whole number of bytes: e.g. {FORWARD_CAP_BYTES} "
            "(8 MiB, the default)"
        )
    if value < FORWARD_CAP_MIN_BYTES:
        raise ConfigError(
            f"forward_cap_bytes={value} is below {FORWARD_CAP_MIN_BYTES} ({FORWARD_CAP_MIN_BYTES >> 10} "
            f"KiB): the setting is in bytes (8 MiB is {FORWARD_CAP_BYTES})"
        )
    return value


LineSink = Callable[
    [str, list[str]], None
]  # (stream name "stdout"|"stderr", complete lines in order)


def _protocol_message(method: str) -> dict:
    return {PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, "method": method, "params": {}}


class RunDirMessageReader(dg.PipesMessageReader):
    """Reads everything a job writes into its run directory while it runs."""

    def __init__(
        self,
        transport: Transport,
        run_dir: str,
        line_sink: LineSink,
        *,
        interval_s: float = DEFAULT_TAIL_INTERVAL_S,
        warn: Callable[[str], None] | None = None,
        idle_interval_s: float | None = None,
        idle_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        pipes: bool = True,
        on_attempt: Callable[[str], None] | None = None,
        forward_cap_bytes: int = FORWARD_CAP_BYTES,
    ):
        self._transport = transport
        # pipes=False: the payload does not use Pipes (a plain tool, a shell script); the
        # channel is opened and closed on its behalf, so Dagster does not warn that nothing came.
        self._pipes = pipes
        self._run_dir = run_dir.rstrip("/")
        self._sink = line_sink
        self._warn = warn or (lambda msg: None)
        self._interval_s = interval_s
        self._min_interval_s = interval_s / TICK_SPEEDUP
        # Optional slower cap once the job has been quiet for idle_after_s (long jobs over SSH:
        # a fast tick for hours would cost the login node a shell every tick).
        self._idle_interval_s = idle_interval_s
        self._idle_after_s = idle_after_s
        # injectable for tests (reads per simulated hour); sleep defaults to a stop-aware wait
        self._clock = clock
        self._sleep = sleep
        self._messages = FileTail(f"{self._run_dir}/{PIPES_MESSAGES}")
        self._stdout = FileTail(f"{self._run_dir}/{STDOUT}")
        self._stderr = FileTail(f"{self._run_dir}/{STDERR}")
        self._attempts = FileTail(f"{self._run_dir}/{ATTEMPTS}")
        self._attempt_log = AttemptLog()
        self._on_attempt = on_attempt or (lambda _line: None)
        self._held_closed: dict | None = None  # a "closed" not yet known to be the last one
        self._exit_code_path = f"{self._run_dir}/{EXIT_CODE}"
        self._cap = forward_cap_bytes
        self.capped: dict[str, str] = {}  # stream -> where the rest is (no longer read)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.exit_code: int | None = None
        self.exited = threading.Event()  # the exit code is known
        # everything the job wrote before its exit code was read (only the held-back partial
        # last lines remain, flushed when the session closes): the run dir may go
        self.complete = threading.Event()
        self.ticks = 0  # watch/read round trips made (benchmarks, tests)
        # when the last bytes arrived (the reader's clock): while it is still forwarding a burst,
        # a job that Slurm already reports ended is not yet "ended without an exit code"
        self.progress_at = clock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.message_count = 0

    @property
    def attempts(self) -> list[Attempt]:
        """The job's attempts read so far (one for a job that was never requeued)."""
        return self._attempt_log.attempts

    # -- Dagster's reader interface -------------------------------------------------------
    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[PipesParams]:
        thread = threading.Thread(
            target=self._run, args=(handler,), name="dagster-hpc-tail", daemon=True
        )
        if not self._pipes:
            handler.handle_message(_protocol_message("opened"))
        thread.start()
        try:
            yield {"path": self._messages.path}
        finally:
            self._stop.set()
            thread.join()
            if not self._pipes:
                handler.handle_message(_protocol_message("closed"))
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> BaseException | None:
        """What stopped the tail thread early (re-raised when the session closes), if anything."""
        return self._error

    @property
    def expected_writer_count(self) -> int:
        return 1  # one payload process writes the messages file

    def no_messages_debug_text(self) -> str:
        return (
            f"dagster-hpc tailed Pipes messages from {self._messages.path} and nothing arrived. "
            "The payload must call dagster_pipes.open_dagster_pipes() (it then writes there), or "
            "say it does not use Pipes: compute.run(..., pipes=False). Its stdout and stderr lines "
            f"are the log lines above ({self._stdout.path} and {self._stderr.path}; the run "
            "directory is kept if the step fails)."
        )

    # -- the tail thread --------------------------------------------------------------------
    def _run(self, handler: dg.PipesMessageHandler) -> None:
        try:
            self._loop(handler)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread by read_messages
            self._error = exc
            self.exited.set()

    def _wait(self, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
        elif self._stop.is_set():
            time.sleep(delay)  # the stop event is set: wait() would not pause
        else:
            self._stop.wait(delay)

    def _loop(self, handler: dg.PipesMessageHandler) -> None:
        failing_since: float | None = None
        warned_at: float | None = None
        delay = self._min_interval_s  # client-side sleep (transports that do not wait)
        check, window = WATCH_CHECK_MIN_S, WATCH_WINDOW_MIN_S  # login-node wait (those that do)
        quiet_batches = 0  # consecutive empty batches since stop was requested
        last_data = self._clock()
        while True:
            stopping = self._stop.is_set()  # read before the tick: the last tick sees final sizes
            try:
                no_wait = stopping or self.exit_code is not None
                fast = max(0.0, WATCH_FAST_FOR_S - (self._clock() - last_data))
                result = self._watch(0.0 if no_wait else window, check, fast)
                if failing_since is not None:
                    self._warn(
                        f"reading the job's files works again after {self._clock() - failing_since:.1f} s"
                    )
                failing_since = None
            except (AuthenticationError, HostKeyError):
                raise  # refused credentials never heal by retrying (and must not lock the account)
            except TransportError as exc:
                now = self._clock()
                if failing_since is None:
                    failing_since, warned_at = now, None
                if stopping and now - failing_since > FINAL_DRAIN_RETRY_S:
                    self._warn(f"gave up reading the job's files in {self._run_dir}: {exc}")
                    return
                if warned_at is None or now - warned_at > FAILURE_WARN_EVERY_S:
                    warned_at = now
                    self._warn(
                        f"reading the job's files failed, retrying from the same offsets: {exc}"
                    )
                self._wait(self._interval_s)
                continue
            full, got_any = self._consume(handler, result)
            if got_any:
                self.progress_at = self._clock()
            # exact answers (watch.sh reads each file up to its size) are complete unless full;
            # a plain batched read may be short, so it is complete when one comes back empty
            if self.exit_code is not None and not full and (result.waited or not got_any):
                self.complete.set()  # before exited: whoever sees exited also sees this
                self.exited.set()
                self._stop.wait()  # nothing more will be written: wait for the session to close
                self._drain_partials(handler)
                return
            if self.exit_code is not None:
                self.exited.set()
            if full or (stopping and got_any):
                quiet_batches = 0
                continue  # more is waiting; when stopping, read until batches come back empty
            if stopping:
                quiet_batches += 1
                if quiet_batches >= FINAL_DRAIN_QUIET_BATCHES:
                    self._drain_partials(handler)
                    return
                self._wait(self._min_interval_s)
                continue
            if got_any:
                last_data = self._clock()
                delay, check, window = self._min_interval_s, WATCH_CHECK_MIN_S, WATCH_WINDOW_MIN_S
            elif result.waited:
                check = min(max(result.next_check_s, WATCH_CHECK_MIN_S), WATCH_CHECK_MAX_S)
                window = min(window * WATCH_WINDOW_BACKOFF, WATCH_WINDOW_MAX_S)
            else:
                cap = self._interval_s
                idle = self._clock() - last_data > self._idle_after_s
                if self._idle_interval_s is not None and idle:
                    cap = max(cap, self._idle_interval_s)
                delay = min(delay * TICK_BACKOFF, cap)
            if not result.waited and not got_any and self.exit_code is None:
                self._wait(delay)

    def _tails(self) -> list[FileTail]:
        """The files still read: a log stream past its cap is left in place."""
        streams = (("stdout", self._stdout), ("stderr", self._stderr))
        kept = [t for name, t in streams if name not in self.capped]
        return [self._messages, *kept, self._attempts]

    def _watch(self, window: float, check: float, fast: float) -> WatchResult:
        self.ticks += 1
        tails = self._tails()
        result = self._transport.watch_files(
            self._exit_code_path,
            [(t.path, t.offset) for t in tails],
            window_s=window,
            check_s=check,
            check_max_s=WATCH_CHECK_MAX_S,
            linger_s=WATCH_LINGER_S,
            max_bytes=READ_CHUNK_BYTES,
            fast_s=fast,
            fast_cap_s=WATCH_CHECK_FAST_S,
        )
        # a transport fake may answer fewer tails than asked (no attempts file): those read b""
        by_tail = dict(zip((id(t) for t in tails), result.chunks, strict=False))
        every = (self._messages, self._stdout, self._stderr, self._attempts)
        chunks = [by_tail.get(id(t), b"") for t in every]
        return WatchResult(result.exit_chunk, chunks, result.waited, result.next_check_s)

    def _consume(self, handler: dg.PipesMessageHandler, result: WatchResult) -> tuple[bool, bool]:
        """Forward one answer; returns (a chunk was full: more is waiting, any bytes arrived)."""
        msg_chunk, out_chunk, err_chunk, *rest = result.chunks
        attempt_chunk = rest[0] if rest else b""  # a transport fake may answer three tails
        for line in self._attempts.feed(attempt_chunk):
            text = self._attempt_log.feed(line)
            if text is not None:
                self._on_attempt(text)
        self._emit("stdout", self._stdout.feed(self._below_cap("stdout", self._stdout, out_chunk)))
        self._emit("stderr", self._stderr.feed(self._below_cap("stderr", self._stderr, err_chunk)))
        for line in self._messages.feed(msg_chunk):
            self._handle_message_line(handler, line)
        exit_chunk = result.exit_chunk
        if self.exit_code is None and exit_chunk.endswith(b"\n"):
            try:
                self.exit_code = int(exit_chunk.strip())
            except ValueError:
                self._warn(f"{self._exit_code_path} holds {exit_chunk[:50]!r}, not an exit code")
                self.exit_code = -1
        data = (msg_chunk, out_chunk, err_chunk, attempt_chunk)
        return any(len(c) >= READ_CHUNK_BYTES for c in data), any(data)

    def _below_cap(self, stream: str, tail: FileTail, chunk: bytes) -> bytes:
        """The part of ``chunk`` within the forwarding cap; reaching the cap stops the reads."""
        if stream in self.capped:
            return b""  # no longer read (a transport fake may still answer)
        room = self._cap - tail.offset
        if len(chunk) < room:
            return chunk
        self.capped[stream] = (
            f"{tail.path} from byte {self._cap} on: not forwarded (cap {self._cap} bytes per "
            "stream), left in place; the run directory is kept"
        )
        self._warn(
            f"{stream} of the job passed the forwarding cap of {self._cap} bytes: the rest is "
            f"not copied to Dagster and stays in {tail.path} where the job ran (run directory kept)"
        )
        return chunk[: max(room, 0)]

    def capped_metadata(self) -> dict[str, str]:
        return {CAPPED_METADATA_KEY.format(stream=k): v for k, v in self.capped.items()}

    def _drain_partials(self, handler: dg.PipesMessageHandler) -> None:
        self._emit("stdout", self._stdout.flush())
        self._emit("stderr", self._stderr.flush())
        for line in self._messages.flush():
            self._handle_message_line(handler, line)
        for line in self._attempts.flush():
            text = self._attempt_log.feed(line)
            if text is not None:
                self._on_attempt(text)
        if self._held_closed is not None:  # the last attempt's: the channel closes now
            handler.handle_message(self._held_closed)
            self._held_closed = None

    def _emit(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        if stream == "stderr":
            self.stderr_tail.extend(lines)
        self._sink(stream, lines)

    def _handle_message_line(self, handler: dg.PipesMessageHandler, line: str) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            self._warn(
                f"ignored a malformed Pipes message line in {self._messages.path}: {line[:200]!r}"
            )
            return
        self.message_count += 1
        if isinstance(message, dict) and message.get("method") == "closed":
            self._held_closed = message  # forwarded at the end, unless another attempt follows
            return
        if self._held_closed is not None:
            self._held_closed = None  # a requeued attempt's "closed": the job went on
        handler.handle_message(message)
