"""float16 training (autocast + GradScaler) and ``on_nonfinite="stop"`` runs (NRL-fp16's machinery)."""
from __future__ import annotations

import json

import pytest
import torch

from experiments.runs.data import load_dataset
from experiments.runs.store import RunDir, TrainConfig
from experiments.runs.train import FP16_MAX, NonFiniteLoss, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIMING = ("seconds", "train_seconds", "images_per_s")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", seed=0, n_train=96, n_test=32, num_classes=4)


def _config(**kw):
    base = dict(model="newton_resnet_1111", dataset="synthetic",
                dataset_options={"seed": 0, "n_train": 96, "n_test": 32, "num_classes": 4},
                model_options={"width": 2}, seed=1, epochs=2, lr=0.05, batch_size=32, schedule="cosine")
    base.update(kw)
    return TrainConfig(**base)


def _fp16_runs_here() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.Conv2d(3, 4, 3)(torch.randn(1, 3, 5, 5))
        return True
    except Exception:  # noqa: BLE001
        return False


needs_fp16 = pytest.mark.skipif(not _fp16_runs_here(), reason="no float16 autocast on this CPU build")


@needs_fp16
def test_fp16_trains_close_to_fp32_with_a_scaler_in_the_checkpoint(tmp_path, data):
    half = train(_config(epochs=1, precision="fp16"), tmp_path / "fp16", progress=False, data=data)
    full = train(_config(epochs=1), tmp_path / "fp32", progress=False, data=data)
    # float16 keeps 11 significant bits (rel. rounding 5e-4 per op): the first epoch's mean loss
    # agrees with fp32 to well under 1e-2 after a few dozen ops, but not bit for bit.
    assert half["metrics"][0]["loss"] == pytest.approx(full["metrics"][0]["loss"], rel=1e-2)
    assert half["metrics"][0]["loss"] != full["metrics"][0]["loss"]
    ckpt = RunDir(tmp_path / "fp16").load_checkpoint()
    assert "scaler" in ckpt and ckpt["scaler"]["scale"] > 0
    assert "scaler" not in RunDir(tmp_path / "fp32").load_checkpoint()
    result = json.loads((tmp_path / "fp16" / "result.json").read_text())
    assert result["precision"] == "fp16" and result["nonfinite"] is None


@needs_fp16
def test_fp16_run_resumes_to_identical_weights(tmp_path, data):
    cfg = _config(epochs=3, precision="fp16")
    train(cfg, tmp_path / "straight", progress=False, data=data)
    train(cfg, tmp_path / "resumed", progress=False, max_epochs_this_call=1, data=data)
    train(cfg, tmp_path / "resumed", progress=False, data=data)
    a, b = RunDir(tmp_path / "straight").load_checkpoint(), RunDir(tmp_path / "resumed").load_checkpoint()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scaler"] == b["scaler"]


def _poison(monkeypatch, factor: float, at_step: int):
    """Multiply blocks.3.conv1's output by ``factor`` from training step ``at_step`` on (keyed on BN state)."""
    import experiments.runs.train as train_mod

    build = train_mod.build_model

    def poisoned(*args, **kwargs):
        model = build(*args, **kwargs)
        stem_bn = model.blocks[0].norm1

        def hook(module, inputs, output):
            if module.training and int(stem_bn.num_batches_tracked) >= at_step + 1:
                return output * factor
            return None

        model.blocks[3].conv1.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "build_model", poisoned)


@needs_fp16
def test_fp16_overflow_is_found_in_the_layer_and_advised(tmp_path, data, monkeypatch):
    # 1e6 x a unit-scale activation exceeds float16's 65504 (-> inf), but is finite in float32: the
    # same poisoned model trains in fp32 and stops in fp16, where the message names the layer.
    _poison(monkeypatch, 1e6, at_step=3)
    train(_config(epochs=2), tmp_path / "fp32", progress=False, data=data)
    with pytest.raises(NonFiniteLoss) as err:
        train(_config(epochs=2, precision="fp16"), tmp_path / "fp16", progress=False, data=data)
    msg = str(err.value)
    assert "at step 3 (epoch 1, batch 0" in msg
    assert "module 'blocks.3.conv1' (Conv2d) is the first whose output is non-finite" in msg
    assert "train in bf16 or fp32" in msg and f"{FP16_MAX:g}" in msg
    assert err.value.info["step"] == 3 and err.value.info["precision"] == "fp16"
    assert isinstance(err.value, FloatingPointError)  # callers catching the old error still do


@needs_fp16
def test_stop_mode_ends_the_run_as_finished_with_the_diagnosis(tmp_path, data, monkeypatch):
    _poison(monkeypatch, 1e6, at_step=3)
    cfg = _config(epochs=3, precision="fp16", on_nonfinite="stop")
    out = train(cfg, tmp_path, progress=False, data=data)
    assert out["finished"] and out["nonfinite"]["step"] == 3 and len(out["metrics"]) == 1
    result = RunDir(tmp_path).read_result()
    assert result["nonfinite"]["step"] == 3 and result["epochs_completed"] == 1
    assert "blocks.3.conv1" in result["nonfinite"]["where"]
    # The last good epoch's checkpoint stays for analysis, and the run is never redone.
    assert RunDir(tmp_path).load_checkpoint()["epoch"] == 1
    again = train(cfg, tmp_path, progress=False, data=data)
    assert again["epochs_run"] == 0 and again["finished"]


def test_stop_mode_in_the_first_epoch_writes_an_empty_final(tmp_path, data, monkeypatch):
    _poison(monkeypatch, float("nan"), at_step=0)
    out = train(_config(epochs=2, on_nonfinite="stop"), tmp_path, progress=False, data=data)
    result = RunDir(tmp_path).read_result()
    assert out["metrics"] == [] and result["final"] == {} and result["epochs_completed"] == 0
    assert result["nonfinite"]["step"] == 0 and result["best_test_acc"] is None
