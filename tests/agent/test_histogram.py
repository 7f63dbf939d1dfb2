"""`percentiles`: numpy's linear percentile from one sorted copy."""

import numpy as np
import pytest

from agent.histogram import percentiles


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1023, 1024])
def test_percentiles_are_numpys_linear_estimate(n: int) -> None:
    values = np.random.default_rng(n).exponential(size=n)
    values[::5] = values[0]  # ties
    qs = (0.0, 1.0, 50.0, 90.0, 99.0, 100.0)
    assert percentiles(values, qs) == pytest.approx(list(np.percentile(values, qs)), rel=1e-12)


def test_percentiles_leave_the_ring_as_it_was() -> None:
    ring = np.arange(10.0)[::-1].copy()
    percentiles(ring, (50.0,))
    assert list(ring) == list(np.arange(10.0)[::-1])
