"""transport/watch.sh on the real login node: waits for a change, reads the exit code first,
reads exactly the new bytes (missing files are empty), honours max_bytes."""

from __future__ import annotations

import shlex
import threading
import time
import uuid

import pytest

from dagster_hpc.transport.auth import SSHTarget
from dagster_hpc.transport.ssh import SSHTransport

WINDOW_S = 1.0
# generous: a loaded machine delays the remote checks, never the other way round
EARLY_S = 3.0


@pytest.fixture
def transport(cluster):
    return SSHTransport(
        SSHTarget(
            host=cluster.host,
            port=cluster.port,
            user=cluster.user,
            key_paths=(str(cluster.key_path),),
            known_hosts=str(cluster.known_hosts),
            use_agent=False,
        )
    )


@pytest.fixture
def run_dir(cluster, transport):
    path = f"/home/{cluster.user}/.dhpc-watch {uuid.uuid4().hex[:8]}"  # a space: quoting
    transport.check(f"mkdir -p {shlex.quote(path)} && printf 'abc\\n' > {shlex.quote(path)}/a")
    yield path
    transport.check(f"rm -rf {shlex.quote(path)}")


def _watch(t, d, tails, **kw):
    kw = {"window_s": WINDOW_S, "check_s": 0.02, "check_max_s": 0.5, **kw}
    return t.watch_files(f"{d}/exit_code", [(f"{d}/{n}", o) for n, o in tails], **kw)


def test_watch_answers_at_once_with_new_bytes_and_empty_for_missing_files(transport, run_dir):
    started = time.monotonic()
    r = _watch(transport, run_dir, [("a", 0), ("missing", 0)], window_s=30.0)
    assert r.chunks == [b"abc\n", b""] and r.exit_chunk == b"" and r.waited
    assert time.monotonic() - started < 30.0 / 2


def test_a_silent_window_ends_empty_and_the_check_period_backs_off(transport, run_dir):
    started = time.monotonic()
    r = _watch(transport, run_dir, [("a", 4)])
    assert time.monotonic() - started >= WINDOW_S
    assert r.chunks == [b""] and r.exit_chunk == b"" and r.next_check_s == 0.5


def test_a_change_ends_the_wait_early_with_the_exit_code_and_the_last_bytes(
    transport, run_dir
) -> None:
    q = shlex.quote(run_dir)

    def job_ends() -> None:
        time.sleep(0.5)
        transport.check(f"printf 'xy' >> {q}/b; echo 3 > {q}/exit_code")

    threading.Thread(target=job_ends).start()
    started = time.monotonic()
    r = _watch(transport, run_dir, [("a", 4), ("b", 0)], window_s=20.0, linger_s=0.2)
    assert time.monotonic() - started < EARLY_S + 0.5
    assert r.exit_chunk == b"3\n" and r.chunks == [b"", b"xy"]
    capped = _watch(transport, run_dir, [("a", 1), ("b", 0)], window_s=0.0, max_bytes=1)
    assert capped.chunks == [b"b", b"x"]
