"""The example project: every asset materializes locally, and the documented UI command serves it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# `dagster dev` starts a webserver and a daemon: slow on a loaded 2-core machine.
UI_START_TIMEOUT_S = 180
UI_POLL_INTERVAL_S = 1.0
EXPECTED_KEYS = {
    "measurements",
    "sensor_summary",
    "sensor_report",
    "clean_measurements",
    "rejected_measurements",
    "regional_measurements",
}
DEMO_KEYS = {"demo/raw", "demo/derived"}  # the incremental demo, the second code location


@pytest.fixture
def example(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("DAGSTER_HPC_EXAMPLE_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HPC_MODE", raising=False)
    from dagster_hpc_example import definitions
    from dagster_hpc_example.resources import compute_from_env

    return definitions, compute_from_env()


def test_every_example_asset_materializes_locally(example) -> None:
    definitions, compute = example
    assert compute.mode == "local"
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        definitions.UNPARTITIONED, resources={"compute": compute}, instance=instance
    )
    assert result.success
    keys = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert keys == EXPECTED_KEYS - {"regional_measurements"}
    summary = result.asset_materializations_for_node("sensor_summary")[0].metadata
    assert summary["rows"].value == 20_000 and summary["sensors"].value == 17
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "values_within_threshold" and check.passed
    rows = 0
    for key in definitions.REGIONS.get_partition_keys():
        part = dg.materialize(
            definitions.ASSETS,
            selection="regional_measurements",
            partition_key=key,
            resources={"compute": compute},
            instance=instance,
        )
        md = part.asset_materializations_for_node("regional_measurements")[0].metadata
        assert md["region"].value == key
        rows += md["rows"].value
    assert rows == 20_000  # every sensor lands in exactly one region


def test_main_job_runs_the_incremental_demo_rounds(example, monkeypatch, tmp_path) -> None:
    """The main job's demo: round 1 computes 3, round 2 only the changed + added, round 3 nothing."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from dagster_hpc_example import run_incremental

    rows, ok = run_incremental.run_rounds(dg.DagsterInstance.ephemeral())
    assert ok
    derived = {
        r[0]: dict(zip(run_incremental.HEADER, r, strict=True))
        for r in rows
        if r[1] == "demo/derived"
    }
    assert (derived["1"]["new"], derived["1"]["computed"]) == ("3", "3")
    assert (derived["2"]["new"], derived["2"]["stale"], derived["2"]["computed"]) == ("1", "1", "2")
    assert (derived["3"]["computed"], derived["3"]["skipped"]) == ("0", "3")


def test_example_definitions_reject_unknown_mode(example, monkeypatch) -> None:
    from dagster_hpc_example.resources import compute_from_env

    from dagster_hpc import ConfigError

    definitions, _ = example
    monkeypatch.setenv("DAGSTER_HPC_MODE", "kubernetes")
    with pytest.raises(ConfigError, match="unknown mode 'kubernetes'"):
        dg.materialize([definitions.measurements], resources={"compute": compute_from_env()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_ui_command_serves_the_example_assets(tmp_path) -> None:
    """The README's UI command (`dagster dev -m dagster_hpc_example.definitions -m incremental_demo.assets`)."""
    port = _free_port()
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [
            *(
                str(dagster),
                "dev",
                "-m",
                "dagster_hpc_example.definitions",
                "-m",
                "incremental_demo.assets",
            ),
            *("-h", "127.0.0.1", "-p", str(port)),
        ],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "dagster-dev.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + UI_START_TIMEOUT_S
        keys: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                data = _graphql(port, "{ assetNodes { assetKey { path } } }")
                keys = {"/".join(n["assetKey"]["path"]) for n in data["data"]["assetNodes"]}
                if EXPECTED_KEYS | DEMO_KEYS <= keys:
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, TypeError):
                pass  # not up yet (or the code location is still loading)
            time.sleep(UI_POLL_INTERVAL_S)
        log = (tmp_path / "dagster-dev.log").read_text()[-3000:]
        assert EXPECTED_KEYS | DEMO_KEYS <= keys, (
            f"UI did not serve the example assets; dagster dev log tail:\n{log}"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
