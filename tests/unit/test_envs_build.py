"""Bundle planning and requirements handling: validated before anything is built."""

from __future__ import annotations

import platform as host
from pathlib import Path

import pytest

from dagster_hpc.envs.build import EnvSpec, plan
from dagster_hpc.envs.manifest import activate_script
from dagster_hpc.envs.platform import TargetPlatform
from dagster_hpc.envs.wheelhouse import read_requirements, requirement_name, with_extras
from dagster_hpc.errors import ConfigError

EXAMPLE_LOCK = Path(__file__).resolve().parents[2] / "examples" / "payload-env" / "uv.lock"
HOST = TargetPlatform(
    arch=host.machine(),
    glibc=".".join(host.libc_ver()[1].split(".")[:2]) or "2.36",
    python="3.11",
    node_python="/usr/bin/python3",
)


def test_example_lock_exports_pinned_requirements():
    reqs = read_requirements(EXAMPLE_LOCK)
    names = {requirement_name(r) for r in reqs}
    assert {"polars", "dagster-pipes"} <= names
    assert all("==" in r for r in reqs)


def test_extras_added_only_when_the_lock_lacks_them():
    reqs = ["Dagster_Pipes==1.13.27", "polars==2.1.0"]
    assert with_extras(reqs, ["dagster-pipes==1.13.99", "rich==13"]) == [*reqs, "rich==13"]


def test_requirements_file_and_editable_refused(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\n--index-url https://example.invalid\npolars==2.1.0  # why\n")
    assert read_requirements(req) == ["polars==2.1.0"]
    req.write_text("-e ./mypkg\n")
    with pytest.raises(ConfigError, match="cannot be shipped"):
        read_requirements(req)


def test_plan_rejects_bad_specs(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        plan(EnvSpec(tmp_path / "missing.lock"), HOST)
    with pytest.raises(ConfigError, match="unknown env kind"):
        plan(EnvSpec(EXAMPLE_LOCK, kind="conda"), HOST)
    no_python = TargetPlatform(arch=HOST.arch, glibc=HOST.glibc, python="3.11")
    with pytest.raises(ConfigError, match="compute nodes have no Python 3.11.*self-contained"):
        plan(EnvSpec(EXAMPLE_LOCK, kind="wheelhouse"), no_python)
    other_arch = "aarch64" if HOST.arch != "aarch64" else "x86_64"
    with pytest.raises(ConfigError, match=f"compute nodes are {other_arch}.*wheelhouse"):
        plan(EnvSpec(EXAMPLE_LOCK), TargetPlatform(arch=other_arch, glibc="2.36"))
    with pytest.raises(ConfigError, match="newer than the compute nodes' 2.5"):
        plan(EnvSpec(EXAMPLE_LOCK), TargetPlatform(arch=HOST.arch, glibc="2.5"))


def test_plan_is_cheap_and_keys_differ_by_kind():
    sc = plan(EnvSpec(EXAMPLE_LOCK), HOST)
    wh = plan(EnvSpec(EXAMPLE_LOCK, kind="wheelhouse"), HOST)
    assert sc.key != wh.key
    assert sc.python_relpath == "bin/python" and sc.python.count(".") == 2
    assert wh.python_relpath == "venv/bin/python" and "--offline" in wh.install_shell
    assert "/usr/bin/python3" in wh.install_shell


def test_activate_script_puts_the_env_first_on_path():
    sc = activate_script("bin/python")
    assert 'PATH="$_dhpc_env/bin:$PATH"' in sc and "VIRTUAL_ENV" not in sc
    wh = activate_script("venv/bin/python")
    assert 'VIRTUAL_ENV="$_dhpc_env/venv"' in wh
