"""The Dagster Component on the real cluster: a defs.yaml with mode: slurm materializes as a
Slurm job (site settings from the environment, as SlurmResource.from_env reads them), with the
slurm kind and partition tag on its asset."""

import sys
import textwrap
import uuid

import dagster as dg
import pytest

from tests.integration.slurm_support import (
    CREATED_BASES,
    cleanup_remote_bases,
    own_record_partition,
    slurm_env,
)


@pytest.fixture(autouse=True, scope="module")
def _remove_our_run_dirs(cluster):
    since = len(CREATED_BASES)
    yield
    cleanup_remote_bases(cluster, since)


def test_component_materializes_on_the_cluster(cluster, tmp_path, monkeypatch):
    for key, value in slurm_env(cluster, partition="debug").items():
        if key.startswith("DAGSTER_HPC_"):
            monkeypatch.setenv(key, value)
    package = f"hpc_component_defs_{uuid.uuid4().hex[:6]}"
    folder = tmp_path / package / "on_slurm"
    folder.mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    asset = f"component_{uuid.uuid4().hex[:6]}"
    (folder / "defs.yaml").write_text(
        textwrap.dedent(
            f"""\
            type: dagster_hpc.components.HpcScriptComponent
            attributes:
              execution:
                name: {asset}
                path: payload.py
                args: --greeting hello
              mode: slurm
              keep_run_dirs: always
              queue:
                time_limit: "5"
                mem: 256M
              extras:
                answer: 42
              assets:
                - key: {asset}
            """
        )
    )
    (folder / "payload.py").write_text(
        textwrap.dedent(
            """\
            import os, sys
            from dagster_pipes import open_dagster_pipes

            with open_dagster_pipes() as pipes:
                pipes.log.info(f"{sys.argv[1:]} on {os.environ.get('SLURMD_NODENAME')}")
                pipes.report_asset_materialization(metadata={"answer": pipes.extras["answer"]})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(package)
    defs = dg.load_defs(module, project_root=tmp_path)
    assets_def = defs.resolve_assets_def(asset)
    spec = assets_def.specs_by_key[dg.AssetKey(asset)]
    assert "slurm" in spec.kinds and spec.tags["dagster-hpc/partition"] == "debug"
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([assets_def], instance=instance)
    assert result.success
    md = result.asset_materializations_for_node(asset)[0].metadata
    assert md["answer"].value == 42 and md["slurm/state"].value == "COMPLETED"
    job = md["slurm/job_id"].value
    assert own_record_partition(cluster, job) == "debug"
    lines = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("['--greeting', 'hello'] on node" in line for line in lines)
    sys.modules.pop(package, None)
