"""OpenSSHTransport + `dagster-hpc login` on the real key+TOTP sshd: one login for a whole
multi-process deployment, and a clear error once the master has expired."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PROCESSES = 8
COMMANDS_PER_PROCESS = 3
# ControlPersist for the expiry test: short, so the master really times out during the test.
SHORT_PERSIST_S = 10  # well above a worker's start-up on a loaded machine (2 shared cores)
EXPIRY_WAIT_S = 40.0

# Workers build the transport the way SSHConnectionResource.get_transport does, without importing
# Dagster (8 Dagster imports on 2 shared cores would dominate the test's time).
WORKER = f"""
import json, os
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.openssh import OpenSSHTransport
e = os.environ
target = SSHTarget(e["DHT_HOST"], port=int(e["DHT_PORT"]), user=e["DHT_USER"], key_paths=(e["DHT_KEY_PATH"],),
                   known_hosts=e["DHT_KNOWN_HOSTS"], use_agent=False)
t = OpenSSHTransport(target, control_dir=e["DHT_CONTROL_DIR"], require_login=e["DHT_REQUIRE_LOGIN"] == "1")
outs = [t.run("echo $SSH_CONNECTION").stdout.split()[1] for _ in range({COMMANDS_PER_PROCESS})]
print(json.dumps({{"pid": os.getpid(), "ports": outs, "roundtrips": t.roundtrips, "logins": t.authentications}}))
"""


@pytest.fixture
def control_dir():
    # socket paths are limited to ~104 bytes: keep it short, not under pytest's long tmp_path
    d = tempfile.mkdtemp(prefix="dhcm-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(cluster, key: Path, control_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DHT_", "DAGSTER_HPC_SSH_"))}
    env.update(
        DHT_HOST=cluster.host, DHT_PORT=str(cluster.otp_port), DHT_USER=cluster.user, DHT_KEY_PATH=str(key),
        DHT_KNOWN_HOSTS=str(cluster.known_hosts), DHT_TRANSPORT="openssh", DHT_CONTROL_DIR=control_dir,
        DHT_REQUIRE_LOGIN="1", DHT_USE_AGENT="0",
    )  # fmt: skip
    env.update(extra)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "dagster-hpc"), *args], env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _otp_logins(cluster, key) -> int:
    """Completed key+TOTP logins of this test's key on the OTP server."""
    ports = key.ports(cluster.sshd_log("otp"))
    log = cluster.sshd_log("otp").read_text().splitlines()
    return sum(
        1
        for ln in log
        if "Accepted keyboard-interactive/pam" in ln and ln.split(" port ")[1].split()[0] in ports
    )


def test_eight_processes_after_one_login_cost_one_authentication(
    cluster, dedicated_key, control_dir
):
    env = _env(cluster, dedicated_key.path, control_dir)
    # the workers have no TOTP secret: they cannot log in by themselves, only reuse the master
    login = _cli(["login", "--env-prefix", "DHT"], dict(env, DHT_TOTP_SECRET=cluster.totp_secret))
    assert login.returncode == 0, login.stderr
    assert "master opened" in login.stdout
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert len({r["pid"] for r in results}) == PROCESSES
    # every command of every process arrived over the same TCP connection (same client port)
    assert len({port for r in results for port in r["ports"]}) == 1
    assert all(r["roundtrips"] == COMMANDS_PER_PROCESS and r["logins"] == 0 for r in results)
    # the server's view: one publickey step and one TOTP answer for this key, in all
    assert dedicated_key.accepted(cluster.sshd_log("otp")) == 1
    assert _otp_logins(cluster, dedicated_key) == 1
    check = _cli(["login", "--env-prefix", "DHT", "--check"], env)
    assert check.returncode == 0 and "master open" in check.stdout
    assert _cli(["login", "--env-prefix", "DHT", "--exit"], env).returncode == 0


def test_expired_master_says_how_to_log_in_again(cluster, dedicated_key, control_dir):
    env = _env(cluster, dedicated_key.path, control_dir)
    login = _cli(
        ["login", "--env-prefix", "DHT", "--persist", str(SHORT_PERSIST_S)],
        dict(env, DHT_TOTP_SECRET=cluster.totp_secret),
    )
    assert login.returncode == 0, login.stderr
    worker = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode == 0, worker.stderr

    # let the master expire for real (ControlPersist idle timeout): its socket disappears
    def sockets() -> list[Path]:
        return [
            p
            for p in Path(control_dir).iterdir()
            if p.name.startswith("cm-") and not p.name.endswith(".lock")
        ]

    deadline = time.monotonic() + EXPIRY_WAIT_S
    while sockets() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sockets(), "the master did not expire"
    worker = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode != 0
    assert "SSHMasterExpired" in worker.stderr and "expired" in worker.stderr
    assert (
        f"dagster-hpc login {cluster.host} --port {cluster.otp_port} --user {cluster.user}"
        in worker.stderr
    )
    assert _otp_logins(cluster, dedicated_key) == 1  # the expired worker did not log in by itself


def test_openssh_without_require_login_opens_one_master_for_concurrent_processes(
    cluster, dedicated_key, control_dir
):
    """Key-only site: the first processes race to open the master; the file lock makes it one login."""
    env = _env(
        cluster, dedicated_key.path, control_dir, DHT_PORT=str(cluster.port), DHT_REQUIRE_LOGIN="0"
    )
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    logins = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        logins += json.loads(out)["logins"]
    assert logins == 1  # exactly one process opened the master, the others waited on the lock
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1
    _cli(["login", "--env-prefix", "DHT", "--exit"], env)


def test_interactive_login_on_a_terminal(cluster, dedicated_key, control_dir):
    """What a person does: `dagster-hpc login`, ssh asks for the code on the terminal, they type it."""
    import pty
    import select

    from dagster_hpc.transport.totp import totp_code

    env = _env(
        cluster, dedicated_key.path, control_dir
    )  # no TOTP secret: only the person knows the code
    pid, fd = pty.fork()
    if pid == 0:  # child: the terminal session
        os.execve(
            str(Path(sys.executable).parent / "dagster-hpc"),
            ["dagster-hpc", "login", "--env-prefix", "DHT"],
            env,
        )
    screen = b""
    typed = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal: it has exited
            break
        if not chunk:
            break
        screen += chunk
        if not typed and b"Verification code:" in screen:
            os.write(fd, totp_code(cluster.totp_secret).encode() + b"\n")
            typed = True
    _, status = os.waitpid(pid, 0)
    text = screen.decode(errors="replace")
    assert typed, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "master opened" in text
    # and a non-interactive process now works through it
    worker = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode == 0, worker.stderr
    assert _otp_logins(cluster, dedicated_key) == 1
    _cli(["login", "--env-prefix", "DHT", "--exit"], env)


def test_dead_master_with_stale_socket_never_falls_back_to_a_login(
    cluster, dedicated_key, control_dir
):
    import re
    import signal

    env = _env(cluster, dedicated_key.path, control_dir, DHT_PORT=str(cluster.port))
    login = _cli(["login", "--env-prefix", "DHT"], env)
    assert login.returncode == 0, login.stderr
    check = _cli(["login", "--env-prefix", "DHT", "--check"], env)
    sockets = [
        p
        for p in Path(control_dir).iterdir()
        if p.name.startswith("cm-") and not p.name.endswith(".lock")
    ]
    assert len(sockets) == 1
    ssh_check = subprocess.run(
        ["ssh", "-o", f"ControlPath={sockets[0]}", "-O", "check", "x"],
        capture_output=True,
        text=True,
    )
    master_pid = int(re.search(r"pid=(\d+)", ssh_check.stderr + ssh_check.stdout).group(1))
    assert check.returncode == 0
    os.kill(master_pid, signal.SIGKILL)  # the master we opened dies hard: its socket file stays
    time.sleep(0.5)
    assert sockets[0].exists()
    # the key would let a fallback ssh log in directly; require_login must prevent exactly that
    worker = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120
    )
    assert worker.returncode != 0 and "SSHMasterExpired" in worker.stderr
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1
    assert not sockets[0].exists()  # the stale socket was cleared for the next login


def test_openssh_through_a_jump_host(cluster, dedicated_key, control_dir):
    from dagster_hpc.transport.auth import JumpHost, SSHTarget
    from dagster_hpc.transport.openssh import OpenSSHTransport

    target = SSHTarget(cluster.host, port=cluster.port, user=cluster.user, key_paths=(str(dedicated_key.path),),
                       known_hosts=str(cluster.known_hosts), use_agent=False,
                       jump_hosts=(JumpHost(cluster.host, cluster.jump_port, cluster.user),))  # fmt: skip
    t = OpenSSHTransport(target, control_dir=control_dir)
    try:
        outs = {t.run("echo $SSH_CONNECTION").stdout.split()[3] for _ in range(3)}
    finally:
        t.close_master()
    assert outs == {str(cluster.port)}
    assert dedicated_key.accepted(cluster.sshd_log("jump")) == 1
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1


def test_openssh_unknown_host_key_is_refused_with_how_to_trust_it(cluster, control_dir, tmp_path):
    from dagster_hpc.errors import HostKeyError
    from dagster_hpc.transport.auth import SSHTarget
    from dagster_hpc.transport.openssh import OpenSSHTransport

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = OpenSSHTransport(SSHTarget(cluster.host, port=cluster.port, user=cluster.user, key_paths=(str(cluster.key_path),),
                                   known_hosts=str(empty), use_agent=False), control_dir=control_dir)  # fmt: skip
    with pytest.raises(HostKeyError) as info:
        t.run("true")
    assert "unknown" in str(info.value) and "ssh-keyscan" in str(info.value)


def test_openssh_password_answered_by_askpass(cluster, control_dir):
    from dagster_hpc.transport.auth import SSHTarget
    from dagster_hpc.transport.openssh import OpenSSHTransport

    t = OpenSSHTransport(SSHTarget(cluster.host, port=cluster.port, user=cluster.user, password=cluster.password,
                                   known_hosts=str(cluster.known_hosts), use_agent=False), control_dir=control_dir)  # fmt: skip
    try:
        conn = t.run("echo $SSH_CONNECTION").stdout.split()
        assert (
            t.authentications == 1
            and t.run("echo again").stdout == "again\n"
            and t.authentications == 1
        )
    finally:
        t.close_master()
    log = cluster.sshd_log("main").read_text()
    assert f"Accepted password for {cluster.user} from 127.0.0.1 port {conn[1]} " in log
    # the secret never landed in a file of the control dir
    for p in Path(control_dir).iterdir():
        if p.is_file():
            assert cluster.password not in p.read_text(errors="replace")


def test_refused_login_is_not_repeated_by_the_other_processes(cluster, control_dir, tmp_path):
    from dagster_hpc.errors import AuthenticationError
    from dagster_hpc.transport.auth import SSHTarget
    from dagster_hpc.transport.openssh import OpenSSHTransport

    key = tmp_path / "id_unknown"  # a key the server has never seen
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fp = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    target = SSHTarget(cluster.host, port=cluster.port, user=cluster.user, key_paths=(str(key),),
                       known_hosts=str(cluster.known_hosts), use_agent=False)  # fmt: skip
    with pytest.raises(AuthenticationError, match="refused our credentials"):
        OpenSSHTransport(target, control_dir=control_dir).run("true")
    attempts = sum(fp in ln for ln in cluster.sshd_log("main").read_text().splitlines())
    assert attempts >= 1
    # a second "process" (a new transport) does not try again: same error, nothing on the server
    with pytest.raises(AuthenticationError, match="not trying to log in"):
        OpenSSHTransport(target, control_dir=control_dir).run("true")
    assert sum(fp in ln for ln in cluster.sshd_log("main").read_text().splitlines()) == attempts
