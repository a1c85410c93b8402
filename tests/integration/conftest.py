"""Fixtures for integration tests against the real local Slurm + sshd cluster (cluster/up.sh).

The cluster lives in a fixed directory outside the checkout (same daemons for sessions and CI);
override with DAGSTER_HPC_TEST_CLUSTER. Tests FAIL (not skip) when it is not up: CI brings it up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_CONFDIR = "/var/tmp/dagster-hpc-cluster"


@dataclass(frozen=True)
class TestCluster:
    confdir: Path
    host: str
    port: int  # login node: key or password
    jump_port: int  # jump host
    otp_port: int  # key + TOTP (keyboard-interactive)
    user: str
    password: str
    totp_secret: str
    key_path: Path
    known_hosts: Path
    ssh_config: Path
    slurm_conf: Path

    def sshd_log(self, which: str = "main") -> Path:
        """sshd log for 'main', 'jump' or 'otp' (count 'Accepted' lines for auth counts)."""
        return self.confdir / "log" / f"sshd-{which}.log"


def _read_env(confdir: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (confdir / "env.sh").read_text().splitlines():
        line = line.removeprefix("export ").strip()
        for part in line.split():
            if "=" in part:
                k, v = part.split("=", 1)
                env[k] = v
    return env


@pytest.fixture(scope="session")
def cluster() -> TestCluster:
    confdir = Path(os.environ.get("DAGSTER_HPC_TEST_CLUSTER", DEFAULT_CONFDIR))
    if not (confdir / "env.sh").exists():
        pytest.fail(f"test cluster not found at {confdir}: run `bash cluster/up.sh` (the README's test command does)")
    env = _read_env(confdir)
    return TestCluster(
        confdir=confdir,
        host="127.0.0.1",
        port=int(env["SLURM_TEST_SSH_PORT"]),
        jump_port=int(env["SLURM_TEST_SSH_JUMP_PORT"]),
        otp_port=int(env["SLURM_TEST_SSH_OTP_PORT"]),
        user=env["SLURM_TEST_USER"],
        password=env["SLURM_TEST_PASS"],
        totp_secret=env["SLURM_TEST_TOTP_SECRET"],
        key_path=Path(env["SLURM_TEST_SSH_KEY"]),
        known_hosts=confdir / "client" / "known_hosts",
        ssh_config=Path(env["SLURM_TEST_SSH_CONFIG"]),
        slurm_conf=Path(env["SLURM_CONF"]),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
