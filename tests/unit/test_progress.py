"""Progress of env builds and uploads: percent lines at a named interval, a bar in the CLI."""

from __future__ import annotations

import io

from dagster_hpc import progress
from dagster_hpc.transport.local import LocalTransport


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_log_lines_first_every_interval_and_last():
    lines: list[str] = []
    clock = Clock()
    log = progress.LogProgress(lines.append, interval_s=10, clock=clock)
    total = 100 * progress.MB
    for done in range(0, total + 1, progress.MB):  # one call per MB, 1 s apart
        log("upload env.tar.zst", done, total)
        clock.t += 1
    assert lines[0] == "upload env.tar.zst: 0% (0.0 of 100.0 MB)"
    assert lines[1] == "upload env.tar.zst: 10% (10.0 of 100.0 MB)"
    assert lines[-1] == "upload env.tar.zst: 100% (100.0 of 100.0 MB)"
    assert len(lines) == 11
    log("env build k (wheelhouse)", 1, 3, "steps")
    assert lines[-1] == "env build k (wheelhouse): 33% (1 of 3 steps)"


def test_bar_redraws_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    clock = Clock()
    bar = progress.BarProgress(out, clock=clock)
    for done in (0, 5, 10):
        clock.t += 1
        bar("upload x", done * progress.MB, 10 * progress.MB)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("100% 10.0 of 10.0 MB\n")
    assert "[###############...............]  50%" in text


def test_uploads_report_through_the_installed_reporter(tmp_path):
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(b"x" * 3000)
    seen = []
    with progress.reporting(
        lambda what, done, total, unit="bytes": seen.append((what, done, total))
    ):
        LocalTransport().put_file(src, str(tmp_path / "dst"))
    assert seen == [("upload bundle.tar.zst", 0, 3000), ("upload bundle.tar.zst", 3000, 3000)]
    LocalTransport().put_file(src, str(tmp_path / "dst2"))  # nothing installed: silent
    assert len(seen) == 2
