"""Which ``compute.run`` call of a step this is: the key that reattach is bound to.

A step may run several payloads (preprocess, then train). Reattach must only ever adopt the
job an earlier attempt of the SAME call submitted: keyed by the step alone, the second call of
a step found the first call's job, and with ``keep_run_dirs="always"`` it "reattached" to it
(the second payload never ran and the step succeeded with the first job's output).

Calls are numbered 0, 1, 2 ... in the order they start within one attempt of a step (one run
id, step key and retry number). An attempt that runs again (step retry, re-execution from
failure) makes the same calls in the same order, so call N finds call N's job.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_counts: dict[tuple[str, str, int], int] = {}
_lock = threading.Lock()
_current: contextvars.ContextVar[int] = contextvars.ContextVar("dagster_hpc_step_call", default=0)


def _attempt_key(context: Any) -> tuple[str, str, int] | None:
    from dagster_hpc import _dagster_adapter

    try:
        return _dagster_adapter.step_attempt(context)
    except (AttributeError, TypeError):
        return None  # not a step context (a direct invocation in a unit test): one call only


def numbered_call(fn: F) -> F:
    """Decorate ``execute(context, ...)``: the call runs with its ordinal in ``current_call()``."""

    @functools.wraps(fn)
    def wrapper(context: Any, *args: Any, **kwargs: Any) -> Any:
        key = _attempt_key(context)
        if key is None:
            number = 0
        else:
            with _lock:
                number = _counts.get(key, 0)
                _counts[key] = number + 1
        token = _current.set(number)
        try:
            return fn(context, *args, **kwargs)
        finally:
            _current.reset(token)

    return wrapper  # type: ignore[return-value]


def current_call() -> int:
    """The ordinal of the ``compute.run`` call being executed (0 outside a numbered call)."""
    return _current.get()
