"""`dagster-hpc doctor/login` connection settings: environment first, flags on top, secrets env-only."""

from __future__ import annotations

import pytest

from dagster_hpc.cli import build_parser
from dagster_hpc.cli._connection import resource_from_args
from dagster_hpc.errors import ConfigError


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("DAGSTER_HPC_SSH_HOST", "from-env")
    monkeypatch.setenv("DAGSTER_HPC_SSH_USER", "envuser")
    monkeypatch.setenv("DAGSTER_HPC_SSH_PASSWORD", "pw")
    args = build_parser().parse_args(
        ["doctor", "flaghost", "-p", "2200", "-J", "a@j1:22,j2", "--accept-new-host-key"]
    )
    r = resource_from_args(args)
    t = r.to_target()
    assert (t.host, t.port, t.user, t.password, t.host_key_policy) == (
        "flaghost",
        2200,
        "envuser",
        "pw",
        "accept-new",
    )
    assert [str(h) for h in t.jump_hosts] == ["a@j1:22", "j2"]


def test_no_host_anywhere_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DAGSTER_HPC_SSH_HOST", raising=False)
    args = build_parser().parse_args(["login"])
    with pytest.raises(ConfigError, match="pass HOST or export DAGSTER_HPC_SSH_HOST"):
        resource_from_args(args, transport="openssh")


def test_there_is_no_flag_for_secrets():
    for sub in ("doctor", "login"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([sub, "h", "--password", "x"])
