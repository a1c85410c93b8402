"""Canary: the Dagster internals the concurrent executor drives (see _dagster_adapter) are where
and how the adapter expects them. A Dagster upgrade that moves or reshapes one fails HERE, with
its name, instead of as a confusing error in the middle of a run."""

import inspect
import threading
import time

import dagster as dg
import pytest

from dagster_hpc import cancellation

MOVED = f"dagster {dg.__version__} moved or changed {{}}: update dagster_hpc/_dagster_adapter.py"


@pytest.mark.parametrize(
    ("module", "name", "params"),
    [
        ("dagster._core.execution.retries", "RetryMode", ()),
        ("dagster._core.events", "DagsterEvent", ()),
        ("dagster._core.events", "EngineEventData", ()),
        (
            "dagster._core.execution.api",
            "ExecuteRunWithPlanIterable",
            ("execution_plan", "iterator", "execution_context_manager"),
        ),
        (
            "dagster._core.execution.context_creation_job",
            "PlanExecutionContextManager",
            (
                "job",
                "execution_plan",
                "run_config",
                "dagster_run",
                "instance",
                "retry_mode",
                "raise_on_error",
                "output_capture",
            ),
        ),
        (
            "dagster._core.execution.plan.instance_concurrency_context",
            "InstanceConcurrencyContext",
            ("instance", "dagster_run"),
        ),
        (
            "dagster._core.execution.plan.plan",
            "ExecutionPlan.start",
            (
                "retry_mode",
                "max_concurrent",
                "tag_concurrency_limits",
                "instance_concurrency_context",
                "step_dependency_config",
            ),
        ),
        ("dagster._core.execution.plan.execute_plan", "dagster_event_sequence_for_step", ()),
        ("dagster._core.execution.plan.execute_plan", "_trigger_hook", ()),
        ("dagster._core.execution.compute_logs", "create_compute_log_file_key", ()),
        ("dagster._core.events", "DagsterEvent.capture_logs", ()),
        ("dagster._core.events", "DagsterEvent.engine_event", ()),
    ],
)
def test_internal_names_and_parameters(module: str, name: str, params: tuple[str, ...]) -> None:
    import importlib

    obj = importlib.import_module(module)
    for part in name.split("."):
        assert hasattr(obj, part), MOVED.format(f"{module}.{name}")
        obj = getattr(obj, part)
    if params:
        have = set(inspect.signature(obj).parameters)
        assert set(params) <= have, MOVED.format(f"{module}.{name}{sorted(set(params) - have)}")


def test_active_execution_methods_the_orchestrator_calls() -> None:
    from dagster._core.execution.plan.active import ActiveExecution

    for method in (
        "check_for_interrupts",
        "mark_interrupted",
        "get_steps_to_execute",
        "get_known_state",
        "handle_event",
        "verify_complete",
        "plan_events_iterator",
        "concurrency_event_iterator",
        "is_complete",
    ):
        assert hasattr(ActiveExecution, method), MOVED.format(f"ActiveExecution.{method}")
    assert "limit" in inspect.signature(ActiveExecution.get_steps_to_execute).parameters


def test_step_context_exposes_what_execute_uses_for_the_stop_request() -> None:
    seen = {}

    @dg.asset
    def probe(context: dg.AssetExecutionContext):
        seen["key"] = context.op_execution_context.get_step_execution_context().step.key
        seen["run"] = context.run.run_id

    dg.materialize([probe])
    assert seen["key"] == "probe" and seen["run"]


# --- cancellation: the stop request of a step on a worker thread ------------------------------


def _spin(outcome: dict, seconds: float = 30) -> None:
    """Light Python (no compute.run) until interrupted: outcome["result"] says which."""
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(100))
        outcome["result"] = "ran to the end"
    except dg.DagsterExecutionInterruptedError:
        outcome["result"] = "interrupted"


def test_a_step_in_plain_python_is_interrupted_asynchronously() -> None:
    token = cancellation.StepCancellation()
    outcome = {}

    def body() -> None:
        token.attach()
        _spin(outcome)

    thread = threading.Thread(target=body)
    thread.start()
    time.sleep(0.2)
    token.request()
    thread.join(timeout=10)
    assert outcome == {"result": "interrupted"} and token.raised_async


def test_a_step_waiting_in_compute_run_is_asked_not_interrupted() -> None:
    token = cancellation.StepCancellation()
    outcome = {}
    inside = threading.Event()

    def body() -> None:
        token.attach()
        with token.cooperative():
            inside.set()
            while not token.requested:  # execute()'s wait loop
                time.sleep(0.01)
            outcome["saw"] = "request"  # here it would scancel and confirm
        try:
            with token.cooperative():
                outcome["second"] = "entered"
        except dg.DagsterExecutionInterruptedError:
            outcome["second"] = "refused: nothing submitted"

    thread = threading.Thread(target=body)
    thread.start()
    assert inside.wait(10)
    token.request()
    thread.join(timeout=10)
    assert not token.raised_async
    assert outcome == {"saw": "request", "second": "refused: nothing submitted"}


def test_a_finished_step_is_never_interrupted() -> None:
    token = cancellation.StepCancellation()
    token.attach()
    token.close()
    token.request()
    assert token.requested and not token.raised_async


def test_an_interrupt_waits_for_the_thread_to_leave_library_code() -> None:
    """A thread inside logging/threading (a lock may be held there) is not interrupted; once it
    is back in its own code the owed interrupt is raised (docs/executor.md)."""
    token = cancellation.StepCancellation()
    in_library = threading.Event()
    leave = threading.Event()
    outcome = {}

    def body() -> None:
        token.attach()
        in_library.set()
        leave.wait(30)  # innermost frame: threading (Condition.wait)
        outcome["left library code"] = True
        _spin(outcome)

    thread = threading.Thread(target=body)
    thread.start()
    assert in_library.wait(10)
    time.sleep(0.1)
    token.request()
    assert token.pending and not token.raised_async  # deferred: not at a safe point
    assert not token.interrupt_pending()
    leave.set()
    deadline = time.monotonic() + 10
    while token.pending and time.monotonic() < deadline:
        token.interrupt_pending()
    thread.join(timeout=10)
    assert outcome == {"left library code": True, "result": "interrupted"}
    assert token.raised_async and not token.pending


def test_an_owed_interrupt_is_forced_after_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread that never leaves library code is interrupted anyway after
    FORCE_INTERRUPT_AFTER_S (a run that cannot stop is worse than the risk)."""
    monkeypatch.setattr(cancellation, "FORCE_INTERRUPT_AFTER_S", 0.3)
    # this module counts as library code here: the body below is never at a safe point
    monkeypatch.setattr(cancellation, "UNSAFE_MODULES", cancellation.UNSAFE_MODULES | {"tests"})
    token = cancellation.StepCancellation()
    outcome = {}
    started = threading.Event()

    def body() -> None:
        token.attach()
        started.set()
        try:
            while True:
                sum(range(100))
        except dg.DagsterExecutionInterruptedError:
            outcome["result"] = "interrupted"

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert started.wait(10)
    t0 = time.monotonic()
    token.request()
    raised_after = None
    while raised_after is None and time.monotonic() - t0 < 10:
        if token.interrupt_pending():
            raised_after = time.monotonic() - t0
    thread.join(timeout=10)
    assert outcome == {"result": "interrupted"}
    assert raised_after is not None and raised_after >= 0.3 and token.forced


def test_safe_points_are_outside_logging_threading_imports_and_dagster() -> None:
    """The step's own code and other libraries are safe points; logging (a handler's lock),
    threading, the import system and Dagster/dagster-hpc are not."""
    import json
    import logging
    import sys
    import types

    import yaml

    frames = {}

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            frames["logging"] = sys._getframe(1)  # Handler.handle, holding the handler's lock

    log = logging.getLogger("dagster-hpc-test-safe-point")
    log.addHandler(Grab())
    log.propagate = False
    log.warning("x")

    def frame(path: str, module: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            f_code=types.SimpleNamespace(co_filename=path), f_globals={"__name__": module}
        )

    assert cancellation.safe_point(sys._getframe())  # this test: the step's own code
    assert cancellation.safe_point(frame(yaml.__file__, "yaml.constructor"))
    assert cancellation.safe_point(frame(json.__file__, "json.encoder"))
    assert not cancellation.safe_point(frames["logging"])
    assert not cancellation.safe_point(frame(threading.__file__, "threading"))
    assert not cancellation.safe_point(
        frame("<frozen importlib._bootstrap>", "importlib._bootstrap")
    )
    assert not cancellation.safe_point(frame(dg.__file__, "dagster._core.log_manager"))
    assert not cancellation.safe_point(frame(cancellation.__file__, "dagster_hpc.cancellation"))
    assert not cancellation.safe_point(None)


def test_a_request_that_compute_run_did_not_see_is_raised_after_it_returns() -> None:
    """The job ended just before its wait loop saw the request: the body, back in plain Python,
    is interrupted asynchronously instead of running on."""
    token = cancellation.StepCancellation()
    inside = threading.Event()
    requested = threading.Event()
    outcome = {}

    def body() -> None:
        token.attach()
        with token.cooperative():  # compute.run, whose job ends without seeing the request
            inside.set()
            requested.wait(10)
        _spin(outcome)

    thread = threading.Thread(target=body)
    thread.start()
    assert inside.wait(10)
    token.request()
    assert not token.pending  # inside compute.run: asked, not interrupted
    requested.set()
    deadline = time.monotonic() + 10
    while not token.raised_async and time.monotonic() < deadline:
        token.interrupt_pending()
        time.sleep(0.01)
    thread.join(timeout=10)
    assert outcome == {"result": "interrupted"} and token.raised_async


def test_the_orchestrator_wait_survives_signals_under_gil_contention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's SIGINT reaches the main thread while the orchestrator waits for step events and
    other threads hold the GIL: every wait still ends within its tick (CPython 3.11's
    SimpleQueue.get(timeout) can block for ever there, which hid run termination)."""
    import queue
    import signal

    from dagster_hpc import executor

    monkeypatch.setattr(executor, "ORCHESTRATOR_TICK_S", 0.02)
    orchestration = executor._Orchestration.__new__(executor._Orchestration)
    orchestration._inbox = queue.SimpleQueue()
    orchestration._workers = {}
    stop = threading.Event()
    main = threading.main_thread().ident

    def hog() -> None:
        while not stop.is_set():
            sum(range(20000))  # long C calls holding the GIL

    def signals() -> None:
        while not stop.wait(0.003):
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    threads = [threading.Thread(target=hog), threading.Thread(target=signals)]
    for t in threads:
        t.start()
    try:
        slowest = 0.0
        for _ in range(300):
            t0 = time.monotonic()
            assert list(orchestration._receive()) == []
            slowest = max(slowest, time.monotonic() - t0)
            assert slowest < 2.0, "the orchestrator's wait did not end within its tick"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        signal.signal(signal.SIGUSR1, previous)
