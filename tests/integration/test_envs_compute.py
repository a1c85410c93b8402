"""ComputeResource in slurm mode with an environment: the example's payload env built from its
own lock file and shipped automatically; a broken pre-deployed env fails before submit."""

import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_hpc.backends.slurm_script import job_name
from dagster_hpc.compute import ComputeResource
from dagster_hpc.envs.config import EnvConfig
from dagster_hpc.envs.ship import forget_verified
from dagster_hpc.errors import ConfigError
from tests.integration import envs_support as S
from tests.integration.slurm_support import (
    jobs_named,
    payload_python,
    slurm_resource,
    staged_run_dirs,
)

WHICH_ENV = Path(__file__).parent / "envs_payloads" / "which_env.py"


def _asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def _a(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, WHICH_ENV).get_results()

    return _a


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env_base(cluster):
    base = S.fresh_remote_base(cluster)
    forget_verified()
    yield base
    forget_verified()
    S.transport(cluster).run(f"rm -rf {base}")


def _materialize(asset, res) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """Materialize; return the result and the run's user log lines."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], resources={"compute": res}, instance=instance)
    return result, [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]


def _materialization(result: dg.ExecuteInProcessResult) -> dict:
    mats = result.get_asset_materialization_events()
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def test_example_env_built_from_its_lock_and_shipped_automatically(cluster, env_base):
    env = EnvConfig(lock=str(S.EXAMPLE_LOCK), remote_base=env_base)
    res = ComputeResource(mode="slurm", slurm=slurm_resource(cluster, python=None, env=env))
    first, logs = _materialize(_asset(_name("envrun")), res)
    assert first.success
    meta = _materialization(first)
    assert meta["prefix"].startswith(f"{env_base}/envs/") and meta["executable"].startswith(
        meta["prefix"]
    )
    assert meta["polars"] == "2.1.0" and meta["sum_x"] == 4950
    assert meta["python_on_path"].startswith(
        meta["prefix"]
    )  # activate.sh put the env first on PATH
    assert any("published to" in m and "MB uploaded" in m for m in logs), (
        "the first run logs that it shipped the env"
    )

    forget_verified()  # a new Dagster process: one lookup, nothing uploaded
    second, logs2 = _materialize(_asset(_name("envrun")), res)
    assert second.success and _materialization(second)["prefix"] == meta["prefix"]
    assert any("already on" in m and "1 round trip(s), 0 bytes uploaded" in m for m in logs2), logs2


def test_predeployed_env_missing_dagster_pipes_fails_before_submit(cluster, env_base):
    t = S.transport(cluster)
    t.check(f"mkdir -p {env_base} && /usr/bin/python3 -m venv {env_base}/nopipes")
    name = _name("nopipes")
    res = ComputeResource(
        mode="slurm",
        slurm=slurm_resource(cluster, python=None, env=EnvConfig(path=f"{env_base}/nopipes")),
    )
    with pytest.raises(ConfigError, match="(?s)cannot import dagster_pipes.*nothing was submitted"):
        dg.materialize([_asset(name)], resources={"compute": res})
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []
    assert jobs_named(cluster, job_name(name)) == []


def test_predeployed_env_that_works_is_used(cluster, env_base):
    payload_env = str(Path(payload_python(cluster)).parents[1])  # the venv dir of .../bin/python
    res = ComputeResource(
        mode="slurm", slurm=slurm_resource(cluster, python=None, env=EnvConfig(path=payload_env))
    )
    result = dg.materialize([_asset(_name("predeployed"))], resources={"compute": res})
    assert result.success and _materialization(result)["prefix"] == payload_env


def test_env_and_python_together_rejected(cluster, env_base):
    res = ComputeResource(
        mode="slurm",
        slurm=slurm_resource(
            cluster,
            python="/usr/bin/python3",
            env=EnvConfig(lock=str(S.EXAMPLE_LOCK), remote_base=env_base),
        ),
    )
    with pytest.raises(ConfigError, match="both python=.* and env="):
        dg.materialize([_asset(_name("both"))], resources={"compute": res})


def test_example_project_ships_its_own_payload_env_in_slurm_mode(cluster, monkeypatch):
    """The example, configured only by environment variables and with no interpreter given,
    builds examples/payload-env/uv.lock and ships it with its first job."""
    import os
    import sys

    from tests.integration.slurm_support import slurm_env, unique

    examples = Path(__file__).resolve().parents[2] / "examples"
    base = f".dagster-hpc-tests/{unique('example-env')}"
    env = slurm_env(cluster)
    del env["DAGSTER_HPC_SLURM_PYTHON"]  # nothing pre-deployed: the example's own env is used
    env["DAGSTER_HPC_SLURM_REMOTE_BASE_DIR"] = f"~/{base}/runs"
    for k in [k for k in os.environ if k.startswith("DAGSTER_HPC_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAGSTER_HPC_EXAMPLE_DATA", f"{S.home(cluster)}/{base}/data")
    monkeypatch.syspath_prepend(str(examples))
    for name in [m for m in sys.modules if m.startswith("dagster_hpc_example")]:
        monkeypatch.delitem(sys.modules, name)
    from dagster_hpc_example import definitions
    from dagster_hpc_example.resources import PAYLOAD_ENV_LOCK, compute_from_env

    forget_verified()
    try:
        compute = compute_from_env()
        assert compute.slurm.env is not None and compute.slurm.env.lock == str(PAYLOAD_ENV_LOCK)
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [definitions.measurements, definitions.sensor_summary],
            resources={"compute": compute},
            instance=instance,
        )
        assert result.success
        logs = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
        envs_dir = f"{S.home(cluster)}/{base}/envs/"
        assert any("published to " + envs_dir in m for m in logs), logs
        summary = {
            e.materialization.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }["sensor_summary"]
        assert summary["sensors"].value == 17  # polars ran on the node, in the shipped env
    finally:
        forget_verified()
        S.transport(cluster).run(f'rm -rf "$HOME"/{base}')


def test_predeployed_interpreter_nobody_can_execute_fails_before_submit(cluster, env_base):
    # the login node cannot run it, so the check is repeated in an srun step; that fails too
    t = S.transport(cluster)
    t.check(
        f"mkdir -p {env_base}/foreign/bin && printf '\\177ELF\\002\\001\\001' > {env_base}/foreign/bin/python "
        f"&& head -c 57 /dev/zero >> {env_base}/foreign/bin/python && chmod 755 {env_base}/foreign/bin/python"
    )
    name = _name("foreign")
    res = ComputeResource(
        mode="slurm",
        slurm=slurm_resource(cluster, python=None, env=EnvConfig(path=f"{env_base}/foreign")),
    )
    with pytest.raises(
        Exception, match="cannot be executed on the login node nor on a compute node"
    ):
        dg.materialize([_asset(name)], resources={"compute": res})
    assert staged_run_dirs(cluster, res.slurm.remote_base_dir) == []
    assert jobs_named(cluster, job_name(name)) == []
