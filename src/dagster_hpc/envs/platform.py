"""The platform an environment is built for: what the COMPUTE nodes run, not the login node.

Login nodes and compute nodes often differ (an x86 login node in front of aarch64 GPU nodes,
an older glibc on the nodes). So the default target is probed once through Slurm with a tiny
``srun`` that prints OS, architecture, glibc and the node's Python, and the answer is cached
locally per cluster (and partition) so later runs pay nothing.
"""

from __future__ import annotations

import json
import os
import platform as _host_platform
import re
import shlex
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dagster_hpc.errors import ConfigError, TransportError
from dagster_hpc.transport.base import Transport

# The probe waits for one tiny job step; a busy queue can hold it a while, beyond which the
# user should rather set the platform explicitly than wait silently.
PROBE_TIMEOUT_S = 180.0
# The probe's own time limit in minutes (the smallest Slurm accepts): it runs in milliseconds.
PROBE_TIME_LIMIT_MIN = 1
# Oldest manylinux glibc minor we ever ask wheels for (manylinux2014 == 2.17).
MIN_MANYLINUX_GLIBC_MINOR = 17

_MARK = "DAGSTER_HPC_PROBE"
# Runs on a compute node with nothing but a POSIX shell: every field is optional.
_PROBE_SCRIPT = (
    f"echo {_MARK}_os=$(uname -s); echo {_MARK}_arch=$(uname -m); "
    f"echo {_MARK}_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2); "
    f"for p in python3 python; do command -v $p >/dev/null 2>&1 && "
    f"echo {_MARK}_python=$($p -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])') && "
    f"echo {_MARK}_python_path=$(command -v $p) && break; done; true"
)


@dataclass(frozen=True)
class TargetPlatform:
    """OS, CPU architecture, glibc and Python minor version an environment must run on.

    ``node_python`` is the compute node's own Python (empty when it has none): the
    lock + wheelhouse bundle kind installs into a venv based on it; self-contained bundles
    do not need it.
    """

    os: str = "linux"
    arch: str = "x86_64"
    glibc: str = "2.17"
    python: str = "3.11"
    node_python: str = ""

    def __post_init__(self) -> None:
        if self.os != "linux":
            raise ConfigError(
                f"target OS {self.os!r} is not supported: Slurm compute nodes run Linux"
            )
        if not re.fullmatch(r"\d+\.\d+", self.glibc):
            raise ConfigError(f"glibc version {self.glibc!r} is not MAJOR.MINOR (e.g. '2.28')")
        if not re.fullmatch(r"3\.\d+", self.python):
            raise ConfigError(f"python version {self.python!r} is not '3.MINOR' (e.g. '3.11')")
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.arch):
            raise ConfigError(
                f"architecture {self.arch!r} is not a machine name such as x86_64 or aarch64"
            )

    @property
    def glibc_minor(self) -> int:
        return int(self.glibc.split(".")[1])

    def wheel_platform_tags(self) -> list[str]:
        """Wheel platform tags that run here, most specific first (for ``pip download``)."""
        top = max(self.glibc_minor, MIN_MANYLINUX_GLIBC_MINOR)
        tags = [
            f"manylinux_2_{m}_{self.arch}" for m in range(top, MIN_MANYLINUX_GLIBC_MINOR - 1, -1)
        ]
        tags.append(f"manylinux2014_{self.arch}")
        if self.arch in ("x86_64", "i686"):
            tags += [f"manylinux2010_{self.arch}", f"manylinux1_{self.arch}"]
        return tags

    def uv_python_platform(self) -> str:
        """The ``--python-platform`` value uv resolves wheels for."""
        return f"{self.arch}-manylinux_2_{max(self.glibc_minor, MIN_MANYLINUX_GLIBC_MINOR)}"

    def key_parts(self) -> dict[str, str]:
        """What the environment key depends on (the node's Python path does not matter)."""
        return {"os": self.os, "arch": self.arch, "glibc": self.glibc, "python": self.python}

    def with_python(self, python: str) -> TargetPlatform:
        """Same machine, another Python minor (the node's own Python then no longer fits)."""
        node_python = self.node_python if python == self.python else ""
        return TargetPlatform(self.os, self.arch, self.glibc, python, node_python)


def host_platform(python: str | None = None) -> TargetPlatform:
    """This machine (used only when the user says the compute nodes match it)."""
    libc, version = _host_platform.libc_ver()
    glibc = version if libc == "glibc" and version else "2.17"
    return TargetPlatform(
        os="linux" if sys.platform.startswith("linux") else sys.platform,
        arch=_host_platform.machine(),
        glibc=".".join(glibc.split(".")[:2]),
        python=python or f"{sys.version_info.major}.{sys.version_info.minor}",
        node_python=sys.executable,
    )


def probe_command(partition: str | None = None, options: Sequence[str] = ()) -> str:
    """The srun command that prints the compute node's platform (pure; printable).

    ``options``: further srun options the site requires (--account, --qos, --constraint ...).
    """
    parts = [
        "srun",
        "--job-name=dagster-hpc-probe",
        "--nodes=1",
        "--ntasks=1",
        f"--time={PROBE_TIME_LIMIT_MIN}",
        "--quiet",
    ]
    if partition:
        parts.append(f"--partition={partition}")
    parts += list(options)
    parts += ["sh", "-c", _PROBE_SCRIPT]
    return " ".join(shlex.quote(p) for p in parts)


def parse_probe_output(text: str, python: str | None = None) -> TargetPlatform:
    """Turn the probe's ``KEY=value`` lines into a TargetPlatform.

    ``python`` overrides the Python minor version (the node's own Python is only a default).
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(_MARK + "_") and "=" in line:
            k, v = line[len(_MARK) + 1 :].split("=", 1)
            found[k.strip()] = v.strip()
    if "arch" not in found or "os" not in found:
        raise TransportError(
            "the compute-node probe printed no platform lines; output was:\n"
            + text[-1000:]
            + "\nhint: set the target platform explicitly (TargetPlatform(arch=..., glibc=...))"
        )
    node_python = found.get("python", "")
    py = python or node_python or f"{sys.version_info.major}.{sys.version_info.minor}"
    glibc = found.get("glibc") or "2.17"
    return TargetPlatform(
        os=found["os"].lower(),
        arch=found["arch"],
        glibc=".".join(glibc.split(".")[:2]),
        python=py,
        node_python=found.get("python_path", "") if node_python == py else "",
    )


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "dagster-hpc"


def _cache_file(
    cache_dir: Path, cluster: str, partition: str | None, options: Sequence[str] = ()
) -> Path:
    # a constraint can select other nodes (another architecture): part of the cache entry
    constraint = "".join(o for o in options if o.startswith("--constraint="))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cluster}__{partition or 'default'}{constraint}")
    return cache_dir / "platforms" / f"{slug}.json"


def compute_node_platform(
    transport: Transport,
    cluster: str,
    *,
    partition: str | None = None,
    python: str | None = None,
    cache_dir: Path | None = None,
    refresh: bool = False,
    options: Sequence[str] = (),
) -> TargetPlatform:
    """The compute nodes' platform: from the local cache, else probed once with ``srun``.

    ``cluster`` names the cache entry (e.g. ``user@host:port``).
    """
    path = _cache_file(cache_dir or default_cache_dir(), cluster, partition, options)
    if path.exists() and not refresh:
        try:
            data = json.loads(path.read_text())
            cached = TargetPlatform(**data)
        except (ValueError, TypeError, ConfigError):
            cached = None  # unreadable cache: probe again and overwrite it
        if cached is not None:
            return cached.with_python(python) if python and python != cached.python else cached
    command = probe_command(partition, options)
    result = transport.run(
        f"timeout {int(PROBE_TIMEOUT_S)} {command}", timeout=PROBE_TIMEOUT_S + 10
    )
    if not result.ok:
        raise TransportError(
            f"probing the compute nodes failed (exit {result.exit_code}): {command}\n"
            f"{result.stderr.strip()[-800:]}\n"
            "hint: check the partition name and that srun works on the login node, or set "
            "the target platform explicitly"
        )
    found = parse_probe_output(result.stdout)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")  # concurrent probers
    tmp.write_text(json.dumps(asdict(found)))
    tmp.replace(path)
    return found.with_python(python) if python and python != found.python else found
