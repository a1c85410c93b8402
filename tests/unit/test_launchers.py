from __future__ import annotations

import stat

import pytest

from dagster_hpc.errors import ConfigError
from dagster_hpc.launchers import (
    BashLauncher,
    ExecLauncher,
    LaunchRequest,
    PythonLauncher,
    default_launcher_for,
)
from tests.unit.golden import assert_golden

AWKWARD_ARGS = ("plain", "two words", "it's $HOME; rm -rf /", "--flag=`id`")


def test_python_launcher_golden() -> None:
    req = LaunchRequest(payload="train model.py", args=AWKWARD_ARGS, python="/opt/env/bin/python")
    assert_golden("launch_python.sh", PythonLauncher().render(req))


def test_python_launcher_explicit_interpreter_wins() -> None:
    req = LaunchRequest(payload="p.py", python="/default/python")
    text = PythonLauncher(python="/site/python3.12").render(req)
    assert "exec /site/python3.12 -u ./p.py" in text
    assert "/default/python" not in text


def test_bash_launcher_golden() -> None:
    assert_golden(
        "launch_bash.sh", BashLauncher().render(LaunchRequest(payload="step.sh", args=AWKWARD_ARGS))
    )


def test_exec_launcher_argv_golden() -> None:
    req = LaunchRequest(argv=("echo", "hello world"), args=("$(whoami)",))
    assert_golden("launch_exec_argv.sh", ExecLauncher().render(req))


def test_exec_launcher_file_golden() -> None:
    assert_golden(
        "launch_exec_file.sh",
        ExecLauncher().render(LaunchRequest(payload="-odd-name", args=("a",))),
    )


def test_request_needs_exactly_one_of_payload_or_argv() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        LaunchRequest()
    with pytest.raises(ConfigError, match="exactly one"):
        LaunchRequest(payload="x.py", argv=("echo",))


def test_file_launchers_reject_argv() -> None:
    with pytest.raises(ConfigError, match="ExecLauncher"):
        PythonLauncher().render(LaunchRequest(argv=("echo",)))
    with pytest.raises(ConfigError, match="ExecLauncher"):
        BashLauncher().render(LaunchRequest(argv=("echo",)))


def test_exec_launcher_rejects_non_executable_file(tmp_path) -> None:
    script = tmp_path / "run-me"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ConfigError, match="not executable.*chmod \\+x"):
        ExecLauncher().check_payload(script)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    ExecLauncher().check_payload(script)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("a.py", PythonLauncher),
        ("b.sh", BashLauncher),
        ("c.BASH", BashLauncher),
        ("tool", ExecLauncher),
        (None, ExecLauncher),
    ],
)
def test_default_launcher_by_suffix(payload, kind) -> None:
    assert isinstance(default_launcher_for(payload), kind)
