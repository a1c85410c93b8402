"""Requirements from a lock, wheels for the TARGET platform, and a ``uv`` binary to ship.

uv resolves and installs but has no "download wheels" command, so the wheelhouse is filled by
``pip download`` run through ``uv tool run`` (pip is fetched into uv's cache once): it is the
one standard tool that fetches binary wheels for a platform other than the build host's
(``--platform``/``--python-version``). The ``uv`` wheel on PyPI carries uv's static binary,
which is what the cluster uses to install the wheelhouse offline.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from dagster_hpc.envs.platform import TargetPlatform
from dagster_hpc.errors import ConfigError, EnvBuildError
from dagster_hpc.localtool import run_tool

# Exporting a lock or downloading a few dozen wheels; beyond this something hangs (index down).
EXPORT_TIMEOUT_S = 120.0
DOWNLOAD_TIMEOUT_S = 900.0
PIP_REQUIREMENT = "pip>=24"

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _run(argv: list[str], *, timeout: float, hint: str, cwd: Path | None = None) -> str:
    return run_tool(argv, timeout=timeout, hint=hint, cwd=cwd)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The normalized project name of a requirements line (None for comments/options)."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "-")):
        return None
    m = _NAME.match(stripped)
    return normalize(m.group(1)) if m else None


def read_requirements(lock: Path) -> list[str]:
    """Pinned requirement lines from ``uv.lock`` (via ``uv export``) or a requirements file."""
    if not lock.is_file():
        raise ConfigError(
            f"lock file {lock} does not exist: point env.lock at a uv.lock or requirements.txt"
        )
    if lock.name == "uv.lock":
        if not (lock.parent / "pyproject.toml").is_file():
            raise ConfigError(
                f"{lock} has no pyproject.toml beside it: uv export needs the project"
            )
        text = _run(
            [
                "uv",
                "export",
                "--frozen",
                "--no-dev",
                "--no-emit-project",
                "--no-hashes",
                "--no-header",
                "--format",
                "requirements-txt",
                "--project",
                str(lock.parent),
            ],
            timeout=EXPORT_TIMEOUT_S,
            hint="run `uv lock` in the project so uv.lock matches pyproject.toml",
        )
    else:
        text = lock.read_text()
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line.startswith("-e ") or line.startswith("./") or line.startswith("file:"):
            raise ConfigError(
                f"{lock}: local/editable requirement {line!r} cannot be shipped; build it as a wheel"
            )
        if requirement_name(line):
            lines.append(line)
    return lines


def with_extras(requirements: Sequence[str], extras: Sequence[str]) -> list[str]:
    """``requirements`` plus each extra whose project the lock does not already pin."""
    present = {requirement_name(r) for r in requirements}
    return [*requirements, *(e for e in extras if requirement_name(e) not in present)]


def default_extras() -> tuple[str, ...]:
    """dagster-pipes at the orchestrator's own version (the remote half of the protocol)."""
    return (f"dagster-pipes=={metadata.version('dagster-pipes')}",)


def pip_download(
    requirements_file: Path, dest: Path, platform: TargetPlatform, *, no_deps: bool
) -> None:
    """Binary wheels for ``platform`` into ``dest`` (pip download through uv's tool runner)."""
    py = platform.python.replace(".", "")
    argv = [
        "uv",
        "tool",
        "run",
        "--from",
        PIP_REQUIREMENT,
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        platform.python,
        "--abi",
        f"cp{py}",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "-d",
        str(dest),
        "-r",
        str(requirements_file),
    ]
    for tag in platform.wheel_platform_tags():
        argv += ["--platform", tag]
    if no_deps:
        argv.append("--no-deps")
    _run(
        argv,
        timeout=DOWNLOAD_TIMEOUT_S,
        hint="every package needs a binary wheel for the target platform; check the index is reachable",
    )


def fetch_uv_binary(dest: Path, platform: TargetPlatform, work: Path) -> Path:
    """The static ``uv`` binary (same version as the local uv) for ``platform``, at ``dest``."""
    version = _run(["uv", "--version"], timeout=EXPORT_TIMEOUT_S, hint="install uv").split()[1]
    req = work / "uv-requirement.txt"
    req.write_text(f"uv=={version}\n")
    wheels_dir = work / "uv-wheel"
    pip_download(req, wheels_dir, platform, no_deps=True)
    wheels = sorted(wheels_dir.glob("uv-*.whl"))
    if not wheels:
        raise EnvBuildError(f"pip download fetched no uv wheel for {platform.uv_python_platform()}")
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next((n for n in zf.namelist() if n.endswith(".data/scripts/uv")), None)
        if member is None:
            raise EnvBuildError(f"{wheels[0].name} has no uv binary inside")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(zf.read(member))
    dest.chmod(0o755)
    return dest
