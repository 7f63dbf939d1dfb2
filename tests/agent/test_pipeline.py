"""Report by exception: exact tables per rule, bad input refused, and a per-row reference model."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model import Quality, ReadingBatch
from agent.pipeline import FilterStatistics, ReportByException, mark_non_finite

G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
NAN, INF = math.nan, math.inf

Row = tuple[float, Quality, int]  # value, quality, ts_ns
RefRow = tuple[int, float, int, int]  # tag, value, quality, ts_ns


def one_tag(
    rows: list[Row], *, band_abs: float = 0.0, band_pct: float = 0.0, heartbeat_ns: int = 0
) -> list[bool]:
    """Feed one tag's rows one batch at a time; return which were reported."""
    rbe = ReportByException(1, [band_abs], [band_pct], heartbeat_ns)
    return [
        len(rbe.filter(ReadingBatch.from_columns("s", [0], [value], [quality], ts))) == 1
        for value, quality, ts in rows
    ]


def rows_of(values: list[float], quality: Quality = G) -> list[Row]:
    return [(v, quality, 0) for v in values]


# --- deadbands ------------------------------------------------------------------------------


def test_no_band_reports_any_change_and_nothing_else() -> None:
    got = one_tag(rows_of([1.0, 1.0, 1.0000001, 1.0000001, -1.0, 0.0, 0.0]))
    assert got == [True, False, True, False, True, True, False]


def test_absolute_band_is_exceeded_strictly_and_measured_from_the_last_report() -> None:
    values = [10.0, 10.4, 10.5, 10.6, 10.9, 11.2, 10.7, 10.6]
    assert one_tag(rows_of(values), band_abs=0.5) == [
        True,  # first reading
        False,  # 0.4 from 10.0
        False,  # exactly 0.5: not beyond the band
        True,  # 0.6 from 10.0
        False,  # 0.3 from 10.6
        True,  # 0.6 from 10.6
        False,  # 0.5 from 11.2
        True,  # 0.6 from 11.2
    ]


def test_a_slow_ramp_cannot_creep_past_the_band() -> None:
    # Compared with the last *polled* value every step would be 0.3 and nothing reported.
    values = [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]
    assert one_tag(rows_of(values), band_abs=0.5) == [True, False, True, False, True, False]


def test_percent_band_is_relative_to_the_last_reported_magnitude() -> None:
    values = [100.0, 109.0, 110.0, 111.0, 121.0, 122.2, -100.0]
    assert one_tag(rows_of(values), band_pct=10.0) == [
        True,
        False,  # 9 of 10
        False,  # exactly 10 % of 100
        True,  # 11 > 10
        False,  # 10 < 11.1 (10 % of 111)
        True,  # 11.2 > 11.1
        True,
    ]


def test_percent_band_around_zero_reports_any_change() -> None:
    assert one_tag(rows_of([0.0, 0.0, 0.001, 0.001]), band_pct=50.0) == [True, False, True, False]


@pytest.mark.parametrize(
    ("start", "step", "reported"),
    [
        (1000.0, 4.0, False),  # inside both: 4 < 5 (abs) and 4 < 10 (1 % of 1000)
        (1000.0, 6.0, True),  # abs triggers (6 > 5), pct does not (6 < 10)
        (10.0, 0.2, True),  # pct triggers (0.2 > 0.1), abs does not (0.2 < 5)
        (10.0, 0.1, False),  # exactly 1 % and below abs
    ],
)
def test_with_both_bands_either_one_triggers(start: float, step: float, reported: bool) -> None:
    got = one_tag(rows_of([start, start + step]), band_abs=5.0, band_pct=1.0)
    assert got == [True, reported]


def test_nan_and_infinities() -> None:
    values = [1.0, NAN, NAN, 1.0, INF, INF, -INF, 5.0, NAN, INF]
    # A huge band must not hide a jump to or from a non-finite value.
    for band in (0.0, 1e300):
        assert one_tag(rows_of(values), band_abs=band, band_pct=band) == [
            True,  # first
            True,  # number → NaN
            False,  # NaN → NaN
            True,  # NaN → number
            True,  # number → inf
            False,  # inf → inf
            True,  # inf → -inf
            True,  # -inf → number
            True,
            True,
        ]


# --- quality --------------------------------------------------------------------------------


def test_every_quality_change_is_reported_in_either_direction() -> None:
    rows = [(1.0, G, 0), (1.0, U, 0), (1.0, U, 0), (1.0, B, 0), (1.0, B, 0), (1.0, G, 0)]
    assert one_tag(rows, band_abs=10.0) == [True, True, False, True, False, True]


def test_uncertain_values_are_compared_like_good_ones() -> None:
    rows = [(1.0, U, 0), (1.2, U, 0), (2.0, U, 0)]
    assert one_tag(rows, band_abs=0.5) == [True, False, True]


def test_bad_values_are_ignored_and_never_become_the_reference() -> None:
    rbe = ReportByException(1, [0.5], [0.0], 0)

    def feed(value: float, quality: Quality) -> bool:
        return len(rbe.filter(ReadingBatch.from_columns("s", [0], [value], [quality], 0))) == 1

    assert feed(10.0, G)
    assert feed(50.0, B)  # quality change
    assert not feed(60.0, B)  # a bad value moving is not news
    assert not feed(NAN, B)
    assert feed(10.2, G)  # quality change back
    # The reference is 10.2, the last reported good value, not any of the bad ones:
    assert not feed(10.6, G)
    assert feed(10.8, G)


def test_a_first_reading_that_is_bad_is_reported_then_the_first_good_one() -> None:
    rows = [(NAN, B, 0), (3.0, B, 0), (3.0, G, 0), (3.0, G, 0)]
    assert one_tag(rows) == [True, False, True, False]


# --- heartbeat ------------------------------------------------------------------------------


def test_heartbeat_reports_an_unchanged_tag_at_least_that_often() -> None:
    ts = [0, 500, 999, 1_000, 1_500, 1_999, 2_000, 2_100, 3_000, 3_099, 3_100]
    values = [1.0] * 7 + [2.0, 2.0, 2.0, 2.0]
    rows = [(v, G, t) for v, t in zip(values, ts, strict=True)]
    assert one_tag(rows, heartbeat_ns=1_000) == [
        True,  # first
        False,
        False,
        True,  # 1000 since the last report
        False,
        False,
        True,  # 2000: 1000 since 1000
        True,  # a change at 2100 restarts the count
        False,
        False,
        True,  # 1000 since 2100
    ]


def test_heartbeat_applies_to_bad_rows_too() -> None:
    rows = [(0.0, B, 0), (1.0, B, 400), (2.0, B, 1_000)]
    assert one_tag(rows, heartbeat_ns=1_000) == [True, False, True]


def test_no_heartbeat_when_zero() -> None:
    rows = [(1.0, G, t) for t in (0, 10**12, 10**15, 0)]
    assert one_tag(rows, heartbeat_ns=0) == [True, False, False, False]


def test_a_wall_clock_step_back_reanchors_the_heartbeat() -> None:
    rows = [(1.0, G, 10_000), (1.0, G, 5_000), (1.0, G, 5_500), (1.0, G, 6_000)]
    assert one_tag(rows, heartbeat_ns=1_000) == [True, True, False, True]


# --- batches --------------------------------------------------------------------------------


def test_one_batch_of_many_tags_is_filtered_at_once() -> None:
    rbe = ReportByException(4, [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 10.0, 0.0], 0)
    first = ReadingBatch.from_columns("s", [0, 1, 2, 3], [5.0, 5.0, 5.0, 5.0], G, 100)
    assert rbe.filter(first) is first  # everything new: the batch passes whole
    second = ReadingBatch.from_columns(
        "s", [3, 2, 1, 0], [5.0, 5.6, 5.9, 5.0], [G, G, G, U], [200, 201, 202, 203]
    )
    kept = rbe.filter(second)
    # tag 3 unchanged, tag 2 moved 12 % > 10 %, tag 1 moved 0.9 < 1, tag 0 changed quality.
    assert kept.tag_ids.tolist() == [2, 0]
    assert kept.values.tolist() == [5.6, 5.0]
    assert kept.quality.tolist() == [G, U]
    assert kept.timestamps().tolist() == [201, 203]
    assert kept.source == "s"


def test_one_timestamp_per_batch_is_kept_as_one() -> None:
    rbe = ReportByException(3, 0.0, 0.0, 0)
    rbe.filter(ReadingBatch.from_columns("s", [0, 1, 2], [1.0, 1.0, 1.0], G, 7))
    kept = rbe.filter(ReadingBatch.from_columns("s", [0, 1, 2], [1.0, 2.0, 3.0], G, 8))
    assert kept.tag_ids.tolist() == [1, 2]
    assert kept.ts_ns.tolist() == [8]


def test_repeated_tag_ids_in_one_batch_are_processed_in_row_order() -> None:
    rbe = ReportByException(2, [0.5, 0.0], [0.0, 0.0], 0)
    ids = [0, 1, 0, 0, 1, 0, 0]
    values = [10.0, 1.0, 10.3, 10.6, 1.0, 10.7, 11.2]
    kept = rbe.filter(ReadingBatch.from_columns("s", ids, values, G, list(range(7))))
    # As one by one: 10.0 first; 10.3 within; 10.6 beyond 10.0; 10.7 within 10.6; 11.2 beyond.
    assert kept.tag_ids.tolist() == [0, 1, 0, 0]
    assert kept.values.tolist() == [10.0, 1.0, 10.6, 11.2]
    assert kept.timestamps().tolist() == [0, 1, 3, 6]
    # And the state left behind is the last reported row's.
    again = rbe.filter(ReadingBatch.from_columns("s", [0, 0], [11.6, 11.8], G, 9))
    assert again.values.tolist() == [11.8]


def test_repeated_ids_see_quality_changes_between_them() -> None:
    rbe = ReportByException(1, 100.0, 0.0, 0)
    batch = ReadingBatch.from_columns("s", [0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0], [G, B, B, G], 0)
    assert rbe.filter(batch).quality.tolist() == [G, B, G]


def test_empty_batch_passes_through() -> None:
    rbe = ReportByException(2, 0.0, 0.0, 0)
    empty = ReadingBatch.from_columns("s", [], [], G, 0)
    assert len(rbe.filter(empty)) == 0
    assert rbe.statistics() == FilterStatistics(rows_in=0, rows_out=0)


def test_statistics_count_rows_in_and_out() -> None:
    rbe = ReportByException(3, 0.0, 0.0, 0)
    rbe.filter(ReadingBatch.from_columns("s", [0, 1, 2], [1.0, 1.0, 1.0], G, 0))
    rbe.filter(ReadingBatch.from_columns("s", [0, 1, 2], [1.0, 2.0, 1.0], G, 1))
    assert rbe.statistics() == FilterStatistics(rows_in=6, rows_out=4)


def test_reset_forgets_only_the_tags_named() -> None:
    rbe = ReportByException(3, 0.0, 0.0, 0)
    batch = ReadingBatch.from_columns("s", [0, 1, 2], [1.0, 1.0, 1.0], G, 0)
    assert len(rbe.filter(batch)) == 3
    assert len(rbe.filter(batch)) == 0
    rbe.reset([0, 2])
    assert rbe.filter(batch).tag_ids.tolist() == [0, 2]
    rbe.reset(np.array([], dtype=np.int32))  # nothing to forget
    assert len(rbe.filter(batch)) == 0
    rbe.reset()
    assert len(rbe.filter(batch)) == 3


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "quality", "message"),
    [
        ([0, -1], [0, 0], "tag ids"),  # would index from the end of the state arrays
        ([0, 3], [0, 0], "tag ids"),
        ([0, 1], [0, 3], "quality"),
    ],
)
def test_bad_batches_are_refused_and_leave_state_alone(
    ids: list[int], quality: list[int], message: str
) -> None:
    rbe = ReportByException(3, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match=message):
        rbe.filter(ReadingBatch.from_columns("s", ids, [1.0, 1.0], quality, 0))
    assert rbe.statistics() == FilterStatistics(0, 0)
    good = ReadingBatch.from_columns("s", [0, 1, 2], [1.0, 1.0, 1.0], G, 0)
    assert len(rbe.filter(good)) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_tags": -1}, "n_tags"),
        ({"n_tags": True}, "n_tags"),
        ({"deadband_abs": [0.0, 0.0]}, "one band per tag"),
        ({"deadband_pct": [[0.0, 0.0, 0.0]]}, "one band per tag"),
        ({"deadband_abs": [0.0, -1.0, 0.0]}, "not negative"),
        ({"deadband_pct": [0.0, NAN, 0.0]}, "finite"),
        ({"deadband_abs": INF}, "finite"),
        ({"heartbeat_ns": -1}, "heartbeat_ns"),
        ({"heartbeat_ns": 1.5}, "heartbeat_ns"),
        ({"heartbeat_ns": False}, "heartbeat_ns"),
    ],
)
def test_bad_construction_is_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "n_tags": 3,
        "deadband_abs": [0.0, 0.0, 0.0],
        "deadband_pct": [0.0, 0.0, 0.0],
        "heartbeat_ns": 0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ReportByException(**args)  # type: ignore[arg-type]


def test_the_caller_can_not_change_the_bands_afterwards() -> None:
    bands = np.array([0.0, 10.0])
    rbe = ReportByException(2, bands, 0.0, 0)
    bands[1] = 0.0
    rbe.filter(ReadingBatch.from_columns("s", [1], [1.0], G, 0))
    assert len(rbe.filter(ReadingBatch.from_columns("s", [1], [2.0], G, 0))) == 0


@pytest.mark.parametrize("ids", [[3], [-1], [0.5]])
def test_reset_refuses_bad_ids(ids: list[float]) -> None:
    with pytest.raises(ValueError, match="tag ids"):
        ReportByException(3, 0.0, 0.0, 0).reset(ids)


# --- the vectorised filter against a per-row reference ---------------------------------------


@dataclass
class Last:
    value: float  # last reported good/uncertain value (NaN until there is one)
    quality: int
    ts: int


def reference_changed(value: float, last: float, band_abs: float, band_pct: float) -> bool:
    if value == last or (math.isnan(value) and math.isnan(last)):
        return False
    if not (math.isfinite(value) and math.isfinite(last)):
        return True
    diff = abs(value - last)
    if band_abs == 0 and band_pct == 0:
        return True
    return (band_abs > 0 and diff > band_abs) or (
        band_pct > 0 and diff > band_pct / 100.0 * abs(last)
    )


def reference_filter(
    state: dict[int, Last],
    rows: list[RefRow],
    band_abs: list[float],
    band_pct: list[float],
    heartbeat_ns: int,
) -> list[bool]:
    """The rules written the obvious way: one row at a time."""
    out = []
    for tag, value, quality, ts in rows:
        last = state.get(tag)
        report = last is None or (
            quality != last.quality
            or (quality != B and reference_changed(value, last.value, band_abs[tag], band_pct[tag]))
            or (heartbeat_ns > 0 and (ts - last.ts >= heartbeat_ns or ts < last.ts))
        )
        if report:
            kept_value = last.value if last is not None else NAN
            state[tag] = Last(value if quality != B else kept_value, quality, ts)
        out.append(report)
    return out


VALUES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 1.05, 1.1, 1.5, 2.0, -1.0, 100.0, 110.0, NAN, INF, -INF]),
    st.floats(allow_nan=True, allow_infinity=True),
)
BANDS = st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0, 10.0])


@dataclass
class Step:
    """Either forget some tags (`reset` is not None) or filter one batch of `rows`."""

    reset: list[int] | None
    rows: list[RefRow]


Scenario = tuple[int, list[float], list[float], int, list[Step]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n_tags = draw(st.integers(1, 5))
    band_abs = draw(st.lists(BANDS, min_size=n_tags, max_size=n_tags))
    band_pct = draw(st.lists(BANDS, min_size=n_tags, max_size=n_tags))
    heartbeat_ns = draw(st.sampled_from([0, 50, 200]))
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 9)) == 0:
            steps.append(Step(draw(st.lists(st.integers(0, n_tags - 1), max_size=3)), []))
            continue
        rows = draw(
            st.lists(
                st.tuples(
                    st.integers(0, n_tags - 1),
                    VALUES,
                    st.sampled_from([G.value, U.value, B.value]),
                    st.integers(0, 1_000),
                ),
                min_size=0,
                max_size=12,
            )
        )
        steps.append(Step(None, rows))
    return n_tags, band_abs, band_pct, heartbeat_ns, steps


@settings(max_examples=300, deadline=None)
@given(scenarios())
@pytest.mark.slow
def test_vectorised_filter_matches_the_per_row_reference(scenario: Scenario) -> None:
    n_tags, band_abs, band_pct, heartbeat_ns, steps = scenario
    rbe = ReportByException(n_tags, band_abs, band_pct, heartbeat_ns)
    state: dict[int, Last] = {}
    for step in steps:
        if step.reset is not None:
            rbe.reset(step.reset)
            for tag in step.reset:
                state.pop(tag, None)
            continue
        rows = step.rows
        expected = reference_filter(state, rows, band_abs, band_pct, heartbeat_ns)
        batch = ReadingBatch.from_columns(
            "s",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows] if rows else 0,
        )
        kept = rbe.filter(batch)
        want = [row for row, keep in zip(rows, expected, strict=True) if keep]
        assert kept.tag_ids.tolist() == [r[0] for r in want]
        assert kept.quality.tolist() == [r[2] for r in want]
        assert kept.timestamps().tolist() == [r[3] for r in want]
        np.testing.assert_array_equal(kept.values, np.array([r[1] for r in want], dtype=float))


def test_non_finite_values_become_bad_and_are_the_only_rows_marked() -> None:
    batch = ReadingBatch.from_columns(
        "s",
        [0, 1, 2, 3, 4, 5],
        [1.5, NAN, INF, -INF, NAN, 2.0],
        [G, G, U, G, B, U],
        7,
    )
    marked, rows = mark_non_finite(batch)
    assert rows is not None
    assert rows.tolist() == [False, True, True, True, False, False]  # row 4 was bad already
    assert marked.quality.tolist() == [G, B, B, B, B, U]
    # the value stays as read: NaN or ±inf with bad quality is the reading's reason
    assert marked.values.tolist()[2:4] == [INF, -INF]
    assert math.isnan(marked.values[1])
    assert batch.quality.tolist() == [G, G, U, G, B, U], "the input batch is not changed"


def test_finite_or_already_bad_batches_pass_through_as_they_are() -> None:
    finite = ReadingBatch.from_columns("s", [0, 1], [1.0, -3.0], G, 7)
    failed = ReadingBatch.from_columns("s", [0, 1], [NAN, NAN], B, 7)
    huge = ReadingBatch.from_columns("s", [0, 1], [1.7e308, 1.7e308], G, 7)  # their sum is inf
    for batch in (finite, failed, huge):
        out, rows = mark_non_finite(batch)
        assert out is batch and rows is None


def test_a_resized_filter_keeps_what_each_known_tag_last_reported() -> None:
    """A config reload grows the tag table: the tags it had store nothing extra for it."""
    rbe = ReportByException(2, [0.5, 0.0], [0.0, 0.0], 0)
    first = ReadingBatch.from_columns("s", [0, 1], [10.0, 1.0], [G, G], 1)
    assert len(rbe.filter(first)) == 2
    grown = rbe.resized(3, [0.5, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert grown.n_tags == 3
    again = ReadingBatch.from_columns("s", [0, 1, 2], [10.4, 1.0, 7.0], [G, G, G], 2)
    kept = grown.filter(again)
    assert kept.tag_ids.tolist() == [2]  # tag 0 within its band, tag 1 unchanged, tag 2 new
    assert grown.statistics().rows_in == 5
