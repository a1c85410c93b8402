"""SSHTransport's connection behaviour on the real sshd: one login for many commands, reconnect,
host keys, one-round-trip uploads and batched reads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from dagster_hpc.errors import HostKeyError, TransportError
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.ssh import SSHTransport

COMMANDS = 100
CONCURRENCY = 16
# the sshd must have dropped our TCP connection by then (local loopback: milliseconds)
DROP_SEEN_WITHIN_S = 5.0


def _target(cluster, key, **kw) -> SSHTarget:
    base = dict(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        key_paths=(str(key),),
        known_hosts=str(cluster.known_hosts),
        use_agent=False,
    )
    base.update(kw)
    return SSHTarget(**base)


@pytest.fixture
def remote_dir(cluster):
    """A fresh directory name under the test user's home, removed afterwards."""
    import pwd

    path = f"{pwd.getpwnam(cluster.user).pw_dir}/.dagster-hpc-tests/{uuid.uuid4().hex[:10]}"
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


def test_100_commands_cost_one_authentication(cluster, dedicated_key):
    target = _target(cluster, dedicated_key.path)
    # two transports for the same target in one process share the one connection
    a, b = SSHTransport(target), SSHTransport(target)
    outputs = [a.run(f"echo {i}").stdout for i in range(COMMANDS // 2)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:  # concurrent channels on the same connection
        outputs += list(
            pool.map(
                lambda i: b.run(f"sleep 0.05; echo {i}").stdout, range(COMMANDS // 2, COMMANDS)
            )
        )
    assert outputs == [f"{i}\n" for i in range(COMMANDS)]
    assert a.roundtrips + b.roundtrips == COMMANDS
    assert a.authentications == 1 and b.authentications == 1
    # the server's view: this key logged in exactly once
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1
    SSHTransport(target, share=False).close()


def _server_pids_for(local_port: int, server_port: int) -> list[int]:
    """sshd processes holding the server end of our TCP connection (ours alone: matched by port)."""
    out = subprocess.run(
        [
            "ss",
            "-Htnp",
            "state",
            "established",
            f"( sport = :{server_port} and dport = :{local_port} )",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def test_reconnects_after_the_server_kills_the_connection(cluster, dedicated_key, remote_dir):
    t = SSHTransport(_target(cluster, dedicated_key.path), share=False)
    try:
        marker = f"{remote_dir}/ran"
        assert t.run(f"mkdir -p {remote_dir} && echo once >> {marker}").ok
        pids = _server_pids_for(t.local_ports[0], cluster.port)
        assert pids, "could not find the sshd serving our connection"
        for pid in pids:  # the sshd processes of OUR connection only
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DROP_SEEN_WITHIN_S
        while _server_pids_for(t.local_ports[0], cluster.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        r = t.run(f"cat {marker}")
        assert r.ok and r.stdout == "once\n"  # reconnected, and the earlier command was not re-run
        assert t.authentications == 2 and len(t.local_ports) == 2
        assert dedicated_key.accepted(cluster.sshd_log("main")) == 2
    finally:
        t.close()


def test_unknown_host_key_is_refused_with_how_to_trust_it(cluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = SSHTransport(
        SSHTarget(
            cluster.host,
            port=cluster.port,
            user=cluster.user,
            key_paths=(str(cluster.key_path),),
            known_hosts=str(empty),
            use_agent=False,
        ),
        share=False,
    )
    with pytest.raises(HostKeyError) as info:
        t.run("true")
    msg = str(info.value)
    assert (
        "unknown" in msg
        and f"ssh-keyscan -p {cluster.port} {cluster.host}" in msg
        and "accept-new" in msg
    )
    assert t.authentications == 0


def test_changed_host_key_is_refused_even_with_accept_new(cluster, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"[{cluster.host}]:{cluster.port} "
        + " ".join((tmp_path / "other.pub").read_text().split()[:2])
        + "\n"
    )
    for policy in ("strict", "accept-new"):
        t = SSHTransport(
            SSHTarget(
                cluster.host,
                port=cluster.port,
                user=cluster.user,
                key_paths=(str(cluster.key_path),),
                known_hosts=str(kh),
                host_key_policy=policy,
                use_agent=False,
            ),
            share=False,
        )
        with pytest.raises(HostKeyError) as info:
            t.run("true")
        assert "CHANGED" in str(info.value) and "ssh-keygen -R" in str(info.value)
    assert len(kh.read_text().splitlines()) == 1  # nothing was added


def test_accept_new_trusts_a_first_seen_host_only_when_asked(cluster, tmp_path):
    kh = tmp_path / "known_hosts"  # does not exist yet
    t = SSHTransport(
        SSHTarget(
            cluster.host,
            port=cluster.port,
            user=cluster.user,
            key_paths=(str(cluster.key_path),),
            known_hosts=str(kh),
            host_key_policy="accept-new",
            use_agent=False,
        ),
        share=False,
    )
    try:
        assert t.run("echo hi").stdout == "hi\n"
    finally:
        t.close()
    entry = kh.read_text().split()
    assert entry[0] == f"[{cluster.host}]:{cluster.port}"
    # the recorded key is the server's real one: a strict connection now succeeds with this file
    strict = SSHTransport(
        SSHTarget(
            cluster.host,
            port=cluster.port,
            user=cluster.user,
            key_paths=(str(cluster.key_path),),
            known_hosts=str(kh),
            use_agent=False,
        ),
        share=False,
    )
    try:
        assert strict.run("true").ok
    finally:
        strict.close()


def test_put_tree_is_one_round_trip_and_private(cluster, tmp_path, remote_dir):
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (src / "run.sh").write_text("#!/bin/sh\necho run\n")
    (src / "run.sh").chmod(0o755)
    t = SSHTransport(_target(cluster, cluster.key_path))
    before = t.roundtrips
    sent = t.put_tree(src, f"{remote_dir}/run-1")
    assert t.roundtrips - before == 1
    assert sent > 25600
    out = t.check(
        f"cd {remote_dir}/run-1 && stat -c '%a' . && cat a.txt && ./run.sh && md5sum sub/deeper/b.bin"
    )
    lines = out.splitlines()
    assert lines[0] == "700" and lines[1] == "alpha" and lines[2] == "run"
    import hashlib

    assert (
        lines[3].split()[0]
        == hashlib.md5((src / "sub" / "deeper" / "b.bin").read_bytes()).hexdigest()
    )


def test_put_file_sftp_and_reads_by_offset(cluster, tmp_path, remote_dir):
    t = SSHTransport(_target(cluster, cluster.key_path))
    t.check(f"mkdir -p {remote_dir}")
    data = os.urandom(300_000)
    (tmp_path / "blob").write_bytes(data)
    sent_before = t.bytes_sent
    assert t.put_file(tmp_path / "blob", f"{remote_dir}/blob", mode=0o640) == len(data)
    assert t.bytes_sent - sent_before == len(data)
    assert t.check(f"stat -c %a {remote_dir}/blob").strip() == "640"
    assert t.read_from(f"{remote_dir}/blob", 0, max_bytes=len(data)) == data
    assert t.read_from(f"{remote_dir}/blob", 1000, max_bytes=10) == data[1000:1010]
    assert t.read_from(f"{remote_dir}/blob", len(data)) == b""
    assert t.read_from(f"{remote_dir}/missing", 0) == b""
    t.check(f"printf 'line1\\nline2\\n' > {remote_dir}/log.txt")
    before = t.roundtrips
    got = t.read_many_from(
        [
            (f"{remote_dir}/log.txt", 6),
            (f"{remote_dir}/missing", 0),
            (f"{remote_dir}/blob", 299_990),
        ]
    )
    assert t.roundtrips - before == 1
    assert got == [b"line2\n", b"", data[299_990:]]


def test_command_timeout_is_reported_with_the_command(cluster):
    t = SSHTransport(_target(cluster, cluster.key_path))
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        t.run("sleep 30", timeout=0.5)
    assert time.monotonic() - start < 5
    assert "timed out after 0.5 s" in str(info.value) and "sleep 30" in str(info.value)
    assert t.run("echo still-usable").stdout == "still-usable\n"


def test_connection_dropped_mid_command_raises_instead_of_rerunning(
    cluster, dedicated_key, remote_dir
):
    import threading

    t = SSHTransport(_target(cluster, dedicated_key.path), share=False)
    try:
        t.check(f"mkdir -p {remote_dir}")
        errors: list[BaseException] = []

        def slow() -> None:
            try:
                t.run(
                    f"echo started >> {remote_dir}/log; sleep 10; echo finished >> {remote_dir}/log"
                )
            except TransportError as exc:
                errors.append(exc)

        th = threading.Thread(target=slow)
        th.start()
        deadline = time.monotonic() + DROP_SEEN_WITHIN_S
        while t.run(f"cat {remote_dir}/log").stdout != "started\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _server_pids_for(t.local_ports[0], cluster.port):
            os.kill(pid, signal.SIGTERM)
        th.join(timeout=30)
        assert (
            errors and "dropped while running" in str(errors[0]) and "not re-run" in str(errors[0])
        )
        time.sleep(0.5)
        # the next command reconnects; the interrupted command was not started a second time
        assert t.run(f"cat {remote_dir}/log").stdout.count("started") == 1
        assert t.authentications == 2
    finally:
        t.close()


def test_unreachable_port_fails_within_seconds(cluster):
    t = SSHTransport(_target(cluster, cluster.key_path, port=1), share=False)
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        t.run("true")
    assert time.monotonic() - start < 10
    assert "could not connect to" in str(info.value) and "hint:" in str(info.value)
