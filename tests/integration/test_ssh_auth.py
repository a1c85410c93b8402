"""SSHTransport against the real test sshd: every auth path, and wrong credentials failing fast."""

from __future__ import annotations

import time

import pytest

from dagster_hpc.errors import AuthenticationError
from dagster_hpc.transport.auth import JumpHost, SSHTarget
from dagster_hpc.transport.ssh import SSHTransport
from dagster_hpc.transport.totp import totp_code

# A refused login must come back well within this (no retry loop, no backoff on auth errors).
FAIL_FAST_S = 5.0
WRONG_TOTP_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def _target(cluster, **kw) -> SSHTarget:
    base = dict(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        known_hosts=str(cluster.known_hosts),
        use_agent=False,
    )
    base.update(kw)
    return SSHTarget(**base)


def _private(target: SSHTarget) -> SSHTransport:
    return SSHTransport(target, share=False)


def test_key_auth_runs_slurm_commands(cluster):
    t = _private(_target(cluster, key_paths=(str(cluster.key_path),)))
    try:
        r = t.run("id -un && sinfo -h -o %D")
        assert r.ok, r.stderr
        user, nodes = r.stdout.split()
        assert user == cluster.user and int(nodes) >= 1
        assert t.authentications == 1
    finally:
        t.close()


def test_password_auth(cluster):
    t = _private(_target(cluster, password=cluster.password))
    try:
        assert t.run("echo pw-ok").stdout == "pw-ok\n"
    finally:
        t.close()
    line = f"Accepted password for {cluster.user} from 127.0.0.1 port {t.local_ports[0]} "
    assert line in cluster.sshd_log("main").read_text()


def test_jump_host_chain(cluster, dedicated_key):
    jump = JumpHost(cluster.host, cluster.jump_port, cluster.user)
    t = _private(_target(cluster, key_paths=(str(dedicated_key.path),), jump_hosts=(jump,)))
    try:
        r = t.run("echo $SSH_CONNECTION")
        assert r.ok
    finally:
        t.close()
    assert r.stdout.split()[2:] == ["127.0.0.1", str(cluster.port)]
    # both hops really happened, one login each: the jump host and the login node each logged
    # exactly one acceptance of this test's own key
    assert dedicated_key.accepted(cluster.sshd_log("jump")) == 1
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1


def test_key_plus_totp(cluster):
    t = _private(
        _target(
            cluster,
            port=cluster.otp_port,
            key_paths=(str(cluster.key_path),),
            totp_secret=cluster.totp_secret,
        )
    )
    try:
        assert t.run("echo otp-ok").stdout == "otp-ok\n"
    finally:
        t.close()
    port = t.local_ports[0]
    log = cluster.sshd_log("otp").read_text()
    assert (
        f"Accepted keyboard-interactive/pam for {cluster.user} from 127.0.0.1 port {port} " in log
    )


def test_otp_callback_gets_the_prompt(cluster):
    seen: list[str] = []

    def ask(prompt: str) -> str:
        seen.append(prompt)
        return totp_code(cluster.totp_secret)

    t = _private(
        _target(
            cluster, port=cluster.otp_port, key_paths=(str(cluster.key_path),), otp_callback=ask
        )
    )
    try:
        assert t.run("echo cb-ok").stdout == "cb-ok\n"
    finally:
        t.close()
    assert len(seen) == 1 and "Verification code" in seen[0]


def _refused_within(t: SSHTransport) -> tuple[AuthenticationError, float]:
    start = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        t.run("true")
    return info.value, time.monotonic() - start


def test_wrong_password_fails_fast_without_retry_storm(cluster):
    t = _private(_target(cluster, password="definitely-wrong"))
    err, took = _refused_within(t)
    assert took < FAIL_FAST_S
    assert "refused our credentials" in str(err) and "password" in str(err)
    assert "definitely-wrong" not in str(err)  # secrets never in messages
    # exactly one connection attempt, and that one tried the password once
    assert len(t.attempt_ports) == 1
    log = cluster.sshd_log("main").read_text()
    failed = [
        ln
        for ln in log.splitlines()
        if f"port {t.attempt_ports[0]} " in ln and "Failed password" in ln
    ]
    assert len(failed) == 1
    # a second call does not try again at all: same error, no new connection to the server
    err2, took2 = _refused_within(t)
    assert took2 < FAIL_FAST_S and "not trying again" in str(err2)
    assert len(t.attempt_ports) == 1


def test_wrong_totp_fails_fast(cluster):
    t = _private(
        _target(
            cluster,
            port=cluster.otp_port,
            key_paths=(str(cluster.key_path),),
            totp_secret=WRONG_TOTP_SECRET,
        )
    )
    err, took = _refused_within(t)
    assert took < FAIL_FAST_S and "TOTP" in str(err)
    assert len(t.attempt_ports) == 1
    log = cluster.sshd_log("otp").read_text()
    failed = [
        ln
        for ln in log.splitlines()
        if f"port {t.attempt_ports[0]} " in ln and "Failed keyboard-interactive" in ln
    ]
    assert 1 <= len(failed) <= 2  # one answer per round we allow, never a loop


def test_password_is_not_an_otp_answer(cluster):
    """The peer answers OTP prompts with the password; we must refuse instead."""
    t = _private(
        _target(
            cluster,
            port=cluster.otp_port,
            key_paths=(str(cluster.key_path),),
            password=cluster.password,
        )
    )
    err, took = _refused_within(t)
    assert took < FAIL_FAST_S
    log = cluster.sshd_log("otp").read_text()
    # the server never got a keyboard-interactive answer from us (we declined the OTP prompt)
    ours = [ln for ln in log.splitlines() if f"port {t.attempt_ports[0]} " in ln]
    assert not [ln for ln in ours if "Failed keyboard-interactive" in ln]
    assert "refused our credentials" in str(err)


def test_ssh_config_alias_with_proxyjump_is_honoured(cluster):
    """Host, port, user, key, known_hosts and ProxyJump all come from the ssh config file."""
    t = _private(SSHTarget("slurm-via-jump", ssh_config=str(cluster.ssh_config), use_agent=False))
    try:
        r = t.run("echo $SSH_CONNECTION; id -un")
    finally:
        t.close()
    conn, user = r.stdout.splitlines()
    assert conn.split()[2:] == ["127.0.0.1", str(cluster.port)] and user == cluster.user


def test_agent_key(cluster, dedicated_key, tmp_path):
    import os
    import signal
    import subprocess

    sock = tmp_path / "agent.sock"
    agent = subprocess.run(
        ["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True
    ).stdout
    agent_pid = int(agent.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(
            ["ssh-add", "-q", str(dedicated_key.path)], env=env, check=True, capture_output=True
        )
        old = os.environ.get("SSH_AUTH_SOCK")
        os.environ["SSH_AUTH_SOCK"] = str(sock)
        try:
            # no key file given: the only way in is the agent's key
            t = _private(
                SSHTarget(
                    cluster.host,
                    port=cluster.port,
                    user=cluster.user,
                    known_hosts=str(cluster.known_hosts),
                )
            )
            try:
                assert t.run("echo agent-ok").stdout == "agent-ok\n"
            finally:
                t.close()
        finally:
            if old is None:
                os.environ.pop("SSH_AUTH_SOCK")
            else:
                os.environ["SSH_AUTH_SOCK"] = old
    finally:
        os.kill(agent_pid, signal.SIGTERM)
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1


def test_certificate_login_with_a_key_the_server_does_not_list(cluster, tmp_path):
    """A throw-away key signed by the test user CA (sshd TrustedUserCAKeys): cert auth only."""
    import subprocess

    key = tmp_path / "id_cert"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ca = cluster.confdir / "ssh" / "user_ca"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(ca),
            "-I",
            "dagster-hpc-test",
            "-n",
            cluster.user,
            "-V",
            "+10m",
            f"{key}.pub",
        ],
        check=True,
    )
    cert = tmp_path / "id_cert-cert.pub"
    t = _private(_target(cluster, key_paths=(str(key),), certificate_path=str(cert)))
    try:
        assert t.run("echo cert-ok").stdout == "cert-ok\n"
    finally:
        t.close()
    log = cluster.sshd_log("main").read_text()
    assert (
        f"Accepted publickey for {cluster.user} from 127.0.0.1 port {t.local_ports[0]} ssh2: ED25519-CERT"
        in log
    )
