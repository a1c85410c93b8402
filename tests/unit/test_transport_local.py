from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dagster_hpc.errors import RemoteCommandError, TransportError
from dagster_hpc.pipes import FileTail
from dagster_hpc.transport.local import LocalTransport


def test_run_returns_exit_code_and_streams_and_takes_stdin() -> None:
    t = LocalTransport()
    result = t.run("cat; echo err >&2; exit 4", stdin=b"in")
    assert (result.exit_code, result.stdout, result.stderr, result.ok) == (4, "in", "err\n", False)
    assert t.bytes_sent == 2 and t.roundtrips == 1


def test_check_raises_with_command_exit_code_and_hint() -> None:
    with pytest.raises(
        RemoteCommandError, match=r"exit code 2: ls /nonexistent-dir(.|\n)*hint: look"
    ) as info:
        LocalTransport().check("ls /nonexistent-dir", hint="look")
    assert info.value.exit_code == 2


def test_run_timeout_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="timed out after 0.2 s: sleep 5"):
        LocalTransport().run("sleep 5", timeout=0.2)


def test_put_tree_copies_counts_bytes_and_sets_mode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"12345")
    (src / "sub" / "b.bin").write_bytes(b"xyz")
    t = LocalTransport()
    dst = tmp_path / "remote" / "run"
    assert t.put_tree(src, str(dst)) == 8
    assert (dst / "sub" / "b.bin").read_bytes() == b"xyz"
    assert stat.S_IMODE(dst.stat().st_mode) == 0o700
    assert t.put_tree(dst, str(dst)) == 0  # local mode writes the run dir in place: nothing to copy
    assert t.bytes_sent == 8


def test_put_file_is_atomic_and_sets_mode(tmp_path: Path) -> None:
    src = tmp_path / "bundle.tar"
    src.write_bytes(b"b" * 1000)
    t = LocalTransport()
    assert t.put_file(src, str(tmp_path / "out.tar"), mode=0o600) == 1000
    assert stat.S_IMODE((tmp_path / "out.tar").stat().st_mode) == 0o600
    assert not list(tmp_path.glob("out.tar.part-*"))


def test_read_from_offsets_and_missing_files(tmp_path: Path) -> None:
    f = tmp_path / "log"
    f.write_bytes(b"hello world")
    t = LocalTransport()
    assert t.read_from(str(f), 6) == b"world"
    assert t.read_from(str(f), 6, max_bytes=2) == b"wo"
    assert t.read_from(str(f), 100) == b""
    assert t.read_from(str(tmp_path / "missing"), 0) == b""
    before = t.roundtrips
    assert t.read_many_from([(str(f), 0), (str(tmp_path / "missing"), 0)], max_bytes=5) == [
        b"hello",
        b"",
    ]
    assert t.roundtrips == before + 1


def test_crlf_line_endings_are_stripped() -> None:
    assert FileTail("x").feed(b"windows line\r\nunix line\n") == ["windows line", "unix line"]
