"""Dagster Components of dagster-hpc (registered for ``dg``: ``dg list components``).

dg scaffold defs dagster_hpc.components.HpcScriptComponent my_payload
"""

from dagster_hpc.components.hpc_script import HpcScriptComponent

__all__ = ["HpcScriptComponent"]
