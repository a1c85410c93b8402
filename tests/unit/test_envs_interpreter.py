"""The self-contained bundle's interpreter: a copy of a local CPython that runs from anywhere,
after being moved, with no other Python on PATH and nothing resolved from the original install."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dagster_hpc.envs.interpreter import copy_interpreter, default_python_home, is_elf, ldd_deps
from dagster_hpc.errors import ConfigError

CHECK = (
    "import json, sys, ssl, sqlite3, ctypes, lzma, bz2, zlib, decimal, uuid, crypt, readline; "
    "print(json.dumps({'prefix': sys.prefix, 'executable': sys.executable, 'path': sys.path}))"
)


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("py") / "bundle"
    copy_interpreter(default_python_home(), dest)
    return dest


def _run(python: Path, cwd: Path) -> dict:
    out = subprocess.run(
        ["env", "-i", "PATH=/nonexistent", str(python), "-c", CHECK],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_runs_with_no_python_on_path_and_after_moving(copied, tmp_path):
    seen = _run(copied / "bin" / "python", tmp_path)
    assert seen["prefix"] == str(copied)
    home = str(default_python_home())
    assert not any(p.startswith(home) for p in seen["path"])
    moved = tmp_path / "elsewhere" / "env"
    moved.parent.mkdir()
    copied.rename(moved)
    try:
        assert _run(moved / "bin" / "python", tmp_path)["prefix"] == str(moved)
    finally:
        moved.rename(copied)


def test_no_elf_in_the_bundle_loads_from_the_original_installation(copied):
    home = str(default_python_home().resolve())
    checked = 0
    for elf in [*copied.joinpath("bin").iterdir(), *copied.joinpath("lib").rglob("*.so*")]:
        if elf.is_symlink() or not is_elf(elf):
            continue
        checked += 1
        for soname, resolved in ldd_deps(elf).items():
            assert resolved, f"{elf} cannot find {soname}"
            assert not resolved.startswith(home), f"{elf} loads {resolved}"
    assert checked > 20  # interpreter, libpython, extension modules, bundled libraries
    assert (copied / "lib" / "libssl.so.3").exists() or any(
        copied.joinpath("lib").glob("libssl.so*")
    )


def test_not_a_python_installation(tmp_path):
    with pytest.raises(ConfigError, match="no bin/python3.X"):
        copy_interpreter(tmp_path, tmp_path / "out")


def test_relocated_interpreter_is_made_once_and_staged_from_the_cache(tmp_path):
    from dagster_hpc.envs.interpreter import cached_interpreter, stage_interpreter

    cache = tmp_path / "interpreters"
    first = cached_interpreter(default_python_home(), cache)
    marker = next(first.glob(".dagster-hpc-complete"))
    stamp = marker.stat().st_mtime_ns
    assert cached_interpreter(default_python_home(), cache) == first
    assert marker.stat().st_mtime_ns == stamp and len(list(cache.iterdir())) == 1  # not redone
    python = stage_interpreter(default_python_home(), tmp_path / "stage", cache)
    assert _run(python, tmp_path)["prefix"] == str(tmp_path / "stage")
    assert not list((tmp_path / "stage").glob(".dagster-hpc-complete"))


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="needs Debian's python3.11")
def test_debian_python_works_as_the_source_too(tmp_path):
    """Debian's CPython keeps packages in dist-packages: the bundle installs where it looks."""
    from dagster_hpc.envs.build import EnvSpec, build, plan
    from dagster_hpc.envs.platform import host_platform

    req = tmp_path / "requirements.txt"
    req.write_text("dagster-pipes==1.13.27\n")
    p = plan(EnvSpec(req, python_home=Path("/usr"), extra_packages=()), host_platform())
    bundle = build(p, cache_dir=tmp_path / "cache")
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(bundle.archive), "-C", str(out)], check=True)
    seen = subprocess.run(
        [
            "env",
            "-i",
            "PATH=/nonexistent",
            str(out / "bin" / "python"),
            "-c",
            "import sys, dagster_pipes; print(sys.prefix); print(dagster_pipes.__file__)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert seen[0] == str(out) and seen[1].startswith(str(out))
