"""Build an environment bundle (one archive) from a project's lock, for the compute nodes.

``plan()`` is cheap (it reads the lock and names the key) so a cache lookup on the cluster
needs no build; ``build()`` makes the archive only on a miss, and keeps it in a local cache
by key so a second cluster (or a wiped remote entry) does not pay the build again.

Bundle kinds (see ``key.BUNDLE_KINDS``):

- ``self-contained``: a relocated copy of a local CPython (see ``interpreter``) with the
  locked packages installed into its site-packages for the target platform. The cluster
  needs no Python at all. Needs a build host with the same architecture and a glibc no newer
  than the compute nodes'.
- ``wheelhouse``: the pinned requirements, binary wheels for the target platform and a
  static ``uv``; the cluster creates a venv from the compute node's own Python and installs
  offline. Small, works across architectures, needs a matching Python on the nodes.
- ``pack``: a site hook (``pack_command``, e.g. pixi-pack) writes one self-extracting file;
  the cluster runs it with ``sh`` inside the new entry directory.
"""

from __future__ import annotations

import json
import platform as _host
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from dagster_hpc import progress
from dagster_hpc.envs import interpreter, wheelhouse
from dagster_hpc.envs.key import PACK, SELF_CONTAINED, WHEELHOUSE, env_key
from dagster_hpc.envs.manifest import ACTIVATE, MANIFEST_PENDING, activate_script
from dagster_hpc.envs.platform import TargetPlatform, default_cache_dir
from dagster_hpc.errors import ConfigError, EnvBuildError
from dagster_hpc.localtool import run_tool

# uv installing a few hundred MB of wheels into a bundle; a site pack tool may take longer
# (the peer's pixi-pack: 5-18 min), so its limit is generous.
INSTALL_TIMEOUT_S = 900.0
PACK_TIMEOUT_S = 1800.0
ARCHIVE_TIMEOUT_S = 600.0
# compression -> archive file extension (the remote side picks the decompressor by it)
ARCHIVE_EXT = {"none": "tar", "gzip": "tar.gz", "zstd": "tar.zst"}
# level 1: these archives are made once per lock and unpacked once; speed beats ratio
COMPRESS_PROGRAM = {"gzip": "gzip -1", "zstd": "zstd -1 -T0 -q"}
BUNDLE_DIR = ".bundle"  # inside a wheelhouse/pack entry: what the remote install step uses
PACK_FILE = "pack.run"


@dataclass(frozen=True)
class EnvSpec:
    """What to build: a lock file and how to bundle it.

    ``lock`` is a ``uv.lock`` (with its pyproject.toml beside it) or a requirements file.
    ``extra_packages`` are installed on top when the lock does not pin them (default:
    dagster-pipes at the orchestrator's version). ``pack_command`` (kind ``pack``) is an argv
    template with ``{project}``, ``{lock}`` and ``{output}`` placeholders.
    """

    lock: Path
    kind: str = SELF_CONTAINED
    extra_packages: tuple[str, ...] | None = None
    python_home: Path | None = None
    pack_command: tuple[str, ...] = ()
    pack_python: str = "env/bin/python"

    def extras(self) -> tuple[str, ...]:
        return wheelhouse.default_extras() if self.extra_packages is None else self.extra_packages


@dataclass(frozen=True)
class BuildPlan:
    """The key and everything the remote side needs to know, before anything is built."""

    key: str
    kind: str
    python: str  # full version for self-contained ('3.11.7'), minor otherwise
    platform: TargetPlatform
    python_relpath: str  # interpreter inside the entry, e.g. 'bin/python'
    install_shell: str  # run inside the new entry dir after unpacking ('' = nothing)
    spec: EnvSpec = field(compare=False)


@dataclass(frozen=True)
class Bundle:
    plan: BuildPlan
    archive: Path
    built_s: float  # 0.0 when it came from the local bundle cache

    @property
    def size(self) -> int:
        return self.archive.stat().st_size


def plan(spec: EnvSpec, platform: TargetPlatform) -> BuildPlan:
    """Validate ``spec`` against ``platform`` and compute the content key (no building)."""
    lock = Path(spec.lock)
    if not lock.is_file():
        raise ConfigError(
            f"env lock file {lock} does not exist: point it at a uv.lock or requirements.txt"
        )
    lock_bytes = lock.read_bytes()
    extras = spec.extras()
    if spec.kind == SELF_CONTAINED:
        home = Path(spec.python_home) if spec.python_home else interpreter.default_python_home()
        python = interpreter.python_home_version(home)
        target = platform.with_python(".".join(python.split(".")[:2]))
        _check_self_contained_fits(target)
        relpath, install = "bin/python", ""
    elif spec.kind == WHEELHOUSE:
        python, target = platform.python, platform
        if not platform.node_python:
            raise ConfigError(
                f"the compute nodes have no Python {platform.python} (probe found none), so a "
                "wheelhouse bundle cannot be installed there: use kind='self-contained', or set "
                "the platform's python to the version the nodes have"
            )
        relpath, install = "venv/bin/python", _wheelhouse_install_shell(platform.node_python)
    elif spec.kind == PACK:
        if not spec.pack_command:
            raise ConfigError(
                "kind='pack' needs pack_command, e.g. ['pixi-pack', '--create-executable', ...]"
            )
        if not re.fullmatch(
            r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", spec.pack_python
        ) or ".." in spec.pack_python.split("/"):
            raise ConfigError(
                f"pack_python {spec.pack_python!r} must be a plain relative path inside the unpacked "
                "bundle (letters, digits, . _ - and /), e.g. env/bin/python"
            )
        python, target = platform.python, platform
        relpath, install = (
            spec.pack_python,
            f"sh ./{BUNDLE_DIR}/{PACK_FILE} && rm -f ./{BUNDLE_DIR}/{PACK_FILE}",
        )
    else:
        raise ConfigError(f"unknown env kind {spec.kind!r}: use self-contained, wheelhouse or pack")
    key = env_key(
        lock_bytes=lock_bytes,
        python=python,
        platform=target,
        kind=spec.kind,
        extra_packages=extras,
        pack_command=spec.pack_command,
    )
    return BuildPlan(key, spec.kind, python, target, relpath, install, spec)


def _check_self_contained_fits(target: TargetPlatform) -> None:
    here = _host.machine()
    if target.arch != here:
        raise ConfigError(
            f"the compute nodes are {target.arch} but this build host is {here}: a self-contained "
            "bundle copies this host's Python; use kind='wheelhouse' (wheels for the target)"
        )
    libc, version = _host.libc_ver()
    if libc == "glibc" and version:
        host_minor = int(version.split(".")[1])
        if host_minor > target.glibc_minor:
            raise ConfigError(
                f"this build host has glibc {version}, newer than the compute nodes' {target.glibc}: "
                "the copied interpreter would not start there; build on an older host or use "
                "kind='wheelhouse'"
            )


def _wheelhouse_install_shell(node_python: str) -> str:
    b = BUNDLE_DIR
    env = "UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1"
    return (
        f"{env} ./{b}/uv venv --quiet --relocatable --python {shlex.quote(node_python)} venv && "
        f"{env} ./{b}/uv pip install --quiet --offline --no-index --find-links ./{b}/wheelhouse "
        f"--python venv/bin/python --compile-bytecode -r ./{b}/requirements.txt && "
        f"rm -rf ./{b}/wheelhouse"
    )


def bundle_cache_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "bundles"


def default_compression(kind: str, *, remote_zstd: bool = False) -> str:
    """How to compress a bundle. Wheels (and pack outputs) are compressed already; a
    self-contained bundle is mostly text and .so files: zstd -1 when both ends have zstd (it
    packs as small as gzip -1 several times faster), else gzip -1."""
    if kind != SELF_CONTAINED:
        return "none"
    return "zstd" if remote_zstd and shutil.which("zstd") else "gzip"


# Progress of a build: requirements resolved, packages installed (staged), archive written.
BUILD_STEPS = 3


def build(p: BuildPlan, *, cache_dir: Path | None = None, compression: str | None = None) -> Bundle:
    """The archive for ``p``: from the local bundle cache, or built now."""
    compression = compression or default_compression(p.kind)
    if compression not in ARCHIVE_EXT:
        raise ConfigError(
            f"unknown compression {compression!r}: use one of {', '.join(ARCHIVE_EXT)}"
        )
    out_dir = bundle_cache_dir(cache_dir)
    archive = out_dir / f"{p.key}.{ARCHIVE_EXT[compression]}"
    if archive.is_file():
        return Bundle(p, archive, 0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    what = f"env build {p.key} ({p.kind})"
    progress.report(what, 0, BUILD_STEPS, unit="steps")
    with tempfile.TemporaryDirectory(prefix=f"dhpc-build-{p.key}-") as tmp:
        work = Path(tmp)
        stage = work / "stage"
        requirements = wheelhouse.with_extras(
            wheelhouse.read_requirements(Path(p.spec.lock)), p.spec.extras()
        )
        req_file = work / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n")
        progress.report(what, 1, BUILD_STEPS, unit="steps")  # requirements resolved
        if p.kind == SELF_CONTAINED:
            _stage_self_contained(p, stage, req_file, cache_dir)
        elif p.kind == WHEELHOUSE:
            _stage_wheelhouse(p, stage, req_file, work)
        else:
            _stage_pack(p, stage)
        (stage / ACTIVATE).write_text(activate_script(p.python_relpath))
        (stage / MANIFEST_PENDING).write_text(
            json.dumps(manifest_for(p, requirements), indent=2) + "\n"
        )
        progress.report(what, 2, BUILD_STEPS, unit="steps")  # packages installed
        partial = out_dir / f"{archive.name}.part-{work.name}"
        _tar(stage, partial, compression)
        partial.replace(archive)
    progress.report(what, BUILD_STEPS, BUILD_STEPS, unit="steps")  # archived
    return Bundle(p, archive, time.monotonic() - started)


def manifest_for(p: BuildPlan, requirements: list[str]) -> dict[str, object]:
    return {
        "key": p.key,
        "kind": p.kind,
        "python": p.python,
        "platform": p.platform.key_parts(),
        "python_relpath": p.python_relpath,
        "activate": ACTIVATE,
        "packages": requirements,
        "lock": str(Path(p.spec.lock).resolve()),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "built_by": f"dagster-hpc {metadata.version('dagster-hpc')}",
    }


def _stage_self_contained(
    p: BuildPlan, stage: Path, req_file: Path, cache_dir: Path | None
) -> None:
    home = Path(p.spec.python_home) if p.spec.python_home else interpreter.default_python_home()
    python = interpreter.stage_interpreter(
        home, stage, (cache_dir or default_cache_dir()) / "interpreters"
    )
    site = interpreter.site_packages_dir(python)
    _run_tool(
        [
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "--target",
            str(site),
            "--python-platform",
            p.platform.uv_python_platform(),
            "--python-version",
            p.platform.python,
            "--only-binary",
            ":all:",
            "--compile-bytecode",
            "--link-mode",
            "copy",
            "-r",
            str(req_file),
        ],
        INSTALL_TIMEOUT_S,
        "every locked package needs a binary wheel for the target platform",
    )


def _stage_wheelhouse(p: BuildPlan, stage: Path, req_file: Path, work: Path) -> None:
    b = stage / BUNDLE_DIR
    (b / "wheelhouse").mkdir(parents=True)
    shutil.copy2(req_file, b / "requirements.txt")
    wheelhouse.pip_download(req_file, b / "wheelhouse", p.platform, no_deps=False)
    wheelhouse.fetch_uv_binary(b / "uv", p.platform, work)


def _stage_pack(p: BuildPlan, stage: Path) -> None:
    lock = Path(p.spec.lock).resolve()
    (stage / BUNDLE_DIR).mkdir(parents=True)
    output = stage / BUNDLE_DIR / PACK_FILE
    values = {"project": str(lock.parent), "lock": str(lock), "output": str(output)}
    try:
        argv = [part.format(**values) for part in p.spec.pack_command]
    except (KeyError, IndexError) as exc:
        raise ConfigError(
            f"pack_command has an unknown placeholder {exc}: use {{project}}, {{lock}}, {{output}}"
        ) from exc
    _run_tool(
        argv,
        PACK_TIMEOUT_S,
        "run the pack command by hand in the project directory",
        cwd=lock.parent,
    )
    if not output.is_file():
        raise EnvBuildError(
            f"pack_command finished but wrote no file at {{output}} ({output}): {argv}"
        )


def _run_tool(argv: list[str], timeout: float, hint: str, cwd: Path | None = None) -> None:
    run_tool(argv, timeout=timeout, hint=hint, cwd=cwd)


def _tar(stage: Path, archive: Path, compression: str) -> None:
    argv = ["tar", "-C", str(stage), "-cf", str(archive)]
    if compression in COMPRESS_PROGRAM:
        argv[3:3] = [f"--use-compress-program={COMPRESS_PROGRAM[compression]}"]
    _run_tool([*argv, "."], ARCHIVE_TIMEOUT_S, "check free disk space in the local cache directory")
