"""``hpc_executor``: the ready steps of a run, concurrently, on threads of ONE process.

A step in Slurm mode does nothing but wait for a remote job. Dagster's multiprocess executor
pays a Python start (Dagster's import) and an SSH login per step; its in-process executor runs
the steps one after another. This executor keeps many jobs in flight from one process: every
step shares the process's SSH connection (one login per run), the shared Slurm poller and the
run's resources (initialized once, as in-process). Local-mode payloads run as concurrent
subprocesses the same way.

Dagster's plan logic decides what runs (the asset graph's order, skipping downstream of a
failure, step retry policies, re-execution from failure, per-run tag limits, instance pools);
this module only runs each ready step on a worker thread and forwards its events on the
orchestrating thread, where the plan's state machine lives (it is not thread-safe). Run
termination reaches the main thread only: the orchestrator asks each in-flight step to stop
(``cancellation``), waits until every job is cancelled and confirmed, then ends the run as
interrupted. See docs/executor.md for what running asset bodies on threads means.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from dagster_hpc import _dagster_adapter as adapter
from dagster_hpc import cancellation
from dagster_hpc.errors import ConfigError

# Steps in flight at once by default. A waiting step costs two idle threads here (the step and
# its Pipes reader) and, in Slurm mode, one batched read per tail tick on the login node; the
# cluster's queue, not this process, is what limits real concurrency.
DEFAULT_MAX_CONCURRENT = 32
# How long the orchestrating thread waits for a step event before it looks again for a run
# termination and for steps whose retry delay has passed (a step event is seen within
# INBOX_POLL_MAX_S).
ORCHESTRATOR_TICK_S = 0.1
# Within a tick the orchestrator polls its inbox, the pause doubling from the first to the last
# value while nothing arrives, instead of blocking in ``SimpleQueue.get(timeout)``: on CPython
# 3.11 a signal that reaches the main thread during that call while other threads hold the GIL
# can leave it waiting for ever (reproduced in ~80 calls), and the run's SIGINT was then
# recorded but never looked at (a terminated run that never stopped). ``put``/``get_nowait`` stay
# single C calls (an asynchronous interrupt in a step thread cannot leave the queue half-updated).
INBOX_POLL_FIRST_S = 0.001
INBOX_POLL_MAX_S = 0.02
# After a run termination, how long the in-flight steps get to stop: a Slurm step sends scancel
# and waits up to CANCEL_CONFIRM_TIMEOUT_S (90 s) for Slurm to confirm; plus a slow round trip.
TERMINATION_GRACE_S = 150.0
THREAD_NAME_PREFIX = "dagster-hpc-step"

_TAG_LIMIT = dg.Shape(
    {
        "key": str,
        "value": dg.Field(
            dg.ScalarUnion(
                scalar_type=str,
                non_scalar_schema=dg.Shape({"applyLimitPerUniqueValue": bool}),
            ),
            is_required=False,
        ),
        "limit": dg.Field(int),
    }
)

CONFIG_SCHEMA = {
    "max_concurrent": dg.Field(
        int,
        default_value=DEFAULT_MAX_CONCURRENT,
        description="Steps running at the same time (each on a thread of this process).",
    ),
    "tag_concurrency_limits": dg.Field(
        dg.Array(_TAG_LIMIT),
        is_required=False,
        description="Limits for steps with particular tags, as in Dagster's multiprocess executor: "
        "with a value, the limit applies to that key-value pair; without, across all values of the "
        "key; with {applyLimitPerUniqueValue: true}, per unique value. Per run.",
    ),
    "retries": dg.Field(
        dg.Selector({"enabled": {}, "disabled": {}}),
        default_value={"enabled": {}},
        description="Whether step retries (retry policies, RetryRequested) are honoured.",
    ),
}


@dg.executor(name="dagster_hpc", config_schema=CONFIG_SCHEMA)
def hpc_executor(init_context: dg.InitExecutorContext) -> ConcurrentExecutor:
    """Run the ready steps of a run concurrently on threads of one process (dagster-hpc).

    Select it with ``dg.Definitions(..., executor=hpc_executor)`` or
    ``define_asset_job(..., executor_def=hpc_executor)``; configure it in run config under
    ``execution: config: {max_concurrent: 16, tag_concurrency_limits: [...], retries: ...}``.
    """
    return ConcurrentExecutor.from_config(init_context.executor_config)


class ConcurrentExecutor(dg.Executor):
    """The executor ``hpc_executor`` builds (usable directly in tests)."""

    def __init__(
        self,
        *,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        tag_concurrency_limits: list[dict[str, Any]] | None = None,
        retries: bool = True,
    ) -> None:
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ConfigError(
                f"hpc_executor max_concurrent must be a whole number >= 1, got {max_concurrent!r}"
            )
        self.max_concurrent = max_concurrent
        self.tag_concurrency_limits = list(tag_concurrency_limits or [])
        self._retries = adapter.retry_mode(retries)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConcurrentExecutor:
        retries = config.get("retries") or {"enabled": {}}
        return cls(
            max_concurrent=config.get("max_concurrent", DEFAULT_MAX_CONCURRENT),
            tag_concurrency_limits=config.get("tag_concurrency_limits"),
            retries="enabled" in retries,
        )

    @property
    def retries(self) -> Any:
        return self._retries

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        started = time.monotonic()
        yield adapter.engine_event(
            plan_context,
            f"dagster-hpc executor: up to {self.max_concurrent} steps at once on threads of "
            f"process {os.getpid()}",
        )
        yield from adapter.execute_with_one_context(plan_context, self._iterate)
        yield adapter.engine_event(
            plan_context,
            f"dagster-hpc executor: finished in {time.monotonic() - started:.2f} s "
            f"(process {os.getpid()})",
        )

    def _iterate(self, job_context: Any, execution_plan: Any) -> Iterator[Any]:
        keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
        yield from adapter.with_process_log_capture(
            job_context, keys, self._orchestrate(job_context, execution_plan)
        )

    def _orchestrate(self, job_context: Any, execution_plan: Any) -> Iterator[Any]:
        with adapter.active_execution(
            job_context,
            execution_plan,
            max_concurrent=self.max_concurrent,
            tag_concurrency_limits=self.tag_concurrency_limits,
        ) as active:
            yield from _Orchestration(job_context, active, self.max_concurrent).run()


@dataclasses.dataclass(frozen=True)
class _Message:
    """From a worker thread: one event of its step, or (done=True) the end of its step."""

    step_key: str
    event: Any = None
    done: bool = False
    error: BaseException | None = None  # raise_on_error: the step's error, re-raised at the end


@dataclasses.dataclass
class _Worker:
    thread: threading.Thread
    stop: cancellation.StepCancellation


class _Orchestration:
    """One run's scheduling loop (the orchestrating thread owns ``active`` alone)."""

    def __init__(self, job_context: Any, active: Any, max_concurrent: int) -> None:
        self._context = job_context
        self._active = active
        self._max = max_concurrent
        self._run_id = job_context.run_id
        self._inbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._workers: dict[str, _Worker] = {}
        self._stop_deadline: float | None = None  # set when the run is being terminated
        self._error: BaseException | None = None  # first raise_on_error error of a step

    @property
    def _launching(self) -> bool:
        return self._stop_deadline is None and self._error is None

    def run(self) -> Iterator[Any]:
        while self._workers or (self._launching and not self._active.is_complete):
            if self._stop_deadline is None and self._active.check_for_interrupts():
                yield from self._terminate()
            if self._launching:
                yield from self._launch_ready()
            yield from self._receive()
            yield from self._active.plan_events_iterator(self._context)
            if self._stop_deadline is not None:
                yield from self._interrupt_owed()
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                yield from self._give_up()
                break
        if self._error is not None:
            raise self._error

    def _launch_ready(self) -> Iterator[Any]:
        free = self._max - len(self._workers)
        for step in self._active.get_steps_to_execute(limit=free) if free > 0 else ():
            context = adapter.step_context(self._context, step, self._active.get_known_state())
            stop = cancellation.register(self._run_id, step.key)
            thread = threading.Thread(
                target=_run_step,
                args=(context, step.key, stop, self._inbox),
                name=f"{THREAD_NAME_PREFIX}-{step.key}",
                daemon=True,  # a step stuck in C code must not keep a terminated run alive
            )
            self._workers[step.key] = _Worker(thread, stop)
            thread.start()
        yield from self._active.concurrency_event_iterator(self._context)

    def _receive(self) -> Iterator[Any]:
        """Forward what the workers sent (waiting up to one tick for the first message)."""
        messages = self._drain()
        deadline = time.monotonic() + ORCHESTRATOR_TICK_S
        pause = INBOX_POLL_FIRST_S
        while not messages and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, INBOX_POLL_MAX_S)
            messages = self._drain()
        for message in messages:
            if message.event is not None:
                yield message.event
                self._active.handle_event(message.event)
            if message.done:
                self._finish(message.step_key, message.error)
        if not messages:
            # a worker killed by an asynchronous interrupt before it could report its end
            for key, worker in list(self._workers.items()):
                if not worker.thread.is_alive() and self._inbox.empty():
                    self._finish(key, None)

    def _drain(self) -> list[_Message]:
        messages = []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def _finish(self, step_key: str, error: BaseException | None) -> None:
        worker = self._workers.pop(step_key, None)
        if worker is None:
            return
        cancellation.unregister(self._run_id, step_key, worker.stop)
        self._active.verify_complete(self._context, step_key)
        if error is not None and self._error is None:
            self._error = error  # stop launching; in-flight steps finish first (nothing orphaned)

    def _terminate(self) -> Iterator[Any]:
        keys = sorted(self._workers)
        yield adapter.engine_event(
            self._context,
            f"dagster-hpc executor: run termination requested: stopping {len(keys)} in-flight "
            f"step(s) {keys} (each cancels its job and waits for the confirmation)",
        )
        self._active.mark_interrupted()
        self._stop_deadline = time.monotonic() + TERMINATION_GRACE_S
        for worker in self._workers.values():
            worker.stop.request()

    def _interrupt_owed(self) -> Iterator[Any]:
        """Retry the asynchronous interrupts still owed (their threads were not at a safe point)."""
        for key, worker in sorted(self._workers.items()):
            if worker.stop.pending and worker.stop.interrupt_pending() and worker.stop.forced:
                yield adapter.engine_event(
                    self._context,
                    f"dagster-hpc executor: step {key} was not back in its own code within "
                    f"{cancellation.FORCE_INTERRUPT_AFTER_S:.0f} s of the termination: it was "
                    "interrupted inside library code (a lock held there may stay held)",
                )

    def _give_up(self) -> Iterator[Any]:
        keys = sorted(self._workers)
        yield adapter.engine_event(
            self._context,
            f"dagster-hpc executor: step(s) {keys} did not stop within {TERMINATION_GRACE_S:.0f} s "
            "of the termination; their jobs may still be running: look for their job ids in the "
            "step logs and cancel them by hand (scancel)",
        )
        for key in keys:
            self._workers.pop(key)
            self._active.verify_complete(self._context, key)


def _run_step(
    context: Any,
    step_key: str,
    stop: cancellation.StepCancellation,
    inbox: queue.SimpleQueue[_Message],
) -> None:
    """A worker thread: the step's events (success, failure, retry request, hooks) to ``inbox``."""
    error: BaseException | None = None
    try:
        stop.attach()
        for event in adapter.step_events(context):
            inbox.put(_Message(step_key, event=event))
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        pass  # run termination: the step's failure event (if it had started) was sent already
    except BaseException as exc:  # noqa: BLE001 - raise_on_error: re-raised on the orchestrator
        error = exc
    finally:
        stop.close()
        _report_done(inbox, _Message(step_key, done=True, error=error))


def _report_done(inbox: queue.SimpleQueue[_Message], message: _Message) -> None:
    # an asynchronous interrupt scheduled just before the step returned may fire here: retry
    while True:
        try:
            inbox.put(message)
            return
        except dg.DagsterExecutionInterruptedError:
            continue
