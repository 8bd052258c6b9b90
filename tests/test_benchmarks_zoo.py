"""The zoo throughput benchmark runs end to end (tiny CPU smoke mode) and writes its tables."""
from __future__ import annotations

import json

from experiments.benchmarks import zoo_throughput


def test_zoo_benchmark_smoke_writes_tables(tmp_path):
    assert zoo_throughput.main(["--smoke", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["model"] for r in summary["throughput"]] == ["resnet20", "newton_cgnet10"]
    assert all(r["images_per_s"] > 0 for r in summary["throughput"])
    assert "| resnet20 |" in (tmp_path / "README.md").read_text()


def test_ratio_summary_pairs_cgnet56_with_resnet110():
    rows = [{"model": "newton_cgnet56", "mode": "eager", "images_per_s": 7.0},
            {"model": "resnet110", "mode": "eager", "images_per_s": 10.0}]
    assert zoo_throughput.ratio_summary(rows) == {"newton_cgnet56 / resnet110 (eager)": 0.7}
