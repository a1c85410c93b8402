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

Under other executors nothing is registered and ``execute`` behaves as before.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg

_registry_lock = threading.Lock()
_registry: dict[tuple[str, str], StepCancellation] = {}
_current = threading.local()  # .token: the request ``cooperative_step`` is honouring on this thread
F = TypeVar("F", bound=Callable[..., Any])


class StepCancellation:
    """The stop request of one step attempt, and who is in a position to honour it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None  # the step's thread, once it runs (``attach``)
        self._requested = threading.Event()
        self._cooperative = 0  # ComputeResource.run calls of this step currently waiting on a job
        self._closed = False  # the step's code has returned: nothing left to interrupt
        self.raised_async = False

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self) -> None:
        """Ask the step to stop: cooperatively if it is inside ``execute``, else asynchronously."""
        with self._lock:
            if self._requested.is_set():
                return
            self._requested.set()
            if self._thread_id is not None and self._cooperative == 0 and not self._closed:
                self.raised_async = _raise_in_thread(self._thread_id)

    def attach(self) -> None:
        """Called first on the step's own thread (a request that came earlier stops it here)."""
        with self._lock:
            self._thread_id = threading.get_ident()
            self.check()

    def check(self) -> None:
        """Raise DagsterExecutionInterruptedError if a stop was requested."""
        if self._requested.is_set():
            raise dg.DagsterExecutionInterruptedError(
                "dagster-hpc: the run is being terminated; this step stops"
            )

    def close(self) -> None:
        """The step's code has returned: a later request must not interrupt the thread."""
        with self._lock:
            self._closed = True

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


def _raise_in_thread(thread_id: int) -> bool:
    """Schedule DagsterExecutionInterruptedError in another thread (raised at its next Python
    instruction; a thread blocked in C, e.g. ``time.sleep``, sees it when the call returns)."""
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    done = set_async_exc(
        ctypes.c_ulong(thread_id), ctypes.py_object(dg.DagsterExecutionInterruptedError)
    )
    return done == 1


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
