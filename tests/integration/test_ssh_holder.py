"""The connection holder on the real sshd: many processes, one login; a killed holder is
replaced (one more login) and an in-flight read is re-sent; errors keep their class."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dagster_hpc.errors import AuthenticationError, RemoteCommandError
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.holder_client import HolderTransport

PROCESSES = 6
# a SIGKILLed process is gone (and its socket refuses) within milliseconds on loopback
GONE_WITHIN_S = 10.0

_CHILD = """
import json, os, sys
from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.holder_client import HolderTransport
t = HolderTransport(SSHTarget(**json.loads(sys.argv[1])))
outs = [t.run(f"echo {i}").stdout for i in range(20)]
print(json.dumps({"ok": outs == [f"{i}\\n" for i in range(20)], "pid": t.info()["pid"]}))
"""


def _spec(cluster, key) -> dict:
    return dict(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        key_paths=[str(key)],
        known_hosts=str(cluster.known_hosts),
        use_agent=False,
    )


def _target(spec: dict, **kw) -> SSHTarget:
    return SSHTarget(**{**spec, "key_paths": tuple(spec["key_paths"]), **kw})


def test_processes_starting_at_once_share_one_login_and_a_killed_holder_is_replaced(
    cluster, dedicated_key
) -> None:
    spec = _spec(cluster, dedicated_key.path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(spec)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(PROCESSES)
    ]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(a["ok"] for a in answers)
    assert len({a["pid"] for a in answers}) == 1  # one holder for all
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 1

    t = HolderTransport(_target(spec))
    pid = answers[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    # the socket file is still there but nobody answers: the next request starts a new holder
    assert t.run("echo again").stdout == "again\n"
    assert t.holders_started == 1 and t.info()["pid"] != pid
    assert dedicated_key.accepted(cluster.sshd_log("main")) == 2
    t.shutdown_holder()


def test_a_read_in_flight_when_the_holder_dies_is_resent(cluster, dedicated_key, tmp_path):
    t = HolderTransport(_target(_spec(cluster, dedicated_key.path)))
    path = f"/home/{cluster.user}/.dhpc-holder-{os.getpid()}"
    t.check(f"printf 'abc\\n' > {path}")
    try:
        pid, started_before = t.info()["pid"], t.holders_started
        # a watch that would wait 20 s for a change: kill the holder while it waits
        import threading

        threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
        started = time.monotonic()
        result = t.watch_files(
            f"{path}.exit", [(path, 4)], window_s=3.0, check_s=0.02, check_max_s=0.5
        )
        assert result.chunks == [b""] and time.monotonic() - started >= 1.0
        assert t.holders_started == started_before + 1 and t.info()["pid"] != pid
    finally:
        t.run(f"rm -f {path}")
        t.shutdown_holder()


def test_errors_keep_their_class_through_the_holder(cluster, dedicated_key) -> None:
    spec = _spec(cluster, dedicated_key.path)
    t = HolderTransport(_target(spec))
    with pytest.raises(RemoteCommandError, match="exit code 3"):
        list(t.stream("echo out; echo err >&2; exit 3"))
    assert b"".join(t.stream("for i in 1 2 3; do echo $i; done")) == b"1\n2\n3\n"
    t.shutdown_holder()
    refused = HolderTransport(
        _target(spec, key_paths=(), password="wrong-password", connect_timeout=10)
    )
    with pytest.raises(AuthenticationError, match="refused our credentials"):
        refused.run("true")
    refused.shutdown_holder()
