"""Report by exception: keep a reading only when it tells the store something new.

A 100 ms poll of a thousand tags is ten thousand readings a second, most of them repeating the
last one. `ReportByException` keeps, per tag:

- the first reading (after start or after `reset`);
- any quality change (good ↔ uncertain ↔ bad), in either direction;
- a good or uncertain value that moved past the tag's deadband from the last *reported* value
  (comparing with the last reported value, not the last polled one, stops a slow ramp from
  creeping past the deadband unreported);
- any reading whose tag was last reported `heartbeat_ns` or more ago, so a quiet tag still shows
  it is alive, and any reading stamped *before* its tag's last report (the wall clock stepped
  back; reporting it re-anchors the heartbeat rather than silencing the tag until the clock
  catches up).

Deadbands, per tag id:

- `deadband_abs`: report when |value - last reported| > deadband_abs.
- `deadband_pct`: report when |value - last reported| > deadband_pct / 100 * |last reported|.
  Around a last reported value of 0 the percent band is 0, so any change is reported.
- A band of 0 is "not set". With neither set, any change is reported; with both set, either one
  triggers (the smaller band wins), as in OPC UA clients that offer both.
- NaN against a number, or ±inf against anything else, is a change; NaN against NaN is not.

Bad-quality readings carry no trustworthy value: they are reported on a quality change and on
the heartbeat, but never become the "last reported value" a later good reading is compared with.

Several readings of one tag in a batch are processed in row order, exactly as if they arrived
one by one: each is compared with what the previous one left as last reported.

The work is vectorised: per-tag state lives in arrays indexed by tag id, and a batch is filtered
with array operations. Only repeated tag ids cost a pass each (one pass per repeat depth).

The agent merges the batches of the links polled in one tick (`merge`) before anything else,
so a tick of fifty links costs one pass, not fifty.

Before the filter, `mark_non_finite` gives bad quality to any reading whose value is NaN or
±inf after decoding, scale and offset (a float register holding a NaN pattern, a huge float
times its scale, an OPC UA server's NaN): such a value is no measurement, so it must never
travel upstream as `null` with good quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.model import Quality, ReadingBatch

_BAD = np.uint8(Quality.BAD)
_COUNT = np.count_nonzero
_MAX_QUALITY = max(Quality)
# Stored as a tag's last quality until something is reported, so a first reading always
# differs from it: any uint8 that is not a quality code will do.
_NOT_REPORTED = np.uint8(255)


# The reason `lineside read` gives for a reading `mark_non_finite` made bad.
NON_FINITE_REASON = "not a finite number (NaN or infinity)"


def mark_non_finite(
    batch: ReadingBatch,
) -> tuple[ReadingBatch, npt.NDArray[np.bool_] | None]:
    """`batch` with bad quality on every NaN or ±inf value that did not already have it, and
    a mask of those rows (None, and the batch itself, when there are none: the usual case
    costs one `isfinite` and one `all`).

    The value is kept as read (NaN, +inf or -inf): with bad quality, a non-finite value where
    the link was fine is how the reading shows what was wrong with it. Rows already bad (a
    failed read, NaN by convention) are not counted.
    """
    finite = np.isfinite(batch.values)
    # Counted in C: numpy's `all` goes through a Python-level wrapper first.
    if _COUNT(finite) == finite.shape[0]:
        return batch, None
    flagged: npt.NDArray[np.bool_] = ~finite & (batch.quality != _BAD)
    if not bool(flagged.any()):
        return batch, None
    quality = np.where(flagged, _BAD, batch.quality)
    marked = ReadingBatch(batch.source, batch.tag_ids, batch.values, quality, batch.ts_ns)
    return marked, flagged


def merge(batches: Sequence[ReadingBatch]) -> ReadingBatch:
    """Several batches as one (the links' polls of one tick), in order: one concatenation per
    column, so the pipeline and the store pay for one batch.

    Its source names every source once, comma-separated. Batches of one timestamp each keep one:
    the latest, as a poll's batch is stamped with its last answer (the polls merged ended
    within the store's flush interval of each other, 10 ms by default, usually within a
    millisecond); a batch with a timestamp per reading makes the merged one have a timestamp per
    reading.
    """
    if len(batches) == 1:
        return batches[0]
    sources = dict.fromkeys(b.source for b in batches)
    if all(b.ts_ns.shape[0] == 1 for b in batches):
        ts = np.array([max(int(b.ts_ns[0]) for b in batches)], dtype=np.int64)
    else:
        ts = np.concatenate([b.timestamps() for b in batches])
    return ReadingBatch(
        ",".join(sources),
        np.concatenate([b.tag_ids for b in batches]),
        np.concatenate([b.values for b in batches]),
        np.concatenate([b.quality for b in batches]),
        ts,
    )


@dataclass(frozen=True, slots=True)
class FilterStatistics:
    """Rows seen by `filter` and rows it kept, since start."""

    rows_in: int
    rows_out: int


def _per_tag_band(name: str, band: npt.ArrayLike, n_tags: int) -> npt.NDArray[np.float64]:
    array = np.asarray(band, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n_tags, float(array), dtype=np.float64)
    if array.shape != (n_tags,):
        raise ValueError(f"{name} needs one band per tag ({n_tags}), got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and not negative")
    return array.copy()


class ReportByException:
    """Per-tag report-by-exception filter; see the module docstring for the rules."""

    def __init__(
        self,
        n_tags: int,
        deadband_abs: npt.ArrayLike,
        deadband_pct: npt.ArrayLike,
        heartbeat_ns: int,
    ) -> None:
        if isinstance(n_tags, bool) or not isinstance(n_tags, int) or n_tags < 0:
            raise ValueError(f"n_tags must be a non-negative int, got {n_tags!r}")
        if isinstance(heartbeat_ns, bool) or not isinstance(heartbeat_ns, int) or heartbeat_ns < 0:
            raise ValueError(
                f"heartbeat_ns must be a non-negative int (0 = never), got {heartbeat_ns!r}"
            )
        self._n_tags = n_tags
        band_abs = _per_tag_band("deadband_abs", deadband_abs, n_tags)
        band_pct = _per_tag_band("deadband_pct", deadband_pct, n_tags)
        # The bands folded once into two thresholds, so a batch costs two comparisons:
        #   diff > limit_abs  or  diff > fraction_pct * |last reported|.
        # An unset band becomes +inf (never exceeded), except that with neither band set the
        # absolute limit is 0, so any change is beyond it.
        self._limit_abs = np.where(band_abs > 0, band_abs, np.where(band_pct > 0, np.inf, 0.0))
        self._fraction_pct = np.where(band_pct > 0, band_pct / 100.0, np.inf)
        self._heartbeat_ns = heartbeat_ns
        self._last_value = np.full(n_tags, np.nan, dtype=np.float64)
        self._last_quality = np.full(n_tags, _NOT_REPORTED, dtype=np.uint8)
        self._last_ts = np.zeros(n_tags, dtype=np.int64)
        self._scratch = np.empty(n_tags, dtype=np.intp)  # for finding repeated ids
        self._rows_in = 0
        self._rows_out = 0

    @property
    def n_tags(self) -> int:
        return self._n_tags

    def resized(
        self, n_tags: int, deadband_abs: npt.ArrayLike, deadband_pct: npt.ArrayLike
    ) -> ReportByException:
        """A filter for a grown tag table (a config reload): the tags both know keep what was
        last reported, so a reload stores no extra reading of a tag that did not move."""
        kept = min(n_tags, self._n_tags)
        grown = ReportByException(n_tags, deadband_abs, deadband_pct, self._heartbeat_ns)
        grown._last_value[:kept] = self._last_value[:kept]
        grown._last_quality[:kept] = self._last_quality[:kept]
        grown._last_ts[:kept] = self._last_ts[:kept]
        grown._rows_in, grown._rows_out = self._rows_in, self._rows_out
        return grown

    def filter(self, batch: ReadingBatch) -> ReadingBatch:
        """The rows of `batch` to store, in their original order; updates per-tag state."""
        n = len(batch)
        if n == 0:
            return batch
        self._check_ids(batch.tag_ids)
        if int(batch.quality.max()) > _MAX_QUALITY:
            raise ValueError(f"unknown quality code {int(batch.quality.max())} in {batch.source}")
        # Index with intp: numpy converts int32 indices on every use otherwise.
        ids = batch.tag_ids.astype(np.intp)
        # One timestamp for the whole batch stays a scalar; broadcasting it costs more than it.
        per_row = batch.ts_ns.shape[0] == n
        ts: npt.NDArray[np.int64] | np.int64 = batch.ts_ns if per_row else batch.ts_ns[0]
        rows = np.arange(n)
        # Repeated ids are rare; find them without sorting: writing each row's number at its
        # tag leaves the last writer, so any row that is not its tag's last writer is a repeat.
        self._scratch[ids] = rows
        if bool(np.all(self._scratch[ids] == rows)):
            keep = self._pass(ids, batch.values, batch.quality, ts)
        else:
            keep = np.zeros(n, dtype=np.bool_)
            depth = _repeat_depth(ids)
            for level in range(int(depth.max()) + 1):
                at = np.flatnonzero(depth == level)  # ascending: row order within the level
                level_ts = batch.ts_ns[at] if per_row else ts
                keep[at] = self._pass(ids[at], batch.values[at], batch.quality[at], level_ts)
        kept = int(np.count_nonzero(keep))
        self._rows_in += n
        self._rows_out += kept
        return batch if kept == n else batch.select(keep)

    def reset(self, tag_ids: npt.ArrayLike | None = None) -> None:
        """Forget what was reported for `tag_ids` (all tags when None), e.g. after a reconnect,
        so each one's next reading is reported at once."""
        if tag_ids is None:
            ids = np.arange(self._n_tags, dtype=np.intp)
        else:
            given = np.atleast_1d(np.asarray(tag_ids))
            if given.size and not np.issubdtype(given.dtype, np.integer):
                raise ValueError(f"tag ids must be integers, got {given.dtype}")
            ids = given.astype(np.intp)  # an empty list arrives as float64
            self._check_ids(ids)
        self._last_quality[ids] = _NOT_REPORTED
        self._last_value[ids] = np.nan

    def statistics(self) -> FilterStatistics:
        return FilterStatistics(rows_in=self._rows_in, rows_out=self._rows_out)

    def _check_ids(self, ids: npt.NDArray[np.integer]) -> None:
        # Negative ids would silently index from the end of the state arrays: refuse them.
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self._n_tags):
            raise ValueError(
                f"tag ids must be in [0, {self._n_tags}), got {int(ids.min())}..{int(ids.max())}"
            )

    def _pass(
        self,
        ids: npt.NDArray[np.intp],
        values: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint8],
        ts: npt.NDArray[np.int64] | np.int64,
    ) -> npt.NDArray[np.bool_]:
        """Filter rows whose tag ids are all distinct, and record what was reported."""
        last = self._last_value[ids]
        has_value: npt.NDArray[np.bool_] = quality != _BAD
        # inf - inf, inf * 0 and NaN comparisons are expected here; their results are handled.
        with np.errstate(invalid="ignore", over="ignore"):
            same = (values == last) | (np.isnan(values) & np.isnan(last))
            nonfinite = ~(np.isfinite(values) & np.isfinite(last))
            diff = np.abs(values - last)
            beyond = (diff > self._limit_abs[ids]) | (diff > self._fraction_pct[ids] * np.abs(last))
        moved = has_value & ~same & (nonfinite | beyond)
        # A first reading differs from _NOT_REPORTED, so it counts as a quality change.
        report: npt.NDArray[np.bool_] = (quality != self._last_quality[ids]) | moved
        if self._heartbeat_ns:
            age = ts - self._last_ts[ids]
            report |= (age >= self._heartbeat_ns) | (age < 0)

        at = np.flatnonzero(report)  # usually a small part of the pass: update only those
        reported = ids[at]
        self._last_quality[reported] = quality[at]
        if self._heartbeat_ns:
            self._last_ts[reported] = ts[at] if isinstance(ts, np.ndarray) else ts
        valued = at[has_value[at]]
        self._last_value[ids[valued]] = values[valued]
        return report


def _repeat_depth(ids: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """For each row, how many earlier rows carry the same tag id (0 for a first occurrence)."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    positions = np.arange(ids.shape[0])
    starts = np.ones(ids.shape[0], dtype=np.bool_)
    starts[1:] = ordered[1:] != ordered[:-1]
    group_start = np.maximum.accumulate(np.where(starts, positions, 0))
    depth = np.empty(ids.shape[0], dtype=np.intp)
    depth[order] = positions - group_start
    return depth
