"""The report's float16 section (NRL-fp16): table and figure from run directories."""
from __future__ import annotations

import json
import math

import matplotlib
import pytest

from experiments.report import fp16_table, plot_fp16_peaks
from experiments.runs.store import RunDir, TrainConfig

matplotlib.use("Agg")


def _run(store, run_id, tanh, nonfinite, product):
    rd = RunDir(store / "runs" / run_id)
    rd.path.mkdir(parents=True)
    cfg = TrainConfig(model="newton_resnet_2211", precision="fp16", seed=int(run_id.split("-s")[1][0]),
                      model_options={"width": 8, **({"second_order_tanh": True} if tanh else {})})
    rd.config_path.write_text(json.dumps(cfg.to_dict()))
    rd.write_metrics([{"epoch": 1, "lr": 0.1, "loss": 1.0, "acc": 0.5, "test_loss": 1.0, "test_acc": 0.5,
                       "seconds": 1.0, "train_seconds": 1.0, "images_per_s": 10.0}])
    info = {"step": 12, "where": "module 'blocks.4.n2.0' (Conv2d) is the first whose output is non-finite"} \
        if nonfinite else None
    (rd.path / "result.json").write_text(json.dumps({"finished": True, "nonfinite": info, "epochs_completed": 1}))
    if product is not None:
        (rd.path / "fp16_peaks.json").write_text(json.dumps({"peak": {"product": product, "term": 2.0, "output": 5.0}}))


def test_fp16_table_and_figure(tmp_path):
    _run(tmp_path, "newton_plain-s0-aaaa", False, True, 70000.0)
    _run(tmp_path, "newton_plain-s1-bbbb", False, False, 300.0)
    _run(tmp_path, "newton_tanh-s0-cccc", True, False, None)
    table = fp16_table(tmp_path)
    assert list(table["label"]) == ["newton_plain", "newton_plain", "newton_tanh"]
    assert list(table["overflowed"]) == [True, False, False] and table["at step"].iloc[0] == 12
    assert table["tanh"].tolist() == [False, False, True]
    assert table["headroom (65504 / peak product)"].iloc[1] == pytest.approx(65504 / 300)
    assert math.isnan(table["peak |N1(s)*f|"].iloc[2])  # no peaks file: NaN, not an error
    fig = plot_fp16_peaks(table)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"


def test_fp16_table_ignores_other_runs(tmp_path):
    rd = RunDir(tmp_path / "runs" / "resnet18-s0-dddd")
    rd.path.mkdir(parents=True)
    rd.config_path.write_text(json.dumps(TrainConfig(model="resnet18", precision="fp16").to_dict()))
    rd.write_metrics([{"epoch": 1, "lr": 0.1, "loss": 1.0, "acc": 0.5, "test_loss": 1.0, "test_acc": 0.5,
                       "seconds": 1.0, "train_seconds": 1.0, "images_per_s": 10.0}])
    assert fp16_table(tmp_path).empty
