"""The configuration reference, generated from the configuration classes themselves.

``mkdocs.yml`` loads this file as a hook: every ``<!-- reference: dagster_hpc.Name -->`` line in
a page becomes a table of that class's fields (name, type, default, environment variable,
description), read from the pydantic model (``model_fields``) or the frozen dataclass
(launchers) at build time. A field without a description fails the build, so a new setting
cannot ship undocumented and the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# "<!-- reference: dagster_hpc.X -->"; "own" lists only the fields the class itself declares
# (a subclass of someone else's model, e.g. a Dagster component).
MARKER_RE = re.compile(r"^<!-- reference: (?P<target>[A-Za-z_][\w.]*)(?P<own> own)? -->$", re.M)


class ReferenceError(Exception):
    """A marker names something that is not a documented configuration class."""


def _env_sources() -> dict[str, list[tuple[str, Mapping[str, str]]]]:
    """class name -> [(prefix, {suffix: field})]: the variables each ``from_env`` reads."""
    from dagster_hpc import ssh_resource
    from dagster_hpc.backends import slurm_resource
    from dagster_hpc.envs import config as env_config

    slurm = slurm_resource.DEFAULT_ENV_PREFIX
    return {
        "SSHConnectionResource": [(ssh_resource.DEFAULT_ENV_PREFIX, ssh_resource.ENV_FIELDS)],
        "SlurmResource": [(slurm, slurm_resource.RESOURCE_ENV_FIELDS)],
        "QueueConfig": [(slurm, slurm_resource.QUEUE_ENV_FIELDS)],
        "EnvConfig": [(env_config.DEFAULT_ENV_PREFIX, env_config.ENV_FIELDS)],
    }


def _resolve(target: str) -> type:
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ReferenceError(f"reference marker names {target!r}, which does not exist") from exc
    if not inspect.isclass(obj):
        raise ReferenceError(f"reference marker names {target!r}, which is not a class")
    return obj


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = str(annotation)
    text = re.sub(r"\b(?:typing|collections\.abc|dagster_hpc(?:\.\w+)*)\.", "", text)
    text = text.replace("NoneType", "None")
    return re.sub(r"Optional\[(.*)\]", r"\1 | None", text)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default_text(value: Any) -> str:
    if value is PydanticUndefined or value is dataclasses.MISSING:
        return "required"
    if isinstance(value, BaseModel):
        return f"`{type(value).__name__}()`"
    return f"`{value!r}`"


def _pydantic_rows(
    cls: type[BaseModel], env: dict[str, str], own: bool = False
) -> list[tuple[str, ...]]:
    rows = []
    declared = cls.__dict__.get("__annotations__", {})
    for name, info in cls.model_fields.items():
        if own and name not in declared:
            continue
        if not info.description:
            raise ReferenceError(
                f"{cls.__name__}.{name} has no description: add Field(description=...) so the "
                "configuration reference documents it"
            )
        default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
        rows.append(
            (
                name,
                _type_name(info.annotation),
                _default_text(default),
                env.get(name, ""),
                info.description,
            )
        )
    return rows


def _dataclass_rows(cls: type) -> list[tuple[str, ...]]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc", "")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append(
            (f.name, _type_name(hints.get(f.name, f.type)), _default_text(default), "", doc)
        )
    return rows


def render(target: str, env_sources: Callable[[], dict] = _env_sources, own: bool = False) -> str:
    """The Markdown for one marker: the class's docstring and its field table."""
    cls = _resolve(target)
    env: dict[str, str] = {}
    for prefix, mapping in env_sources().get(cls.__name__, []):
        for suffix, field in mapping.items():  # the derived name first; older aliases after it
            env.setdefault(field, f"`{prefix}_{suffix}`")
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        rows = _pydantic_rows(cls, env, own)
    elif dataclasses.is_dataclass(cls):
        rows = _dataclass_rows(cls)
    else:
        raise ReferenceError(f"{target} is neither a pydantic model nor a dataclass")
    doc = inspect.cleandoc(cls.__doc__ or "")
    with_env = any(r[3] for r in rows)
    with_desc = any(r[4] for r in rows)
    header = ["field", "type", "default"] + (["environment"] if with_env else [])
    header += ["meaning"] if with_desc else []
    lines = [doc, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, type_, default, var, desc in rows:
        cells = [f"`{name}`", f"`{_cell(type_)}`", _cell(default)]
        cells += [var] if with_env else []
        cells += [_cell(desc)] if with_desc else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def expand(markdown: str) -> str:
    """Replace every reference marker in a page by its generated table."""
    return MARKER_RE.sub(lambda m: render(m["target"], own=bool(m["own"])), markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:  # mkdocs hook
    return expand(markdown)
