"""One name per setting: a config field ``remote_base_dir`` is the environment variable
``{PREFIX}_REMOTE_BASE_DIR`` and the command-line flag ``--remote-base-dir``, derived here.

Older spellings that users may have exported (``DAGSTER_HPC_SLURM_SIGNAL``,
``DAGSTER_HPC_SSH_KNOWN_HOSTS``, ...) stay accepted as aliases, listed next to the reader that
accepts them; setting a field under two names with different values is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from dagster_hpc.errors import ConfigError


def env_suffix(field: str) -> str:
    """``remote_base_dir`` -> ``REMOTE_BASE_DIR`` (the variable is ``{prefix}_{suffix}``)."""
    return field.upper()


def cli_flag(field: str) -> str:
    """``remote_base_dir`` -> ``--remote-base-dir``."""
    return "--" + field.replace("_", "-")


def env_names(fields: Iterable[str], aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{suffix: field}`` for ``fields`` (derived names first), then the old ``aliases``."""
    table = {env_suffix(f): f for f in fields}
    for suffix, field in (aliases or {}).items():
        if field not in table.values():
            raise ValueError(f"alias {suffix} names unknown field {field!r}")
        table.setdefault(suffix, field)
    return table


def read_env(
    prefix: str, table: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, tuple[str, str]]:
    """``field -> (variable name, raw value)`` for every non-empty ``{prefix}_{suffix}``.

    The derived name wins over an alias only when both say the same; two different values for
    one field are refused (a stale export must not silently override the new one).
    """
    env = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}
    for suffix, field in table.items():
        name = f"{prefix}_{suffix}"
        raw = env.get(name, "")
        if not raw:
            continue
        if field in found and found[field][1] != raw:
            raise ConfigError(
                f"{found[field][0]}={found[field][1]!r} and {name}={raw!r} set the same setting "
                f"({field}) differently: unset {name} (the older spelling)"
            )
        found.setdefault(field, (name, raw))
    return found
