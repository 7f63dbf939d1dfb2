"""Reasons of bad readings per block of tags, and the repeat limiter of log lines and events."""

from __future__ import annotations

import logging

import pytest

from agent.reasons import Reasons, Repeats, one_line, reasons_of, repeated


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_repeats_lets_one_through_per_window_and_counts_the_rest() -> None:
    clock = _Clock()
    repeats = Repeats(60.0, clock)
    assert repeats.allow("lost") == 0
    assert repeats.allow("lost") is None
    clock.t += 59
    assert repeats.allow("lost") is None
    assert repeats.allow("restored") == 0  # another key has its own window
    clock.t += 1
    assert repeats.allow("lost") == 2  # two held back since the last one let through
    assert repeats.allow("lost") is None
    assert repeated(2) == " (2 more times since the last report)"
    assert repeated(1) == " (1 more time since the last report)"
    assert repeated(0) == ""


def _reasons() -> Reasons:
    reasons = Reasons("plc", clock=_Clock())
    assert reasons.add_block([1, 2, 3], "unit 1 hr:0+6") == 0
    assert reasons.add_block([4], "unit 1 co:0+1") == 1
    return reasons


def test_summary_and_by_tag_follow_the_blocks_and_the_link() -> None:
    reasons = _reasons()
    assert reasons.summary() == {} and reasons.by_tag() == {}
    reasons.set(0, "illegal data address (02)")
    assert reasons.summary() == {"illegal data address (02)": 3}
    assert reasons.by_tag() == dict.fromkeys([1, 2, 3], "illegal data address (02)")
    reasons.set_link("connection refused")  # the link is down: every tag, for its reason
    assert reasons.summary() == {"connection refused": 4}
    assert set(reasons.by_tag().values()) == {"connection refused"} and len(reasons.by_tag()) == 4
    reasons.set_link("")
    reasons.set(0, "")
    assert reasons.summary() == {}
    assert one_line({"timeout after 1s": 3}, 20) == "3 of 20 tags bad: timeout after 1s"
    assert one_line({"a": 1, "b": 3}, 4) == "4 of 4 tags bad: b (3); a (1)"
    assert one_line({}, 4) == ""
    assert reasons_of(object()) is None and reasons_of(type("S", (), {"reasons": reasons})())


def test_the_log_has_one_line_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lineside.source")
    reasons = _reasons()
    for _ in range(5):  # the same reason poll after poll: one line
        reasons.set(0, "illegal data address (02)")
        reasons.set(1, "illegal data address (02)")
        reasons.report()
    reasons.set(0, "")
    reasons.set(1, "")
    reasons.report()
    reasons.report()  # nothing changed since
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "plc: 4 tags (unit 1 hr:0+6, unit 1 co:0+1) bad: illegal data address (02)"),
        ("INFO", "plc: 4 tags (unit 1 hr:0+6, unit 1 co:0+1) good again "
                 "(was: illegal data address (02))"),
    ]  # fmt: skip


def test_a_flapping_block_logs_once_per_window_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lineside.source")
    clock = _Clock()
    reasons = Reasons("plc", clock=clock)
    reasons.add_block([1], "unit 1 hr:0+1")
    for _ in range(4):  # bad, good, bad, good ... every poll
        for reason in ("timeout after 1s", ""):
            reasons.set(0, reason)
            reasons.report()
        clock.t += 1
    clock.t += 60
    reasons.set(0, "timeout after 1s")
    reasons.report()
    bad = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert bad == [
        "plc: 1 tag (unit 1 hr:0+1) bad: timeout after 1s",
        "plc: 1 tag (unit 1 hr:0+1) bad: timeout after 1s (3 more times since the last report)",
    ]


def test_seen_lists_each_reason_with_first_and_last_time_and_a_count() -> None:
    now = [100.0]
    reasons = Reasons("plc", wall=lambda: now[0])
    a, b = reasons.add_block([0, 1], "hr:0+2"), reasons.add_block([2], "hr:10+1")
    reasons.set(a, "timeout after 1s")
    now[0] = 101.0
    reasons.set(b, "illegal data address (02)")
    now[0] = 102.0
    reasons.set(a, "timeout after 1s")
    reasons.set(a, "")
    now[0] = 103.0
    reasons.set_link("connection refused")
    seen = {s.reason: s for s in reasons.seen()}
    assert next(s.reason for s in reasons.seen()) == "connection refused"  # latest first
    timeout = seen["timeout after 1s"]
    assert (timeout.first, timeout.last, timeout.count) == (100.0, 102.0, 2)
    address = seen["illegal data address (02)"]
    assert (address.first, address.last, address.count) == (101.0, 101.0, 1)
    assert seen["connection refused"].count == 1


def test_version_counts_changes_and_changed_at_says_when() -> None:
    now = [10.0]
    reasons = Reasons("plc", wall=lambda: now[0])
    block = reasons.add_block([0], "hr:0+1")
    reasons.set(block, "timeout after 1s")
    now[0] = 11.0
    reasons.set(block, "timeout after 1s")  # no change
    assert (reasons.version, reasons.changed_at) == (1, 10.0)
    reasons.set_link("connection refused")
    assert (reasons.version, reasons.changed_at) == (2, 11.0)
