"""The map/reduce, sweep and callback examples run as a user runs them, from the repository root.

They share one running cluster (`--ns-host`), whose workers allow every example module: starting a
local cluster of their own is what `test_examples.py` checks, once.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Cluster, running_cluster, wait_until

EXAMPLES = ["examples.montecarlo_pi", "examples.wordcount", "examples.sweep", "examples.primes"]


@pytest.fixture(scope="module")
def examples_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose two workers may run every example's functions."""
    with running_cluster(tmp_path_factory.mktemp("examples"), workers=0) as cluster:
        for _ in range(2):
            cluster.start_worker(*[arg for module in EXAMPLES for arg in ("-I", module)])
        wait_until(lambda: len(cluster.live_workers()) >= 2, timeout=30, what="the example workers")
        yield cluster


def run(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *args, *cluster.ns_args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_montecarlo_pi_estimates_pi(examples_cluster: Cluster) -> None:
    result = run(examples_cluster, "-m", "examples.montecarlo_pi", "--tasks", "20", "--samples", "20000")
    assert result.returncode == 0, result.stderr
    match = re.search(r"^pi estimate: (\d+\.\d+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    assert abs(float(match.group(1)) - math.pi) < 0.1, result.stdout
    assert "tasks/s" in result.stdout


def test_wordcount_counts_the_built_in_corpus(examples_cluster: Cluster) -> None:
    result = run(examples_cluster, "-m", "examples.wordcount", "--top", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("5 files, "), result.stdout
    top = re.findall(r"^\s+\d+  (\S+)$", result.stdout, re.MULTILINE)
    assert len(top) == 5 and "the" in top, result.stdout


def test_wordcount_merges_the_files_of_a_folder(examples_cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Apple banana, APPLE!\ncherry_apple 42apple", encoding="utf-8")
    (tmp_path / "b.txt").write_text("banana apple", encoding="utf-8")
    result = run(examples_cluster, "-m", "examples.wordcount", "--folder", str(tmp_path), "--top", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2 files, 8 words, 3 distinct"), result.stdout
    assert re.search(r"^\s+5  apple\n\s+2  banana\n\s+1  cherry$", result.stdout, re.MULTILINE), result.stdout


def test_sweep_writes_one_csv_row_per_grid_point(examples_cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "sweep.csv"
    args = ["--alphas", "1", "2", "--betas", "0.2", "0.7", "--seeds", "2", "--out", str(out)]
    result = run(examples_cluster, "-m", "examples.sweep", *args)
    assert result.returncode == 0, result.stderr
    assert f"wrote 8 rows to {out}" in result.stdout
    assert "best: alpha=2 beta=0.7" in result.stdout, result.stdout
    with out.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert reader.fieldnames == ["alpha", "beta", "seed", "settling_time", "overshoot", "crossings", "final_energy"]
    assert [(r["alpha"], r["beta"], r["seed"]) for r in rows] == [
        (a, b, s) for a in ("1.0", "2.0") for b in ("0.2", "0.7") for s in ("0", "1")
    ]


def test_primes_streams_and_verifies_every_factorization(examples_cluster: Cluster) -> None:
    result = run(examples_cluster, "-m", "examples.primes", "--count", "12")
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^\s*\d+\.\d+ s  \d+ = \d+", result.stdout, re.MULTILINE)) == 12, result.stdout
    assert "all 12 factorizations verified" in result.stdout
