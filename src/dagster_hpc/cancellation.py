"""Run termination for steps that run on worker threads (``dagster_hpc.executor``).

Dagster terminates a run by interrupting its process: the signal reaches the main thread only.
Under the concurrent executor a step runs on a worker thread, so the executor asks it to stop
through a ``StepCancellation`` registered under (run id, step key):

- inside ``ComputeResource.run`` (``execute``) the request is cooperative: the wait loop sees
  it within one poll tick, cancels the job (scancel + confirmation, or the local process
  group) and raises ``DagsterExecutionInterruptedError``. A request that comes before the job
  is submitted stops the step before anything is staged.
- anywhere else in the asset body the executor raises ``DagsterExecutionInterruptedError`` in
  the step's thread asynchronously (what an interrupt does to the main thread under Dagster's
  in-process executor). The lock below makes the choice atomic: a step is never interrupted
  asynchronously while it is between ``sbatch`` and recording the job it submitted.
- an asynchronous exception fires at whatever Python line the thread runs next. Landing inside
  ``logging``, ``threading``, the import system, SQLite/SQLAlchemy or Dagster's own event
  machinery, it can leave a lock taken for good (measured: a body that logs in a loop left a
  logging handler's lock held and the run hung at its own failure event). So the interrupt is
  raised only while the thread's innermost frame is outside those modules (UNSAFE_MODULES,
  ``safe_point``) and not while it handles an exception; otherwise the orchestrator tries again
  every tick (``interrupt_pending``), and after FORCE_INTERRUPT_AFTER_S (5 s) it raises wherever
  the thread is (a run that cannot stop is worse; the executor says so in an engine event). A
  body looping on ``queue.get``/``Event.wait``, in ``subprocess`` waits or logging in a tight
  loop is therefore forced.
  Once raised, an interrupt is not repeated: a body that swallows it runs on until the
  executor's termination grace ends.

Under other executors nothing is registered and ``execute`` behaves as before.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg

_registry_lock = threading.Lock()
_registry: dict[tuple[str, str], StepCancellation] = {}
_current = threading.local()  # .token: the request ``cooperative_step`` is honouring on this thread
F = TypeVar("F", bound=Callable[..., Any])

# Top-level modules an asynchronous interrupt must not land in (see the module docstring): locks
# taken without a ``with`` (logging handlers, the import lock, queue and thread internals), half-
# written events and storage transactions, and dagster-hpc's own bookkeeping (it is stopped
# cooperatively, never asynchronously). Measured on a body that logs in a tight loop: with these
# excluded, 45 of 45 terminations ended; raising wherever the thread was, 1 in 6 hung.
UNSAFE_MODULES = frozenset(
    {
        "_frozen_importlib",
        "_frozen_importlib_external",
        "_weakrefset",
        "abc",
        "asyncio",
        "asyncssh",
        "concurrent",
        "contextlib",
        "dagster",
        "dagster_hpc",
        "dagster_pipes",
        "dagster_shared",
        "importlib",
        "logging",
        "queue",
        "selectors",
        "socket",
        "sqlalchemy",
        "sqlite3",
        "ssl",
        "subprocess",
        "threading",
        "weakref",
        "zipimport",
    }
)
# A stop request waits at most this long for the step's thread to be at a safe point, then the
# interrupt is raised wherever the thread is. A body that logs in a tight loop is nearly always
# inside logging's I/O when this thread gets the GIL, so it is often forced: measured, 22 of 22
# such terminations ended in 1.2-6.4 s.
FORCE_INTERRUPT_AFTER_S = 5.0
# Each ``interrupt_pending`` looks at the thread up to this many times, this far apart (the thread
# runs in between; with the GIL contended a look costs ~5 ms): a body that logs in a tight loop
# is in its own code well under 1% of the time when this thread gets to look. ``request`` looks
# once (the orchestrator asks every in-flight step first, then retries the owed ones every tick).
SAFE_POINT_TRIES = 50
SAFE_POINT_TRY_INTERVAL_S = 0.001
# While looking at the thread and raising in it, the thread should not run (it must not move
# between the look and the raise): the interpreter's switch interval is raised and the garbage
# collector paused for those microseconds, and a second look after the raise takes the
# exception back if the thread moved all the same (see ``_interrupt``).
_HOLD_GIL_S = 1.0
_window_lock = threading.Lock()  # one look-and-raise at a time (it changes process-wide settings)
_SET_ASYNC_EXC = ctypes.pythonapi.PyThreadState_SetAsyncExc


class StepCancellation:
    """The stop request of one step attempt, and who is in a position to honour it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None  # the step's thread, once it runs (``attach``)
        self._requested = threading.Event()
        self._owed_since = 0.0  # since when an asynchronous interrupt is owed (the force clock)
        self._cooperative = 0  # ComputeResource.run calls of this step currently waiting on a job
        self._closed = False  # the step's code has returned: nothing left to interrupt
        self._honoured = False  # the step saw the request itself (``check``) or was interrupted
        self._pending = False  # an asynchronous interrupt is owed, waiting for a safe point
        self.raised_async = False
        self.forced = False  # raised after FORCE_INTERRUPT_AFTER_S, not at a safe point

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def pending(self) -> bool:
        """An asynchronous interrupt is still owed (``interrupt_pending`` tries again)."""
        return self._pending

    def request(self) -> None:
        """Ask the step to stop: cooperatively if it is inside ``execute``, else asynchronously
        (at the thread's next safe point: now, or in a later ``interrupt_pending``)."""
        with self._lock:
            if self._requested.is_set():
                return
            self._requested.set()
            self._owed_since = time.monotonic()
            self._pending = (
                self._thread_id is not None and self._cooperative == 0 and not self._closed
            )
        self.interrupt_pending(tries=1)

    def interrupt_pending(self, tries: int = SAFE_POINT_TRIES) -> bool:
        """Raise the owed interrupt if the thread is at a safe point (``tries`` looks, a few ms
        apart); True once raised. Called by the orchestrator every tick while one is owed."""
        for attempt in range(tries):
            if attempt:
                time.sleep(SAFE_POINT_TRY_INTERVAL_S)
            with self._lock:
                if not self._pending:
                    return self.raised_async
                if self._closed or self._honoured or self._cooperative:
                    self._pending = False  # it stops by itself, or has stopped
                    return False
                forced = time.monotonic() - self._owed_since >= FORCE_INTERRUPT_AFTER_S
                assert self._thread_id is not None
                if _interrupt(self._thread_id, forced=forced):
                    self._pending = False
                    self._honoured = True
                    self.raised_async = True
                    self.forced = forced
                    return True
        return False

    def attach(self) -> None:
        """Called first on the step's own thread (a request that came earlier stops it here)."""
        with self._lock:
            self._thread_id = threading.get_ident()
            self.check()

    def check(self) -> None:
        """Raise DagsterExecutionInterruptedError if a stop was requested."""
        if self._requested.is_set():
            self._honoured = True  # no asynchronous interrupt on top of this one
            raise dg.DagsterExecutionInterruptedError(
                "dagster-hpc: the run is being terminated; this step stops"
            )

    def close(self) -> None:
        """The step's code has returned: a later request must not interrupt the thread."""
        with self._lock:
            self._closed = True
            self._pending = False

    @contextmanager
    def cooperative(self) -> Iterator[None]:
        """The caller polls ``check()`` and cancels its own job (``execute``'s wait loop)."""
        with self._lock:
            self.check()  # nothing submitted yet: stop here
            self._cooperative += 1
        try:
            yield
        finally:
            with self._lock:
                self._cooperative -= 1
                if self._cooperative == 0 and self._requested.is_set() and not self._honoured:
                    # the job ended before the wait loop saw the request, and the body goes on:
                    # it is owed an asynchronous interrupt (at its next safe point)
                    self._pending = not self._closed
                    self._owed_since = time.monotonic()


def safe_point(frame: Any) -> bool:
    """Whether an asynchronous exception may fire in ``frame`` (a thread's innermost frame): not
    inside one of UNSAFE_MODULES, nor in frozen code (the import system)."""
    if frame is None:
        return False
    if frame.f_code.co_filename.startswith("<frozen"):
        return False
    name = frame.f_globals.get("__name__") or ""
    return name.split(".", 1)[0] not in UNSAFE_MODULES


def _active_exception(thread_id: int) -> BaseException | None:
    """The exception ``thread_id`` is handling (an except or finally block), if any."""
    exc = sys._current_exceptions().get(thread_id)
    if isinstance(exc, tuple):  # Python 3.11: sys.exc_info()-style triples
        exc = exc[1]
    return exc


def _interrupt(thread_id: int, *, forced: bool) -> bool:
    """Raise the interrupt in ``thread_id`` if it is at a safe point (or ``forced``).

    Between the look and the raise this thread keeps running (the switch interval raised, the
    garbage collector paused); a thread that was already waiting for the GIL may still take it
    in between, so a second look follows the raise: if the thread moved, the pending exception is
    taken back before it can fire (it fires only when the thread runs again) and the caller tries
    again later. A thread already unwinding an exception is left alone (it is stopping)."""
    with _window_lock:
        previous = sys.getswitchinterval()
        collecting = gc.isenabled()
        gc.disable()
        sys.setswitchinterval(_HOLD_GIL_S)
        try:
            frame = sys._current_frames().get(thread_id)
            if frame is None:
                return False  # the thread has ended
            if not forced and (_active_exception(thread_id) is not None or not safe_point(frame)):
                return False  # handling an exception, or inside library code: not now
            where = frame.f_lasti
            tid = ctypes.c_ulong(thread_id)
            if _SET_ASYNC_EXC(tid, ctypes.py_object(dg.DagsterExecutionInterruptedError)) != 1:
                return False
            after = sys._current_frames().get(thread_id)
            if forced or (after is frame and after.f_lasti == where):
                return True
            if isinstance(_active_exception(thread_id), dg.DagsterExecutionInterruptedError):
                return True  # it ran after the raise: the exception fired where it was looked at
            _SET_ASYNC_EXC(tid, None)  # it moved before the raise: NULL takes the exception back
            return False
        finally:
            sys.setswitchinterval(previous)
            if collecting:
                gc.enable()


def register(run_id: str, step_key: str) -> StepCancellation:
    """A stop request for ``step_key`` of ``run_id``, found by ``execute`` on any thread."""
    token = StepCancellation()
    with _registry_lock:
        _registry[(run_id, step_key)] = token
    return token


def unregister(run_id: str, step_key: str, token: StepCancellation) -> None:
    token.close()
    with _registry_lock:
        if _registry.get((run_id, step_key)) is token:
            del _registry[(run_id, step_key)]


def lookup(run_id: str, step_key: str) -> StepCancellation | None:
    """The stop request for this step, when it runs under the concurrent executor."""
    with _registry_lock:
        return _registry.get((run_id, step_key))


def _for_context(context: Any) -> StepCancellation | None:
    if not _registry:  # no step runs under the concurrent executor in this process
        return None
    op_context = getattr(context, "op_execution_context", context)
    step_key = op_context.get_step_execution_context().step.key
    return lookup(context.run.run_id, step_key)


def cooperative_step(fn: F) -> F:
    """Decorate ``execute(context, ...)``: under the concurrent executor it stops before staging
    when the run is already being terminated, and its wait loop honours a later request
    (``check_current``) by cancelling its own job. Elsewhere the call is unchanged."""

    @functools.wraps(fn)
    def wrapper(context: Any, *args: Any, **kwargs: Any) -> Any:
        token = _for_context(context)
        if token is None:
            return fn(context, *args, **kwargs)
        previous = getattr(_current, "token", None)
        with token.cooperative():
            _current.token = token
            try:
                return fn(context, *args, **kwargs)
            finally:
                _current.token = previous

    return wrapper  # type: ignore[return-value]


def check_current() -> None:
    """In a ``cooperative_step`` call: raise DagsterExecutionInterruptedError when asked to stop."""
    token = getattr(_current, "token", None)
    if token is not None:
        token.check()
