"""`run_bench` runs end to end on a small N and returns well-formed figures (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrodist.bench import BenchResult, format_result, run_bench
from pyrodist.errors import ConfigError


@pytest.fixture(scope="module")
def result() -> BenchResult:
    """One small run with the baselines, shared by the tests of this module."""
    return run_bench(tasks=200, workers=2, compare=True)


def test_figures_are_well_formed(result: BenchResult) -> None:
    assert (result.tasks, result.workers, result.payload, result.local) == (200, 2, 0, True)
    assert result.throughput > 0
    assert result.submit_rate > 0
    assert 0 < result.latency_median_ms <= result.latency_p99_ms
    assert result.master_cpu_per_task_ms is not None and result.master_cpu_per_task_ms >= 0
    assert result.master_peak_mb is not None and result.master_peak_mb > 0
    assert result.cpus > 0 and result.python and result.platform


def test_baselines_and_ratios_are_present(result: BenchResult) -> None:
    assert result.pool_throughput is not None and result.pool_throughput > 0
    assert result.raw_pyro_calls_per_s is not None and result.raw_pyro_calls_per_s > 0
    assert result.vs_pool is not None and result.vs_pool > 0
    assert result.vs_raw_pyro is not None and result.vs_raw_pyro > 0


def test_as_dict_is_json(result: BenchResult) -> None:
    data = json.loads(json.dumps(result.as_dict()))
    assert data["throughput"] == result.throughput
    assert data["vs_pool"] == result.vs_pool
    assert data["vs_raw_pyro"] == result.vs_raw_pyro


def test_format_result_names_every_figure(result: BenchResult) -> None:
    text = format_result(result)
    for label in ("throughput", "submit rate", "latency median", "latency p99", "master CPU per task",
                  "master peak memory", "multiprocessing.Pool(2)", "raw Pyro4", "pyrodist / baseline",
                  "tasks/s", "ms", "MB", "machine:", "CPUs", "Python"):  # fmt: skip
        assert label in text


def test_format_result_without_baselines_or_proc() -> None:
    bare = BenchResult(
        tasks=10, workers=1, payload=1024, local=False, throughput=5.0, submit_rate=50.0, latency_median_ms=1.0,
        latency_p99_ms=2.0, master_cpu_per_task_ms=None, master_peak_mb=None, pool_throughput=None,
        raw_pyro_calls_per_s=None, store=None, memory_throughput=None, cpus=1, python="3.11", platform="x",
    )  # fmt: skip
    text = format_result(bare)
    assert "n/a" in text and "baseline" not in text and "payload(b'x' * 1,024)" in text and "1 worker x" in text
    assert bare.vs_pool is None and bare.as_dict()["vs_raw_pyro"] is None


@pytest.mark.parametrize("kwargs", [{"tasks": 0}, {"workers": 0}, {"payload": -1}])
def test_bad_arguments_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        run_bench(**kwargs)


def test_durable_store_is_compared_with_an_in_memory_master_in_the_same_run(tmp_path: Path) -> None:
    store = str(tmp_path / "bench.db")
    result = run_bench(tasks=100, workers=1, store=store, compare=True)
    assert result.store == store
    assert result.memory_throughput is not None and result.memory_throughput > 0
    assert result.vs_memory == result.throughput / result.memory_throughput
    text = format_result(result)
    assert f"--store {store}" in text and "durable / in-memory" in text
