import pytest

from benchmarks.bench_serving import TARGETS, summarize, sweep_order


@pytest.mark.parametrize("repeats", [1, 2, 3, 5])
def test_sweep_order_runs_every_concurrency_and_eight_repeats_times(repeats):
    order = sweep_order(repeats)
    assert order.count(8) == repeats
    assert sorted(set(order)) == [1, 8, 32]


def run(concurrency, requests_per_second=2000.0, p99_ms=4.0, failed=0, health_p99_ms=3.0):
    return {
        "concurrency": concurrency,
        "requests_per_second": requests_per_second,
        "p99_ms": p99_ms,
        "failed": failed,
        "failed_other_than_503": failed,
        "503_without_retry_after": 0,
        "health": {"p99_ms": health_p99_ms},
    }


def test_summary_judges_the_targets_on_every_run_at_eight():
    sweep = [run(8), run(1), run(8, p99_ms=TARGETS["p99_ms_at_8"] + 0.1), run(32), run(8)]
    summary = summarize(sweep)
    assert summary["p99_ms_at_8"] == [4.0, TARGETS["p99_ms_at_8"] + 0.1, 4.0]
    assert summary["met_at_8"] == "2 of 3 runs"
    assert summary["met"] is False
    assert summarize([run(8), run(1), run(8), run(32)])["met"] is True


def test_summary_fails_on_a_slow_health_probe_or_a_failure_at_thirty_two():
    assert summarize([run(8), run(32, health_p99_ms=TARGETS["health_p99_ms_at_32"] + 1)])["met"] is False
    assert summarize([run(8), run(32, failed=1)])["met"] is False
