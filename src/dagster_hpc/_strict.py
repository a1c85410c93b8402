"""Strict input: a misspelled keyword, choice or ``DAGSTER_HPC_*`` variable is refused, with a suggestion.

Pydantic (and so Dagster's ``Config``/``ConfigurableResource``) ignores unknown keywords by
default, so ``QueueConfig(partiton="cpu")`` used to run the job without a partition. Every
configuration class of the library derives from ``StrictConfig`` / ``StrictResource`` (or, for
the launcher dataclasses, calls ``refuse_unknown_keywords``), and every ``from_env`` reader calls
``refuse_unknown_env``: the error names the bad key, the closest valid one and the valid set.
Choice fields are ``Literal`` types (Dagster's UI and launchpad then offer the choices); a bad
choice is refused here too, as a ``ConfigError`` with a suggestion instead of pydantic's text.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from dagster_hpc.errors import ConfigError

# difflib ratio above which a valid name is offered as "did you mean": 0.6 (difflib's default)
# catches swapped, missing and doubled letters ("partiton", "mdoe") without suggesting unrelated
# names for short keys.
SUGGEST_CUTOFF = 0.6
# The namespace of the library's environment variables. Names in it that are not ours but close
# to one of ours (e.g. DAGSTER_HPC_SLRUM_PARTITION) are refused; others (an application's own
# DAGSTER_HPC_EXAMPLE_DATA) are left alone.
ENV_NAMESPACE = "DAGSTER_HPC_"
# Stricter cutoff for whole variable names: they share the long DAGSTER_HPC_ prefix, which
# alone makes unrelated names look similar to difflib.
ENV_SUGGEST_CUTOFF = 0.9
# Variables the job wrapper and helpers set on the execution side (not site configuration).
RUNTIME_ENV_NAMES = frozenset(
    {
        "DAGSTER_HPC_MODE",
        "DAGSTER_HPC_RUN_ID",
        "DAGSTER_HPC_RUN_DIR",
        "DAGSTER_HPC_PARTITION_KEY",
        "DAGSTER_HPC_ITEM_INDEX",
        "DAGSTER_HPC_ITEM_KEY",
        "DAGSTER_HPC_HET_GROUP",
        "DAGSTER_HPC_HOLDER_DIR",
        "DAGSTER_HPC_ATTEMPT",
        "DAGSTER_HPC_CHECKPOINT_DIR",
        "DAGSTER_HPC_CHECKPOINT_SIGNAL",
        "DAGSTER_HPC_ASKPASS_PASSWORD",
        "DAGSTER_HPC_ASKPASS_TOTP_SECRET",
    }
)


def closest(word: str, valid: Iterable[str], cutoff: float = SUGGEST_CUTOFF) -> str | None:
    """The valid name nearest to ``word`` (case-insensitive), or None when nothing is close."""
    by_lower = {v.lower(): v for v in valid}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    if match:
        return by_lower[match[0]]
    # an abbreviation ("nproc" for "nproc_per_node") is too short for difflib's ratio
    starts = sorted(
        v for low, v in by_lower.items() if len(word) >= 3 and low.startswith(word.lower())
    )
    return starts[0] if len(starts) == 1 else None


def _did_you_mean(word: str, valid: Iterable[str], cutoff: float = SUGGEST_CUTOFF) -> str:
    hint = closest(word, valid, cutoff)
    return f" (did you mean {hint!r}?)" if hint else ""


def refuse_unknown_keywords(owner: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """ConfigError for the first keyword of ``given`` that is not in ``valid``."""
    allowed = sorted(set(valid))
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"{owner}: unknown keyword {key!r}{_did_you_mean(key, allowed)}; "
                f"valid keywords: {', '.join(allowed) or '(none)'}"
            )


def check_choice(owner: str, field: str, value: Any, choices: Iterable[str]) -> None:
    """ConfigError unless ``value`` is one of ``choices`` (a Literal field's values)."""
    options = list(choices)
    if value in options:
        return
    did = _did_you_mean(value, options) if isinstance(value, str) else ""
    raise ConfigError(
        f"{owner}: unknown {field} {value!r}{did}: use one of {', '.join(map(repr, options))}"
    )


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of ``Literal[...]`` (also inside ``X | None``), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    args = typing.get_args(annotation)
    for arg in args:
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg) + ((None,) if type(None) in args else ())
    return None


def check_model_input(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse unknown keywords and bad Literal choices for a pydantic/Dagster config class;
    return the input with choice fields given as ``dg.EnvVar`` read now (a Literal field cannot
    hold a variable's name, and a misspelled value is best refused at definition time)."""
    fields = cls.model_fields  # type: ignore[attr-defined]
    valid = set(fields) | {f.alias for f in fields.values() if f.alias}
    refuse_unknown_keywords(cls.__name__, [k for k in data if not k.startswith("_")], valid)
    out = dict(data)
    for name, info in fields.items():
        key = info.alias if info.alias and info.alias in data else name
        if key not in data:
            continue
        choices = literal_choices(info.annotation)
        if choices is None:
            continue
        if isinstance(out[key], dg.EnvVar):
            out[key] = _read_env_choice(cls.__name__, name, out[key])
        check_choice(cls.__name__, name, out[key], choices)
    return out


def _read_env_choice(owner: str, field: str, var: dg.EnvVar) -> str:
    value = var.get_value()
    if value is None:
        name = var.env_var_name
        raise ConfigError(f"{owner}: {field}=EnvVar({name!r}) but {name} is not set: export it")
    return value


class StrictConfig(dg.Config):
    """``dg.Config`` that refuses unknown keywords and bad choices (ConfigError with a suggestion)."""

    def __init__(self, **data: Any):
        super().__init__(**check_model_input(type(self), data))


class StrictResource(dg.ConfigurableResource):
    """``dg.ConfigurableResource`` that refuses unknown keywords and bad choices."""

    def __init__(self, **data: Any):
        super().__init__(**check_model_input(type(self), data))


def known_env_names() -> frozenset[str]:
    """Every ``DAGSTER_HPC_*`` name the library reads (for near-miss detection)."""
    from dagster_hpc.backends.slurm_resource import DEFAULT_ENV_PREFIX as SLURM
    from dagster_hpc.backends.slurm_resource import SLURM_ENV_SUFFIXES
    from dagster_hpc.envs.config import DEFAULT_ENV_PREFIX as ENV
    from dagster_hpc.envs.config import ENV_FIELDS
    from dagster_hpc.ssh_resource import DEFAULT_ENV_PREFIX as SSH
    from dagster_hpc.ssh_resource import ENV_FIELDS as SSH_FIELDS

    names = set(RUNTIME_ENV_NAMES)
    for prefix, suffixes in ((SLURM, SLURM_ENV_SUFFIXES), (ENV, ENV_FIELDS), (SSH, SSH_FIELDS)):
        names.update(f"{prefix}_{s}" for s in suffixes)
    return frozenset(names)


def refuse_unknown_env(
    prefix: str, suffixes: Iterable[str], environ: Mapping[str, str] | None = None
) -> None:
    """ConfigError for a set ``{prefix}_*`` variable that the reader does not know, and (for the
    library's own namespace) for a ``DAGSTER_HPC_*`` variable that is a near miss of a known one.

    A misspelled variable is the most common site-configuration error: unrefused, the job runs
    without the setting (no account, the default partition) and nobody notices.
    """
    env = os.environ if environ is None else environ
    valid = sorted(f"{prefix}_{s}" for s in suffixes)
    for name in sorted(env):
        if name.startswith(f"{prefix}_") and name not in valid:
            raise ConfigError(
                f"environment variable {name} is not a setting{_did_you_mean(name, valid)}; "
                f"{prefix}_* variables are: {', '.join(valid)}. Rename or unset it."
            )
    if not prefix.startswith(ENV_NAMESPACE):
        return
    known = known_env_names()
    for name in sorted(env):
        if name.startswith(ENV_NAMESPACE) and name not in known:
            hint = closest(name, known, ENV_SUGGEST_CUTOFF)
            if hint is not None:
                raise ConfigError(
                    f"environment variable {name} is not a dagster-hpc setting (did you mean "
                    f"{hint!r}?): rename or unset it"
                )
