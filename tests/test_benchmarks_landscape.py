"""The landscape benchmark runs end to end in a tiny CPU configuration and writes its tables."""
from __future__ import annotations

import json

from experiments.benchmarks import landscape_speed


def test_landscape_benchmark_smoke_writes_tables(tmp_path):
    landscape_speed.main(["--device", "cpu", "--synthetic", "--points", "3", "--images", "32", "--engines", "auto",
                          "--precisions", "float32", "--eig-steps", "3", "--eig-images", "16", "--power-iters", "5",
                          "--skip-loss-landscapes", "--warm-steps", "2", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "landscape_speed.json").read_text())
    rows = {r["evaluator"]: r for r in summary["rows"]}
    auto = rows["ours auto float32 (eager)"]
    # same directions and grid as the float32 vmap truth: agreement to float32 summation order
    assert auto["status"] == "ok" and auto["engine_used"] == "sequential" and auto["max_rel_error"] < 1e-5
    assert summary["eigenvalue"]["lanczos"]["matvecs"] == 3 and summary["eigenvalue"]["per_hvp_speedup"] > 0
    assert "per HVP" in (tmp_path / "landscape_speed.md").read_text()
