"""Transport.stream over both SSH transports: output arrives while the command runs, failures
raise with stderr, and stopping early ends the remote command."""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from dagster_hpc.errors import RemoteCommandError, TransportError
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.openssh import OpenSSHTransport
from dagster_hpc.transport.ssh import SSHTransport

# the command below sleeps this long between its two lines: the first must arrive well before
GAP_S = 2.0
GONE_WITHIN_S = 5.0


@pytest.fixture(params=["asyncssh", "openssh"])
def transport(request, cluster):
    target = SSHTarget(cluster.host, port=cluster.port, user=cluster.user, key_paths=(str(cluster.key_path),),
                       known_hosts=str(cluster.known_hosts), use_agent=False)  # fmt: skip
    if request.param == "asyncssh":
        t = SSHTransport(target)
        t.run("true")  # warm: the timings below measure the command, not the login
        yield t
        return
    d = tempfile.mkdtemp(prefix="dhst-", dir="/tmp")
    t = OpenSSHTransport(target, control_dir=d)
    t.run("true")
    yield t
    t.close_master()
    shutil.rmtree(d, ignore_errors=True)


def test_output_arrives_while_the_command_runs(transport):
    start = time.monotonic()
    seen: list[tuple[float, bytes]] = []
    for chunk in transport.stream(f"echo first; sleep {GAP_S}; echo second"):
        seen.append((time.monotonic() - start, chunk))
    assert b"".join(c for _, c in seen) == b"first\nsecond\n"
    assert seen[0][1] == b"first\n" and seen[0][0] < GAP_S * 0.75
    assert seen[-1][0] >= GAP_S


def test_failure_raises_with_exit_code_and_stderr(transport):
    with pytest.raises(RemoteCommandError) as info:
        list(transport.stream("echo partial; echo 'it broke' >&2; exit 4"))
    assert info.value.exit_code == 4 and "it broke" in str(info.value)


def test_stopping_early_ends_the_remote_command(transport):
    stream = transport.stream("echo $$; exec sleep 60")
    pid = next(stream).decode().strip()
    assert transport.run(f"kill -0 {pid} && echo alive").stdout == "alive\n"
    stream.close()
    deadline = time.monotonic() + GONE_WITHIN_S
    while (
        transport.run(f"kill -0 {pid} 2>/dev/null && echo alive || echo gone").stdout == "alive\n"
    ):
        assert time.monotonic() < deadline, (
            f"remote pid {pid} still running after the stream was closed"
        )
        time.sleep(0.1)


def test_stream_timeout(transport):
    start = time.monotonic()
    with pytest.raises(TransportError, match="timed out after 0.5 s"):
        list(transport.stream("sleep 30", timeout=0.5))
    assert time.monotonic() - start < 5
