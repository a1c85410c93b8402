"""From an ``EnvConfig`` to a verified interpreter on the cluster (what the Slurm backend calls
before submitting: every failure here happens before any job exists)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dagster_hpc import progress
from dagster_hpc.envs.build import plan
from dagster_hpc.envs.config import EnvConfig
from dagster_hpc.envs.platform import compute_node_platform
from dagster_hpc.envs.predeployed import verify_predeployed
from dagster_hpc.envs.ship import EnvRef, EnvShipper
from dagster_hpc.transport.base import Transport

MB = 1 << 20


def queue_srun_options(queue: object) -> tuple[str, ...]:
    """srun options a site may require for any step (probe, install), from a QueueConfig:
    account, QOS, reservation, constraint (the partition is passed separately)."""
    out = []
    for name in ("account", "qos", "reservation", "constraint"):
        value = getattr(queue, name, None)
        if value:
            out.append(f"--{name}={value}")
    return tuple(out)


def default_env_base(runs_base: str) -> str:
    """Envs live beside the run directories: ``~/.dagster-hpc/runs`` -> ``~/.dagster-hpc``."""
    base = runs_base.rstrip("/")
    return base.rsplit("/", 1)[0] if base.endswith("/runs") and base.count("/") >= 1 else base


def resolve_env(
    transport: Transport,
    config: EnvConfig,
    *,
    cluster: str,
    runs_base: str,
    partition: str | None = None,
    slurm_options: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    cache_dir: Path | None = None,
) -> EnvRef:
    """The environment ``config`` describes, ready on the cluster (built/shipped if needed)."""
    config.check()
    say = log or (lambda _msg: None)
    if config.path:
        ref = verify_predeployed(
            transport,
            config.predeployed(),
            cluster=cluster,
            partition=partition,
            slurm_options=slurm_options,
        )
        say(f"pre-deployed environment {config.path} verified: {ref.python}")
        return ref
    platform = compute_node_platform(
        transport,
        cluster,
        partition=partition,
        python=config.python_version,
        cache_dir=cache_dir,
        options=slurm_options,
    )
    p = plan(config.spec(), platform)
    shipper = EnvShipper(
        transport,
        config.remote_base or default_env_base(runs_base),
        cluster=cluster,
        cache_dir=cache_dir,
        install_on=config.install_on,
        partition=partition,
        slurm_options=slurm_options,
    )
    with progress.reporting(progress.LogProgress(say) if log else None):
        report = shipper.ensure(p)  # build/upload percent lines in Dagster's log
    if report.status == "hit" and report.roundtrips == 0:
        say(f"environment {p.key} ({p.kind}): {report.ref.path} (verified earlier in this process)")
    elif report.status == "hit":
        say(
            f"environment {p.key} ({p.kind}) already on {cluster}: {report.ref.path} "
            f"({report.roundtrips} round trip(s), 0 bytes uploaded)"
        )
    else:
        say(
            f"environment {p.key} ({p.kind}) {report.status} to {report.ref.path}: "
            f"{report.bytes_uploaded / MB:.1f} MB uploaded, build {report.build_s:.1f} s, "
            f"total {report.seconds:.1f} s (was: {report.lookup_status})"
        )
    return report.ref
