"""The landscape benchmark runs end to end in a tiny CPU configuration and writes its tables."""
from __future__ import annotations

import json

import numpy as np

from experiments.benchmarks import landscape_speed, precision_probe
from experiments.runs.store import TrainConfig
from experiments.runs.train import train


def test_landscape_benchmark_smoke_writes_tables(tmp_path):
    landscape_speed.main(["--device", "cpu", "--synthetic", "--points", "3", "--images", "32", "--engines", "auto",
                          "--precisions", "float32", "--eig-steps", "3", "--eig-images", "16", "--power-iters", "5",
                          "--skip-loss-landscapes", "--warm-steps", "2", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "landscape_speed.json").read_text())
    rows = {r["evaluator"]: r for r in summary["rows"]}
    auto = rows["ours auto float32 (eager)"]
    # Same directions and grid as the float32 vmap truth: agreement to float32 summation order. The
    # noise floor is one the benchmark measured itself: the per-point reference evaluator's error
    # against the same truth (the same function in another summation order), at least float32 eps.
    # On 5 emulated CPUs (AVX512, AVX2 and no-SIMD ATen kernels, oneDNN at AVX2, 1 and 2 threads) the
    # auto engine's error was at most 1.4x that floor (1e-7 to 3e-7); 10x covers a worse rounding
    # draw. Above 1e-4 the check could no longer tell float32 from a bfloat16/float16 path (~1e-3).
    floor = max(rows["ours reference (sequential, eager float32)"]["max_rel_error"], 1.2e-7)
    assert auto["status"] == "ok" and auto["engine_used"] == "sequential"
    assert 10 * floor < 1e-4, f"noise floor {floor:.3g} too high to tell float32 from reduced precision"
    assert auto["max_rel_error"] <= 10 * floor, (auto["max_rel_error"], floor)
    assert summary["eigenvalue"]["lanczos"]["matvecs"] == 3 and summary["eigenvalue"]["per_hvp_speedup"] > 0
    assert "per HVP" in (tmp_path / "landscape_speed.md").read_text()


def test_precision_probe_orders_the_precisions(tmp_path):
    cfg = TrainConfig(model="resnet20", dataset="synthetic", model_options={"width": 2},
                      dataset_options={"seed": 0, "n_train": 64, "n_test": 16, "num_classes": 4}, epochs=1,
                      batch_size=32)
    train(cfg, tmp_path / "run", progress=False)
    precision_probe.main([str(tmp_path / "run"), "--images", "8", "--points", "3", "--out", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "precision_probe.json").read_text())
    rows = summary["precisions"]
    # float16 keeps 11 significant bits, bfloat16 8: its errors are larger by ~8x in the median
    # (a factor 2 margin: a few points cannot make the ordering flip by chance)
    assert 0 < rows["float16"]["median_rel_error"] < rows["bfloat16"]["median_rel_error"] / 2
    assert rows["float16"]["judged_points"] + summary["skipped_small_loss_points"] <= 9
    assert np.load(tmp_path / "out" / "precision_probe.npz")["float32"].shape == (3, 3)
