from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from dagster_hpc.errors import AuthenticationError, TransportError
from dagster_hpc.pipes import FileTail, RunDirMessageReader
from dagster_hpc.rundir import EXIT_CODE, PIPES_MESSAGES, STDERR, STDOUT
from dagster_hpc.transport.local import LocalTransport

# Generous bound for the writer thread on a loaded 2-core machine.
JOIN_TIMEOUT_S = 60


def test_file_tail_holds_partial_lines_until_complete() -> None:
    tail = FileTail("x")
    assert tail.feed(b"one\ntw") == ["one"]
    assert tail.offset == 6
    assert tail.feed(b"o\nthr") == ["two"]
    assert tail.feed(b"") == []
    assert tail.flush() == ["thr"]
    assert tail.flush() == []


def test_file_tail_multibyte_character_split_across_reads() -> None:
    data = "naïve ✓\n".encode()
    tail = FileTail("x")
    assert tail.feed(data[:3]) == []  # cut inside "ï"
    assert tail.feed(data[3:]) == ["naïve ✓"]


class FlakyChoppyTransport(LocalTransport):
    """A transport double: returns short reads and fails every third batch (a dropped link)."""

    def __init__(self, seed: int):
        super().__init__()
        self.rng = random.Random(seed)
        self.batches = 0
        self.failures = 0
        self.single_reads = 0

    def read_from(self, remote_path: str, offset: int, *, max_bytes: int = 4 << 20) -> bytes:
        self.single_reads += 1
        return super().read_from(remote_path, offset, max_bytes=max_bytes)

    def read_many_from(self, requests, *, max_bytes: int = 4 << 20):
        self.batches += 1
        if self.batches % 3 == 0:
            self.failures += 1
            raise TransportError("connection lost (simulated)")
        chunks = super().read_many_from(requests, max_bytes=max_bytes)
        # short reads (at least one byte: b"" means "nothing more" in the Transport contract)
        return [
            c[: self.rng.randint(1, len(c))] if c and not p.endswith(EXIT_CODE) else c
            for (p, _), c in zip(requests, chunks, strict=True)
        ]


class RecordingHandler:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def handle_message(self, message: dict) -> None:
        self.messages.append(message)


def _write_slowly(run_dir: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    out = "".join(f"out {i} ✓\n" for i in range(n)).encode()
    err = "".join(f"err {i}\n" for i in range(n // 10)).encode()
    msgs = "".join(
        json.dumps({"method": "log", "params": {"i": i}}) + "\n" for i in range(n // 5)
    ).encode()
    files = {STDOUT: out, STDERR: err, PIPES_MESSAGES: msgs}
    pos = dict.fromkeys(files, 0)
    while any(pos[k] < len(v) for k, v in files.items()):
        for name, data in files.items():
            step = rng.randint(1, 700)
            with open(run_dir / name, "ab") as fh:
                fh.write(data[pos[name] : pos[name] + step])
            pos[name] += step
    (run_dir / f"{EXIT_CODE}.tmp").write_text("0\n")
    (run_dir / f"{EXIT_CODE}.tmp").rename(run_dir / EXIT_CODE)


@pytest.mark.parametrize("seed", [1, 2])
def test_reader_loses_nothing_and_doubles_nothing_through_a_flaky_transport(
    tmp_path: Path, seed: int
) -> None:
    n = 3000
    transport = FlakyChoppyTransport(seed)
    got: dict[str, list[str]] = {"stdout": [], "stderr": []}
    warnings: list[str] = []
    reader = RunDirMessageReader(
        transport,
        str(tmp_path),
        lambda s, lines: got[s].extend(lines),
        interval_s=0.001,
        warn=warnings.append,
    )
    handler = RecordingHandler()
    writer = threading.Thread(target=_write_slowly, args=(tmp_path, n, seed))
    with reader.read_messages(handler) as params:  # type: ignore[arg-type]
        assert params == {"path": f"{tmp_path}/{PIPES_MESSAGES}"}
        writer.start()
        assert reader.exited.wait(JOIN_TIMEOUT_S)
        writer.join(JOIN_TIMEOUT_S)
    assert got["stdout"] == [f"out {i} ✓" for i in range(n)]
    assert got["stderr"] == [f"err {i}" for i in range(n // 10)]
    assert [m["params"]["i"] for m in handler.messages] == list(range(n // 5))
    assert reader.exit_code == 0
    assert list(reader.stderr_tail)[-1] == f"err {n // 10 - 1}"
    assert transport.failures > 0 and any("retrying from the same offsets" in w for w in warnings)
    assert any("works again" in w for w in warnings)
    # one warning per outage (each failure here is a separate, short outage), not per retry
    assert sum("retrying" in w for w in warnings) <= transport.failures
    assert transport.single_reads == 0  # every tick is ONE batched read (one round trip)


class DownTransport(LocalTransport):
    """Every batched read fails for the first ``failures`` calls (a long outage)."""

    def __init__(self, failures: int):
        super().__init__()
        self.left = failures

    def read_many_from(self, requests, *, max_bytes: int = 4 << 20):
        if self.left > 0:
            self.left -= 1
            raise TransportError("connection refused (simulated outage)")
        return super().read_many_from(requests, max_bytes=max_bytes)


def test_a_long_outage_warns_once_then_resumes_without_loss(tmp_path: Path) -> None:
    (tmp_path / STDOUT).write_text("before\nafter\n")
    (tmp_path / EXIT_CODE).write_text("0\n")
    got: list[str] = []
    warnings: list[str] = []
    reader = RunDirMessageReader(
        DownTransport(50),
        str(tmp_path),
        lambda s, lines: got.extend(lines),
        interval_s=0.001,
        warn=warnings.append,
    )
    with reader.read_messages(RecordingHandler()):  # type: ignore[arg-type]
        assert reader.exited.wait(JOIN_TIMEOUT_S)
    assert got == ["before", "after"]
    assert sum("retrying" in w for w in warnings) == 1
    assert sum("works again" in w for w in warnings) == 1


def test_final_drain_flushes_an_unterminated_last_line(tmp_path: Path) -> None:
    (tmp_path / STDOUT).write_bytes(b"first\nno newline at end")
    (tmp_path / EXIT_CODE).write_text("5\n")
    got: list[str] = []
    reader = RunDirMessageReader(
        LocalTransport(), str(tmp_path), lambda s, lines: got.extend(lines)
    )
    with reader.read_messages(RecordingHandler()):  # type: ignore[arg-type]
        assert reader.exited.wait(JOIN_TIMEOUT_S)
    assert got == ["first", "no newline at end"]
    assert reader.exit_code == 5


def test_handler_errors_surface_in_the_caller(tmp_path: Path) -> None:
    (tmp_path / PIPES_MESSAGES).write_text('{"method": "boom"}\n')

    class Exploding(RecordingHandler):
        def handle_message(self, message: dict) -> None:
            raise RuntimeError("handler rejected the message")

    reader = RunDirMessageReader(LocalTransport(), str(tmp_path), lambda s, lines: None)
    with pytest.raises(RuntimeError, match="handler rejected"):
        with reader.read_messages(Exploding()):  # type: ignore[arg-type]
            reader.exited.wait(JOIN_TIMEOUT_S)


def test_no_messages_debug_text_names_the_files(tmp_path: Path) -> None:
    text = RunDirMessageReader(
        LocalTransport(), str(tmp_path), lambda s, lines: None
    ).no_messages_debug_text()
    assert (
        f"{tmp_path}/{PIPES_MESSAGES}" in text and "open_dagster_pipes" in text and STDERR in text
    )


def test_refused_credentials_stop_the_reader_at_once_without_retrying(tmp_path: Path) -> None:
    class Refused(LocalTransport):
        calls = 0

        def read_many_from(self, requests, *, max_bytes: int = 4 << 20):
            self.calls += 1
            raise AuthenticationError("permission denied (simulated)")

    transport = Refused()
    warnings: list[str] = []
    reader = RunDirMessageReader(
        transport, str(tmp_path), lambda s, lines: None, interval_s=0.001, warn=warnings.append
    )
    with pytest.raises(AuthenticationError, match="permission denied"):
        with reader.read_messages(RecordingHandler()):  # type: ignore[arg-type]
            assert reader.exited.wait(JOIN_TIMEOUT_S)
    assert transport.calls == 1 and not warnings  # one attempt, no "retrying" noise
