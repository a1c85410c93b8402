"""A real `dagster dev` in a subprocess for tests: start it, ask its GraphQL API, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

# dagster dev loads the code locations in their own processes: tens of seconds on a loaded
# 2-core machine
UI_START_TIMEOUT_S = 300
UI_POLL_INTERVAL_S = 1.0
# a re-executed run starts a run worker process (imports Dagster and the definitions again)
RUN_FINISH_TIMEOUT_S = 300
# after SIGTERM, dagster dev stops its webserver, daemon and code servers
UI_STOP_TIMEOUT_S = 60
GRAPHQL_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=GRAPHQL_TIMEOUT_S) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def dagster_dev(
    command: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path, expect_assets: set[str]
) -> Iterator[int]:
    """Run ``command`` (a `dagster dev` invocation, host/port appended) until it serves
    ``expect_assets``; yield its port; stop its whole process group after."""
    port = free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + UI_START_TIMEOUT_S
        keys: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                data = graphql(port, "{ assetNodes { assetKey { path } } }")
                keys = {"/".join(n["assetKey"]["path"]) for n in data["data"]["assetNodes"]}
                if expect_assets <= keys:
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, TypeError):
                pass  # not up yet, or a code location still loading
            time.sleep(UI_POLL_INTERVAL_S)
        assert expect_assets <= keys, (
            f"dagster dev did not serve {sorted(expect_assets - keys)}; log tail:\n"
            + log.read_text()[-3000:]
        )
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=UI_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


REEXECUTE = """
mutation($id: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $id, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
RUN_STATUS = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status jobName } } }"""


def reexecute_and_wait(port: int, parent_run_id: str) -> tuple[str, str, str]:
    """What the UI's "Re-execute all" button sends; (new run id, final status, job name)."""
    answer = graphql(port, REEXECUTE, {"id": parent_run_id})["data"]["launchPipelineReexecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    run_id = answer["run"]["runId"]
    deadline = time.monotonic() + RUN_FINISH_TIMEOUT_S
    while True:
        run = graphql(port, RUN_STATUS, {"id": run_id})["data"]["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run_id, run["status"], run["jobName"]
        assert time.monotonic() < deadline, f"re-executed run {run_id} still {run['status']}"
        time.sleep(UI_POLL_INTERVAL_S)
