"""`run_bench` and the lab's scenarios run end to end on small numbers, figures well-formed (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import lab
from pyrodist.bench import BenchResult, format_result, run_bench
from pyrodist.errors import ConfigError
from tests.conftest import ROOT


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
    assert result.raw_rpc_calls_per_s is not None and result.raw_rpc_calls_per_s > 0
    assert result.vs_pool is not None and result.vs_pool > 0
    assert result.vs_raw_rpc is not None and result.vs_raw_rpc > 0


def test_as_dict_is_json(result: BenchResult) -> None:
    data = json.loads(json.dumps(result.as_dict()))
    assert data["throughput"] == result.throughput
    assert data["vs_pool"] == result.vs_pool
    assert data["vs_raw_rpc"] == result.vs_raw_rpc


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
        raw_rpc_calls_per_s=None, store=None, memory_throughput=None, cpus=1, python="3.11", platform="x",
    )  # fmt: skip
    text = format_result(bare)
    assert "n/a" in text and "baseline" not in text and "payload(b'x' * 1,024)" in text and "1 worker x" in text
    assert bare.vs_pool is None and bare.as_dict()["vs_raw_rpc"] is None


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


# ---- the lab's scenarios (benchmarks/lab.py), on small numbers: figures present and well-formed --------


def test_idle_scenario_lists_its_workers_and_measures_start_delays() -> None:
    figures = lab.run_idle(workers=3, seconds=0.5)
    assert figures.get("workers the master lists") == 3
    cpu = figures.get("master CPU")
    assert cpu is not None and cpu >= 0
    median, worst = figures.get("task start delay, median"), figures.get("task start delay, worst")
    assert median is not None and worst is not None and 0 < median <= worst
    assert "3 idle workers" in figures.format()


def test_callbacks_scenario_counts_every_callback() -> None:
    figures = lab.run_callbacks(tasks=300, workers=1)
    assert figures.get("callbacks received") == 300
    rate = figures.get("callbacks (")
    assert rate is not None and rate > 0


def test_queue_scenario_leaves_every_task_pending_and_reads_memory(tmp_path: Path) -> None:
    figures = lab.run_queue(tasks=500, store=str(tmp_path / "q.db"))  # an in-memory master: the lab command below
    assert figures.get("tasks pending") == 500
    rss, peak = figures.get("master memory"), figures.get("master peak memory")
    assert rss is not None and peak is not None and 0 < rss <= peak


def test_scaling_scenario_runs_only_the_measured_tasks_at_each_depth() -> None:
    figures = lab.run_scaling(depths=(10, 300), tasks=300)
    assert [label for label, _, _ in figures.rows] == [f"{d:>9,} tasks queued" for d in (10, 300)]
    assert all(value is not None and value >= 0 for _, value, _ in figures.rows)


def test_targets_table_says_which_were_met() -> None:
    targets = [
        lab.Target("throughput", ">= 20,000", 21_000.0, "tasks/s", True),
        lab.Target("round trip", "<= 1 ms", 1.2, "ms", False),
        lab.Target("baseline", "", 30_000.0, "tasks/s", None),
    ]
    lines = lab.format_targets(targets).splitlines()
    assert lines[2].endswith("met") and "21,000 tasks/s" in lines[2]
    assert lines[3].endswith("MISSED") and "1.20 ms" in lines[3]
    assert lines[4].endswith("tasks/s")


def test_the_lab_command_runs_a_scenario_and_prints_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--queue", "200", "--json"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (figures,) = json.loads(result.stdout)
    assert "200 tasks submitted" in figures["title"]
    values = {f["label"]: f["value"] for f in figures["figures"]}
    assert values["tasks pending at the master"] == 200
    assert any(label.startswith("master memory") and value > 0 for label, value in values.items()), values
