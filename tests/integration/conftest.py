"""Fixtures for integration tests against the real local Slurm + sshd cluster (cluster/up.sh).

The cluster lives in a fixed directory outside the checkout (same daemons for sessions and CI);
override with DAGSTER_HPC_TEST_CLUSTER. Tests FAIL (not skip) when it is not up: CI brings it up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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


def cluster_at(confdir: Path) -> TestCluster:
    """The TestCluster that cluster/up.sh brought up under ``confdir`` (read from its env.sh)."""
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


@pytest.fixture(scope="session")
def cluster() -> TestCluster:
    confdir = Path(os.environ.get("DAGSTER_HPC_TEST_CLUSTER", DEFAULT_CONFDIR))
    if not (confdir / "env.sh").exists():
        pytest.fail(
            f"test cluster not found at {confdir}: run `bash cluster/up.sh` (the README's test command does)"
        )
    return cluster_at(confdir)


@pytest.fixture(autouse=True, scope="session")
def _private_connection_holders(tmp_path_factory):
    """Holders started by this test session live in a directory of its own and are stopped at
    the end (other sessions on the machine use the same sshd with the same default key)."""
    from dagster_hpc.transport import _holder_wire
    from dagster_hpc.transport.holder_client import shutdown_all

    directory = Path(tempfile.mkdtemp(prefix="dhh-"))  # short: socket paths are limited
    directory.chmod(0o700)
    old = os.environ.get(_holder_wire.DIR_ENV)
    os.environ[_holder_wire.DIR_ENV] = str(directory)
    try:
        yield directory
    finally:
        shutdown_all(directory)
        shutil.rmtree(directory, ignore_errors=True)
        if old is None:
            os.environ.pop(_holder_wire.DIR_ENV, None)
        else:
            os.environ[_holder_wire.DIR_ENV] = old


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


# --- SSH helpers (transport tests): count logins of OUR connections only -----------------------
# Other engineers and CI log in to the same sshd concurrently, so tests never count all
# "Accepted" lines: each test logs in with a key of its own and counts lines with its fingerprint.

# serialises edits of authorized_keys by concurrent test processes (read-modify-replace would
# otherwise drop a key another test appended in between)
AUTHORIZED_KEYS_LOCK = Path("/tmp/dagster-hpc-authorized-keys.lock")


@contextlib.contextmanager
def _keys_locked():
    import fcntl

    with AUTHORIZED_KEYS_LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _authorized_keys(user: str) -> Path:
    import pwd

    return Path(pwd.getpwnam(user).pw_dir) / ".ssh" / "authorized_keys"


@dataclass(frozen=True)
class DedicatedKey:
    path: Path
    fingerprint: str  # "SHA256:..." as sshd logs it

    def accepted(self, log: Path) -> int:
        """'Accepted publickey' lines for this key (on the OTP server: 'Partial publickey')."""
        return sum(
            1
            for line in log.read_text(errors="replace").splitlines()
            if self.fingerprint in line
            and ("Accepted publickey" in line or "Partial publickey" in line)
        )

    def ports(self, log: Path) -> set[str]:
        """Source ports of every connection that offered this key (successful or partial)."""
        out = set()
        for line in log.read_text(errors="replace").splitlines():
            if self.fingerprint in line and " port " in line:
                out.add(line.split(" port ", 1)[1].split()[0])
        return out


@pytest.fixture
def dedicated_key(cluster: TestCluster, tmp_path: Path):
    """A fresh ed25519 key authorized for the test user for the duration of one test."""
    import subprocess

    key = tmp_path / "id_test"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"dagster-hpc-test-{os.getpid()}",
            "-f",
            str(key),
        ],
        check=True,
    )
    pub = (tmp_path / "id_test.pub").read_text().strip()
    authorized = _authorized_keys(cluster.user)
    fp = subprocess.run(
        ["ssh-keygen", "-lf", str(key) + ".pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    with _keys_locked(), authorized.open("a") as fh:
        fh.write(pub + "\n")
    try:
        yield DedicatedKey(key, fp)
    finally:
        # atomic replace: sshd reads this file at every login of everyone; never show it truncated
        with _keys_locked():
            _remove_key(authorized, pub)


def _remove_key(authorized: Path, pub: str) -> None:
    st = authorized.stat()
    lines = authorized.read_text().splitlines()
    tmp = authorized.with_name(f".authorized_keys.{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in lines if line.strip() != pub))
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, 0o600)
    os.replace(tmp, authorized)


# --- a private cluster for the fault tests (tests/integration/fault_cluster.py) ----------------
@pytest.fixture(scope="session")
def fault_cluster(cluster):
    """A second cluster instance of this session's own: the fault tests disrupt its daemons,
    never the shared cluster's. Started on first use (~25 s), stopped by pid file at the end."""
    from tests.integration import fault_cluster as fc

    instance = fc.start(cluster)
    try:
        yield instance
    finally:
        fc.stop(instance)
