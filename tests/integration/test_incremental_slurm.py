"""The incremental demo with its payload as real Slurm jobs over real SSH.

Only new + stale samples reach the job; the job writes them to a Delta store that the Dagster
process reads too (on the test cluster both run on this machine, as on a shared filesystem).
The payload env is built from the demo's own lock; the engine is staged as a zip.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.compute import ComputeResource
from dagster_hpc.envs.config import EnvConfig
from dagster_hpc.envs.ship import forget_verified
from dagster_hpc.incremental import DeltaStore
from tests.integration import envs_support as S
from tests.integration.slurm_support import slurm_resource

pytestmark = pytest.mark.slow  # a cold run builds and ships the payload env (~40 s)

DEMO = Path(__file__).resolve().parents[2] / "examples" / "incremental_demo"
LOCK = DEMO / "payload-env" / "uv.lock"
if str(DEMO.parent) not in sys.path:  # the demo is the package `incremental_demo` in examples/
    sys.path.insert(0, str(DEMO.parent))


@pytest.fixture
def remote_base(cluster):
    base = S.fresh_remote_base(cluster)
    t = S.transport(cluster)
    t.check(f"mkdir -p {shlex.quote(base)}/store && chmod 0700 {shlex.quote(base)}")
    forget_verified()
    yield base
    forget_verified()
    t.run(f"rm -rf {shlex.quote(base)}")


def _derived_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["demo", "derived"])
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_incremental_demo_rounds_as_slurm_jobs(cluster, remote_base):
    from incremental_demo import assets as demo
    from incremental_demo.features import DERIVED, GRAPH

    store_root = f"{remote_base}/store"
    env = EnvConfig(lock=str(LOCK), remote_base=remote_base)
    compute = ComputeResource(mode="slurm", slurm=slurm_resource(cluster, python=None, env=env))
    defs = demo.build_assets(store_root)

    def run(round_number: int) -> dict:
        result = dg.materialize(
            defs,
            run_config={"ops": {"demo__raw": {"config": {"round": round_number}}}},
            resources={"compute": compute},
        )
        assert result.success
        return _derived_metadata(result)

    first = run(1)
    assert (first["new"], first["computed"], first["payload_rows_written"]) == (3, 3, 3)
    assert first["engine_from"].endswith(
        "dagster_hpc_engine.zip/dagster_hpc/incremental/__init__.py"
    )
    assert first["engine_from"].startswith(S.home(cluster))  # imported in the job's run dir

    second = run(2)
    assert (second["new"], second["stale"], second["orphaned"]) == (1, 1, 1)
    assert (second["computed"], second["payload_rows_written"], second["skipped"]) == (2, 2, 1)

    third = run(3)
    assert (third["computed"], third["skipped"]) == (0, 3)
    assert "payload_rows_written" not in third  # nothing to do: no job was submitted

    stored = DeltaStore(store_root, GRAPH).read(DERIVED).sort("sample_uid")
    assert stored["sample_uid"].to_list() == ["s1", "s2", "s4"]
    assert stored["result"].to_list() == [1.0, 49.0, 400.0]
