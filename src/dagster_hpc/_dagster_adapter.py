"""The ONE place that touches Dagster internals (see STYLE.md, point 6).

Dagster 1.13 keeps the launch handle used for reattach internal
(``dagster._core.pipes.reattach``). We record the Slurm job's handle there right after
``sbatch``, before waiting, so a restarted Dagster (or a retry) can find the job again.
``tests/unit/test_dagster_adapter.py`` fails loudly if an upgrade moves these names.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster._core.pipes.reattach import (  # internal: confined to this module
    PipesLaunchHandle,
    find_latest_launch_handle,
    find_latest_launch_handle_for_run,
    record_external_launch,
    record_external_reattach,
)

from dagster_hpc.backends.base import JobHandle

# client_name under which dagster-hpc records its launches (distinguishes them from other clients).
CLIENT_NAME = "dagster-hpc"


def _client_name() -> str:
    """Launches are recorded per call of the step (step_calls): the first call keeps the plain
    name (records written before calls were numbered stay valid), call N > 0 gets its own."""
    from dagster_hpc.step_calls import current_call

    call = current_call()
    return CLIENT_NAME if call == 0 else f"{CLIENT_NAME}#call{call}"


def step_attempt(context: Any) -> tuple[str, str, int]:
    """(run id, step key, retry number): one attempt of one step."""
    step_key = context.get_step_execution_context().step.key
    return context.run.run_id, step_key, context.retry_number


def record_launch(context: Any, handle: JobHandle) -> PipesLaunchHandle:
    """Persist ``handle`` as an engine event of the current step (call before waiting)."""
    return record_external_launch(
        context,
        client_name=_client_name(),
        external_run_id=f"{handle.backend}:{handle.cluster}:{handle.job_id}",
        extras={"dagster_hpc_handle": json.dumps(handle.to_dict())},
    )


def latest_launch(context: Any) -> JobHandle | None:
    """The handle recorded by this step in this run or its ancestors (reattach), if any."""
    found = _latest_record(context)
    if found is None:
        return None
    raw = found.extras.get("dagster_hpc_handle")
    return JobHandle.from_dict(json.loads(raw)) if raw else None


def record_reattach(context: Any) -> PipesLaunchHandle | None:
    """Re-record the latest handle in the current run (a later retry of THIS run finds it, and
    the launch -> reattach chain stays visible in the event log)."""
    found = _latest_record(context)
    return None if found is None else record_external_reattach(context, found)


def _latest_record(context: Any) -> PipesLaunchHandle | None:
    """This run first, then its ancestry. Dagster walks up only across runs tagged as resume
    retries (the UI's "from failure", run retries); ``execute_job(reexecution_options=
    ReexecutionOptions.from_failure(...))`` creates its run without that tag. So we also look in
    the parent run when THIS step did not succeed there (it died with its process, or failed): a
    step that succeeded in the parent is being recomputed on purpose and must launch fresh."""
    client_name = _client_name()
    found = find_latest_launch_handle(context, client_name=client_name)
    if found is not None:
        return found
    run = context.run
    if not run.parent_run_id:
        return None
    instance = context.instance
    step_key = context.get_step_execution_context().step.key
    succeeded = instance.all_logs(run.parent_run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    if any(entry.step_key == step_key for entry in succeeded):
        return None
    parent = instance.get_run_by_id(run.parent_run_id)
    if parent is None:
        return None
    return find_latest_launch_handle_for_run(
        instance=instance, run=parent, step_key=step_key, client_name=client_name
    )


def report_run_event(instance: Any, run_id: str, message: str) -> None:
    """An engine event in the event log of ``run_id`` from outside the run (the reconcile
    sensor: what it cancelled and why shows up in the run's own timeline)."""
    run = instance.get_run_by_id(run_id)
    if run is not None:
        instance.report_engine_event(message, run)


# --- the concurrent executor (dagster_hpc.executor) --------------------------------------------
# Dagster 1.13 exposes ``Executor`` and ``@executor`` publicly, but driving an execution plan
# (the shared run context with resources built once, the plan's state machine, one step's event
# sequence, hooks, the process-wide compute-log capture) is internal. The executor uses only the
# functions below; the canary in tests/unit/test_executor_adapter.py checks each name.


def retry_mode(enabled: bool) -> Any:
    """Dagster's RetryMode for the executor's ``retries`` config (enabled / disabled)."""
    from dagster._core.execution.retries import RetryMode

    return RetryMode.ENABLED if enabled else RetryMode.DISABLED


def engine_event(context: Any, message: str) -> Any:
    """An engine event of the run (or of a step, given a step context), logged when created."""
    from dagster._core.events import DagsterEvent, EngineEventData

    return DagsterEvent.engine_event(context, message, EngineEventData())


def execute_with_one_context(plan_context: Any, iterator: Any) -> Iterator[Any]:
    """Build the run's execution context ONCE (resources initialized once for all steps, as
    Dagster's in-process executor does) and yield the events of ``iterator(job_context,
    execution_plan)``, then those of the context's shutdown (resource teardown)."""
    from dagster._core.execution.api import ExecuteRunWithPlanIterable
    from dagster._core.execution.context_creation_job import PlanExecutionContextManager

    yield from ExecuteRunWithPlanIterable(
        execution_plan=plan_context.execution_plan,
        iterator=iterator,
        execution_context_manager=PlanExecutionContextManager(
            job=plan_context.job,
            retry_mode=plan_context.retry_mode,
            execution_plan=plan_context.execution_plan,
            run_config=plan_context.run_config,
            dagster_run=plan_context.dagster_run,
            instance=plan_context.instance,
            raise_on_error=plan_context.raise_on_error,
            output_capture=plan_context.output_capture,
        ),
    )


@contextlib.contextmanager
def active_execution(
    job_context: Any,
    execution_plan: Any,
    *,
    max_concurrent: int,
    tag_concurrency_limits: list[dict[str, Any]] | None,
) -> Iterator[Any]:
    """The plan's state machine (which steps are ready, skipped, up for retry, abandoned), with
    Dagster's per-run tag limits and instance-wide concurrency pools."""
    from dagster._core.execution.plan.instance_concurrency_context import (
        InstanceConcurrencyContext,
    )

    with (
        InstanceConcurrencyContext(job_context.instance, job_context.dagster_run) as pools,
        execution_plan.start(
            retry_mode=job_context.retry_mode,
            max_concurrent=max_concurrent,
            tag_concurrency_limits=tag_concurrency_limits,
            instance_concurrency_context=pools,
            step_dependency_config=job_context.step_dependency_config,
        ) as active,
    ):
        yield active


def with_process_log_capture(
    job_context: Any, step_keys: list[str], body: Iterator[Any]
) -> Iterator[Any]:
    """Capture stdout/stderr of the whole process for these steps (one compute-log file, as the
    in-process executor does: threads share the process's file descriptors) around ``body``."""
    from dagster._core.events import DagsterEvent
    from dagster._core.execution.compute_logs import create_compute_log_file_key

    manager = job_context.instance.compute_log_manager
    log_key = manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
    with contextlib.ExitStack() as stack:
        log_context = stack.enter_context(manager.capture_logs(log_key))
        yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        yield from body


def step_context(job_context: Any, step: Any, known_state: Any) -> Any:
    """The execution context of one step (built on the orchestrating thread)."""
    return job_context.for_step(step, known_state)


def step_events(context: Any) -> Iterator[Any]:
    """All events of one step: its own (success, failure with Dagster's error handling, retry
    requests from retry policies) and then its hooks'. Safe to run on a worker thread: events
    are logged to the instance when created. Re-raises interrupts (after the failure event) and,
    with ``raise_on_error``, the step's error."""
    from dagster._core.execution.plan.execute_plan import (
        _trigger_hook,  # internal: success/failure hooks with the step's events
        dagster_event_sequence_for_step,
    )

    events: list[Any] = []
    for event in dagster_event_sequence_for_step(context):
        events.append(event)
        yield event
    yield from _trigger_hook(context, events)


def pipes_context_data(
    context: Any, extras: dict[str, Any], *, partition_key: str | None = None
) -> dict[str, Any]:
    """The Pipes context Dagster would inject for this step, as a plain dict, narrowed to ONE
    partition when ``partition_key`` is given (one array task = one partition of a range)."""
    return pipes_context_for_item(pipes_step_context(context), context, extras, partition_key)


def pipes_step_context(context: Any) -> dict[str, Any]:
    """The step's Pipes context data without extras. Build it once per step: Dagster asks the
    instance for every selected asset's provenance on each call (35 ms per call here, i.e. 3.5 s
    for the 100 tasks of an array when built per task)."""
    from dagster._core.pipes.context import build_external_execution_context_data

    return dict(build_external_execution_context_data(context, {}))


def pipes_context_for_item(
    step_data: dict[str, Any], context: Any, extras: dict[str, Any], partition_key: str | None
) -> dict[str, Any]:
    """``pipes_step_context``'s data with ``extras``, narrowed to ``partition_key`` if given."""
    data = {**step_data, "extras": dict(extras)}
    if partition_key is not None:
        data["partition_key"] = partition_key
        data["partition_key_range"] = {"start": partition_key, "end": partition_key}
        data["partition_time_window"] = None
        assets_def = context.assets_def if context.has_assets_def else None
        partitions_def = getattr(assets_def, "partitions_def", None)
        window_for = getattr(partitions_def, "time_window_for_partition_key", None)
        if window_for is not None:
            window = window_for(partition_key)
            data["partition_time_window"] = {
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
            }
    return data


def metadata_from_pipes(raw: Any) -> dict[str, Any]:
    """Pipes' wire form of metadata ({name: {raw_value, type}}) -> Dagster MetadataValues."""
    from dagster._core.definitions.metadata.external_metadata import metadata_map_from_external

    return dict(metadata_map_from_external(raw or {}))


# --- runs that record their code location (re-executable from the UI) --------------------------
# ``execute_job(reconstructable(...))`` records only the job's Python origin; the UI's
# "Re-execute" needs the run's remote job origin (code location, repository, job name), which
# Dagster only writes for runs launched through a workspace. A demo that runs its jobs from a
# script must record it itself, or every run it made is a dead end in the UI.


def execute_job_in_code_location(
    module_name: str,
    job_name: str,
    *,
    instance: Any,
    working_directory: str,
    attribute: str = "defs",
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """Execute ``job_name`` of the Definitions ``module_name.attribute`` like ``execute_job``,
    recording the code location ``dagster dev -m module_name`` serves (location name = module
    name), so the UI can re-execute the run. Returns the JobExecutionResult (not raising)."""
    import sys

    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    repo = ReconstructableRepository.for_module(module_name, attribute, working_directory)
    job = repo.get_reconstructable_job(job_name)
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=module_name,
            working_directory=working_directory,
        ),
        location_name=module_name,
    )
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name=repo.get_definition().name
        ),
        job_name=job_name,
    )
    run = instance.create_run_for_job(
        job_def=job.get_definition(),
        run_config=run_config,
        tags=tags,
        remote_job_origin=origin,
        job_code_origin=job.get_python_origin(),
    )
    return execute_run(job, run, instance, raise_on_error=False)
