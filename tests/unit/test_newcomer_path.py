"""What a newcomer sees: a payload without Pipes can say so (no orange warning), and run-dir
metadata only points at directories that still exist."""

from pathlib import Path

import dagster as dg

from dagster_hpc import ComputeResource

PAYLOADS = Path(__file__).parent / "payloads"
NO_MESSAGES = "[pipes] did not receive any messages"


def _run(compute: ComputeResource, **run_kwargs) -> tuple[dg.ExecuteInProcessResult, list, list]:
    @dg.asset(name="plain")
    def plain(context: dg.AssetExecutionContext, compute: ComputeResource):
        yield from compute.run(context, PAYLOADS / "hello.sh", **run_kwargs).get_results()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([plain], resources={"compute": compute}, instance=instance)
    records = [e for e in instance.all_logs(result.run_id) if e.user_message]
    warnings = [e.user_message for e in records if e.level >= 30]  # logging.WARNING
    return result, [e.user_message for e in records], warnings


def test_a_payload_without_pipes_gets_no_warning(tmp_path: Path) -> None:
    result, logs, warnings = _run(ComputeResource(base_dir=str(tmp_path)), pipes=False)
    assert result.success
    assert not any(NO_MESSAGES in w for w in warnings), warnings
    assert not any("[pipes] did not receive closed message" in w for w in warnings), warnings
    assert any("hello" in m for m in logs), logs  # its output still became log lines


def test_without_saying_so_dagster_warns_and_the_text_points_at_pipes_false(
    tmp_path: Path,
) -> None:
    result, _, warnings = _run(ComputeResource(base_dir=str(tmp_path)))
    assert result.success
    (warning,) = [w for w in warnings if NO_MESSAGES in w]
    assert "pipes=False" in warning and "kept if the step fails" in warning


def test_run_dir_metadata_only_for_kept_directories(tmp_path: Path) -> None:
    removed, _, _ = _run(ComputeResource(base_dir=str(tmp_path / "default")), pipes=False)
    md = removed.asset_materializations_for_node("plain")[0].metadata
    assert not [k for k in md if k.endswith("/run_dir")], md  # the default removed it
    kept, _, _ = _run(
        ComputeResource(base_dir=str(tmp_path / "kept"), keep_run_dirs="always"), pipes=False
    )
    md = kept.asset_materializations_for_node("plain")[0].metadata
    assert Path(md["dagster_hpc/run_dir"].value).is_dir()
