"""The one error hierarchy: classes exported, fields callers act on, the one local-tool runner."""

from __future__ import annotations

import sys

import pytest

import dagster_hpc
from dagster_hpc import errors
from dagster_hpc.localtool import run_tool


def test_every_error_class_lives_in_errors_and_is_exported() -> None:
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert {c.__name__ for c in classes} >= {
        "EnvBuildError",
        "SubmissionError",
        "CancelNotConfirmedError",
        "SSHMasterExpiredError",
    }
    for cls in classes:
        assert issubclass(cls, errors.DagsterHpcError)
        assert getattr(dagster_hpc, cls.__name__) is cls
        assert cls.__name__ in dagster_hpc.__all__


def test_the_old_ssh_master_name_is_the_same_class() -> None:
    from dagster_hpc.transport.openssh import SSHMasterExpired

    assert SSHMasterExpired is errors.SSHMasterExpiredError
    assert issubclass(SSHMasterExpired, errors.TransportError)


def test_neither_a_refused_submission_nor_an_unconfirmed_cancel_is_the_payloads_fault() -> None:
    for cls in (errors.SubmissionError, errors.CancelNotConfirmedError, errors.EnvBuildError):
        assert not issubclass(cls, errors.PayloadError)


def test_payload_error_carries_exit_code_job_id_and_run_dir() -> None:
    err = errors.PayloadError("failed", exit_code=3, job_id="42", run_dir="/r/1/s")
    assert (err.exit_code, err.job_id, err.run_dir, str(err)) == (3, "42", "/r/1/s", "failed")
    slurm = errors.SlurmJobError("x", state="TIMEOUT", job_id="7", exit_code=None, run_dir="/r")
    assert isinstance(slurm, errors.PayloadError)
    assert (slurm.state, slurm.job_id, slurm.exit_code, slurm.run_dir) == (
        "TIMEOUT",
        "7",
        None,
        "/r",
    )


def test_run_tool_raises_with_command_exit_code_stderr_tail_and_hint() -> None:
    script = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(40)]; sys.exit(4)"
    with pytest.raises(errors.EnvBuildError) as info:
        run_tool([sys.executable, "-c", script], timeout=30, hint="do the thing by hand")
    err = info.value
    assert err.exit_code == 4 and err.command.startswith(sys.executable)
    assert "line 39" in str(err) and "line 19" not in str(err)  # the tail, not the whole text
    assert "line 0" in err.stderr  # the whole text stays on the error
    assert str(err).endswith("hint: do the thing by hand")


def test_run_tool_returns_stdout_and_names_a_missing_tool() -> None:
    assert run_tool([sys.executable, "-c", "print('ok')"], timeout=30) == "ok\n"
    with pytest.raises(errors.ConfigError, match="no-such-tool-xyz is not installed"):
        run_tool(["no-such-tool-xyz"], timeout=30, hint="install it")


def test_run_tool_timeout_is_an_env_build_error_naming_the_command() -> None:
    with pytest.raises(errors.EnvBuildError, match="timed out after 0 s: .*sleep"):
        run_tool(["sleep", "5"], timeout=0.2)
