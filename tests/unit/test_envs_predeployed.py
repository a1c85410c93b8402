"""Pre-deployed environments are verified in one round trip with clear errors (transport double
running the remote shell locally; real interpreters)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dagster_hpc.envs.manifest import tree_digest_shell
from dagster_hpc.envs.predeployed import PredeployedEnv, verify_command, verify_predeployed
from dagster_hpc.errors import ConfigError
from tests.unit.envs_fakes import LocalShellTransport

NO_PIPES_PYTHON = "/usr/bin/python3"  # Debian's Python: no dagster_pipes installed


def _wrapper(directory: Path, rel: str, target: str) -> Path:
    exe = directory / rel
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
    exe.chmod(0o755)
    return exe


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr("dagster_hpc.envs.predeployed._verified", {})


def test_good_env_is_found_in_one_round_trip(tmp_path):
    _wrapper(tmp_path, "venv/bin/python", sys.executable)
    (tmp_path / "activate.sh").write_text("true\n")
    t = LocalShellTransport()
    ref = verify_predeployed(t, PredeployedEnv(str(tmp_path)))
    assert ref.python == f"{tmp_path}/venv/bin/python" and ref.activate == f"{tmp_path}/activate.sh"
    assert t.roundtrips == 1
    verify_predeployed(t, PredeployedEnv(str(tmp_path)))
    assert t.roundtrips == 1  # verified once per process


@pytest.mark.skipif(
    not os.access(NO_PIPES_PYTHON, os.X_OK), reason="needs a Python without dagster_pipes"
)
def test_missing_dagster_pipes_is_a_config_error(tmp_path):
    _wrapper(tmp_path, "bin/python", NO_PIPES_PYTHON)
    with pytest.raises(
        ConfigError,
        match="(?s)cannot import dagster_pipes.*nothing was submitted.*No module named 'dagster_pipes'.*pip install",
    ):
        verify_predeployed(LocalShellTransport(), PredeployedEnv(str(tmp_path)))


def test_missing_path_and_missing_python(tmp_path):
    with pytest.raises(ConfigError, match="does not exist on the cluster"):
        verify_predeployed(LocalShellTransport(), PredeployedEnv(str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="has no executable Python.*bin/python"):
        verify_predeployed(LocalShellTransport(), PredeployedEnv(str(tmp_path)))
    with pytest.raises(ConfigError, match="looked for opt/py"):
        verify_predeployed(LocalShellTransport(), PredeployedEnv(str(tmp_path), python="opt/py"))


def test_explicit_interpreter_path(tmp_path):
    _wrapper(tmp_path, "weird/place/py", sys.executable)
    ref = verify_predeployed(
        LocalShellTransport(), PredeployedEnv(str(tmp_path), python="weird/place/py")
    )
    assert ref.python.endswith("weird/place/py")


def test_manifest_digest_mismatch_is_reported(tmp_path):
    import subprocess

    _wrapper(tmp_path, "bin/python", sys.executable)
    (tmp_path / "data.txt").write_text("v1")
    digest = subprocess.run(
        ["bash", "-c", f"p={tmp_path}; {tree_digest_shell('p')}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / ".tree.sha256").write_text(digest)
    (tmp_path / "manifest.json").write_text("{}")
    verify_predeployed(LocalShellTransport(), PredeployedEnv(str(tmp_path)))
    (tmp_path / "data.txt").unlink()
    with pytest.raises(ConfigError, match="tree checksum mismatch"):
        verify_predeployed(
            LocalShellTransport(), PredeployedEnv(str(tmp_path), python="bin/python")
        )


def test_bad_paths_rejected_before_any_command():
    with pytest.raises(ConfigError, match="must be absolute"):
        PredeployedEnv("envs/payload")
    with pytest.raises(ConfigError, match="newline"):
        PredeployedEnv("/a\nb")
    assert "'/with space/x'" in verify_command(PredeployedEnv("/with space/x"))


def test_an_interpreter_the_login_node_cannot_execute_is_reported_as_such(tmp_path):
    import subprocess

    exe = tmp_path / "bin" / "python"
    exe.parent.mkdir()
    exe.write_bytes(
        b"\x7fELF" + b"\x02\x01\x01" + b"\x00" * 9 + b"\xff" * 48
    )  # an ELF for no CPU here
    exe.chmod(0o755)
    out = subprocess.run(
        ["bash", "-c", verify_command(PredeployedEnv(str(tmp_path)))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "STATUS=cannot-execute" in out


class _Canned:
    """Answers the login-node check, then the compute-node (srun) one."""

    def __init__(self, *answers: str):
        self.answers, self.commands = list(answers), []

    def run(self, command, *, timeout=None, stdin=None):
        from dagster_hpc.transport.base import CommandResult

        self.commands.append(command)
        return CommandResult(0, self.answers.pop(0), "")


def test_foreign_architecture_is_verified_on_a_compute_node_instead():
    t = _Canned(
        "PYTHON=/e/bin/python\nSTATUS=cannot-execute\nERR=Exec format error\n",
        "PYTHON=/e/bin/python\nVERSION=3.11.9\nSTATUS=ok\n",
    )
    ref = verify_predeployed(
        t, PredeployedEnv("/e"), partition="arm", slurm_options=("--account=p",)
    )
    assert ref.python == "/e/bin/python"
    assert (
        t.commands[1].startswith("srun ")
        and "--partition=arm" in t.commands[1]
        and "--account=p" in t.commands[1]
    )
    bad = _Canned(
        "PYTHON=/e/bin/python\nSTATUS=cannot-execute\nERR=Exec format error\n",
        "PYTHON=/e/bin/python\nSTATUS=cannot-execute\nERR=Exec format error\n",
    )
    with pytest.raises(
        ConfigError, match="cannot be executed on the login node nor on a compute node"
    ):
        verify_predeployed(bad, PredeployedEnv("/e2"))
