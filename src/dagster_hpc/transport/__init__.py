"""How we reach the cluster: see base.Transport."""

from dagster_hpc.transport.base import CommandResult, Transport

__all__ = ["CommandResult", "Transport"]
