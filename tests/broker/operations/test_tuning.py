"""The tuning maths: percentiles of what finished jobs used, with a margin."""

from __future__ import annotations

import pytest

from broker.operations.tuning import MIN_WALLTIME_S, Measure, percentile, tune


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([5.0], 95, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 75, 3.0),
        ([float(n) for n in range(1, 101)], 95, 95.0),
        ([float(n) for n in range(1, 101)], 100, 100.0),
        ([10.0, 20.0], 1, 10.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_no_values_have_no_percentile() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 95)


def test_memory_and_walltime_are_the_percentile_with_their_margins() -> None:
    # Given 20 finished jobs that peaked at 3000..3950 MB and ran 1000..1950 s
    measures = [Measure(3000 + 50 * n, 1000.0 + 50 * n, 900.0 + n, 10_000 * n) for n in range(20)]
    # When they are tuned at the 95th percentile with 20 % more memory and 50 % more walltime
    tuning = tune(measures, 95, 0.2, 0.5)
    # Then the 19th of 20 values sets each request
    assert tuning is not None
    assert (tuning.peak_rss_mb, tuning.wall_time_s) == (3900, 1900.0)
    assert (tuning.memory_mb, tuning.walltime_s) == (4680, 2850)
    assert (tuning.cpu_time_s, tuning.output_bytes, tuning.jobs) == (918.0, 180_000, 20)


def test_a_short_job_asks_for_the_least_walltime_and_unknown_measures_change_nothing() -> None:
    tuning = tune([Measure(100, 2.0), Measure(None, None)], 95, 0.2, 0.5)
    assert tuning is not None
    assert (tuning.memory_mb, tuning.walltime_s) == (120, MIN_WALLTIME_S)
    assert (tuning.cpu_time_s, tuning.output_bytes, tuning.jobs) == (None, None, 2)
    untuned = tune([Measure()], 95, 0.2, 0.5)
    assert untuned is not None and (untuned.memory_mb, untuned.walltime_s) == (None, None)


def test_no_finished_job_gives_no_tuning() -> None:
    assert tune([], 95, 0.2, 0.5) is None
