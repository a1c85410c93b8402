"""Counts, one step per STEP_S, checkpointing on the pre-timeout signal (or SIGTERM) and asking
to be requeued; finishes on attempt ``finish_on_attempt`` (a Pipes extra) after ``final_steps``
more steps. With ``requeue_after_steps`` an earlier attempt asks to be requeued by itself after
that many steps (no signal: tests whose point is not the signal do not wait for Slurm's check).

Every attempt resumes from the state the previous one saved and records (attempt, first step,
last step) in it: the requeue tests assert that each attempt continued where the last stopped.
Needs nothing but dagster-pipes and the staged ``dagster_hpc_checkpoint`` helper.
"""

import time

from dagster_hpc_checkpoint import Checkpoint
from dagster_pipes import open_dagster_pipes

STEP_S = 0.2
FINAL_STEPS = 5  # the finishing attempt's own work (default)

with open_dagster_pipes() as pipes:
    ckpt = Checkpoint.from_env(pipes)
    finish_on = int(pipes.get_extra("finish_on_attempt"))
    final_steps = int(pipes.extras.get("final_steps", FINAL_STEPS))
    requeue_after = pipes.extras.get("requeue_after_steps")
    state = ckpt.load(default={"done": 0, "history": []})
    first = state["done"]
    pipes.log.info(f"checkpointer: attempt {ckpt.attempt} resumes at step {first}")
    state["history"].append([ckpt.attempt, first, first])
    while ckpt.attempt < finish_on or state["done"] < first + final_steps:
        time.sleep(STEP_S)
        state["done"] += 1
        state["history"][-1][2] = state["done"]
        if ckpt.attempt >= finish_on:
            continue  # the finishing attempt is short: a late signal must not add an attempt
        ckpt.requeue_if_asked(state)
        if requeue_after and state["done"] - first >= requeue_after:
            ckpt.save(state)
            ckpt.requeue()
    pipes.report_asset_materialization(
        metadata={"done": state["done"], "history": state["history"], "attempt": ckpt.attempt}
    )
