from __future__ import annotations

from dagster_hpc.pipes.forward import LOG_LINES_PER_EVENT, MAX_LOG_EVENTS_PER_S, LogForwarder


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(events: list[str]) -> list[str]:
    return [line for event in events for line in event.split("\n")]


def test_trickling_output_is_one_event_per_line_with_stderr_marked() -> None:
    events: list[str] = []
    forward = LogForwarder(events.append, clock=Clock())
    forward("stdout", ["a", "b"])
    forward("stderr", ["oops"])
    assert events == ["a", "b", "[stderr] oops"]


def test_a_flood_is_grouped_in_order_and_nothing_is_lost() -> None:
    events: list[str] = []
    clock = Clock()
    forward = LogForwarder(events.append, clock=clock)
    sent = []
    for tick in range(300):  # 300 reads of 40 lines within 3 s: 12,000 lines
        clock.now = tick * 0.01
        batch = [f"line {tick}-{i}" for i in range(40)]
        sent += batch
        forward("stdout", batch)
    assert _lines(events) == sent
    # at most the per-second budget of single lines plus one grouped event per read
    assert forward.events <= 3 * MAX_LOG_EVENTS_PER_S + 300
    assert max(len(e.split("\n")) for e in events) <= LOG_LINES_PER_EVENT


def test_budget_recovers_after_a_quiet_second() -> None:
    events: list[str] = []
    clock = Clock()
    forward = LogForwarder(events.append, clock=clock)
    forward("stdout", [str(i) for i in range(MAX_LOG_EVENTS_PER_S)])  # uses the whole budget
    forward("stdout", ["x", "y"])  # over budget: grouped
    assert events[-1] == "x\ny"
    clock.now = 2.0
    forward("stdout", ["p", "q"])
    assert events[-2:] == ["p", "q"]
