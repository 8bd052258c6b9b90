"""Training loop and run directory: files, resume identity on CPU, no redo, non-finite loss, config guard."""
from __future__ import annotations

import json

import pytest
import torch

from experiments.data import load_dataset
from experiments.rundir import METRIC_FIELDS, RunDir, TrainConfig
from analysis.models import build_model
from experiments.train import load_run, lr_at_epoch, parameter_groups, train


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", seed=0, n_train=96, n_test=32, num_classes=4)


def _config(**kw):
    base = dict(model="resnest20", dataset="synthetic",
                dataset_options={"seed": 0, "n_train": 96, "n_test": 32, "num_classes": 4},
                model_options={"width": 2}, seed=1, epochs=3, lr=0.05, batch_size=32, schedule="cosine")
    base.update(kw)
    return TrainConfig(**base)


def test_run_directory_contents(tmp_path, data):
    cfg = _config(epochs=1)
    result = train(cfg, tmp_path, progress=False, data=data)
    assert result["finished"] and result["epochs_run"] == 1
    rd = RunDir(tmp_path)
    assert json.loads(rd.config_path.read_text()) == cfg.to_dict()
    assert rd.load_config() == cfg
    env = json.loads(rd.environment_path.read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    rows = rd.read_metrics()
    assert len(rows) == 1 and set(rows[0]) == set(METRIC_FIELDS)
    ckpt = rd.load_checkpoint()
    assert {"model", "optimizer", "epoch", "rng_state"} <= set(ckpt) and ckpt["epoch"] == 1
    model, cfg2 = load_run(tmp_path)
    assert cfg2 == cfg and not model.training and model.fc.out_features == 4


def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path, data):
    cfg = _config()
    train(cfg, tmp_path / "straight", progress=False, data=data)
    # "Kill" after one epoch: the call returns after writing the epoch-1 checkpoint, a new call resumes.
    first = train(cfg, tmp_path / "resumed", progress=False, max_epochs_this_call=1, data=data)
    assert not first["finished"] and first["epochs_run"] == 1
    torch.manual_seed(12345)  # a resumed process starts with some other global RNG state
    second = train(cfg, tmp_path / "resumed", progress=False, data=data)
    assert second["epochs_run"] == 2 and second["finished"]
    a, b = RunDir(tmp_path / "straight"), RunDir(tmp_path / "resumed")
    sa, sb = a.load_checkpoint()["model"], b.load_checkpoint()["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "resumed weights differ from the uninterrupted run"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.read_metrics()) == strip(b.read_metrics())


def test_finished_run_is_not_redone(tmp_path, data):
    cfg = _config(epochs=1)
    train(cfg, tmp_path, progress=False, data=data)
    stamp = RunDir(tmp_path).checkpoint_path.stat().st_mtime_ns
    again = train(cfg, tmp_path, progress=False, data=data)
    assert again["epochs_run"] == 0 and again["finished"]
    assert RunDir(tmp_path).checkpoint_path.stat().st_mtime_ns == stamp


def test_non_finite_loss_raises_with_the_step(tmp_path, data):
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step \d+ \(epoch \d+, batch \d+"):
        train(_config(lr=1e30, weight_decay=0.0, epochs=3), tmp_path, progress=False, data=data)


def test_config_guard_and_validation(tmp_path, data):
    train(_config(epochs=1), tmp_path, progress=False, data=data)
    with pytest.raises(ValueError, match="holds a different config .*'lr'"):
        train(_config(epochs=1, lr=0.2), tmp_path, progress=False, data=data)
    with pytest.raises(ValueError, match="unknown config key.*'learning_rate'"):
        TrainConfig.from_dict({"model": "resnet20", "learning_rate": 0.1})
    with pytest.raises(ValueError, match="schedule must be one of 'step', 'cosine'; got 'linear'"):
        _config(schedule="linear")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_run(tmp_path / "nothing")


def test_learning_rate_schedules():
    step = TrainConfig(model="resnet20", epochs=200, lr=0.1, schedule="step")
    assert [round(lr_at_epoch(step, e), 6) for e in (0, 59, 60, 120, 160, 199)] == [0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008]
    cos = TrainConfig(model="resnet20", epochs=10, lr=0.1, schedule="cosine")
    assert lr_at_epoch(cos, 0) == 0.1 and abs(lr_at_epoch(cos, 5) - 0.05) < 1e-12


def _optimizer_groups_by_name(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in optimizer.param_groups]


def test_no_weight_decay_parameters_get_their_own_group():
    model = build_model("newton_cgnet10", num_classes=4, width=2)
    excluded = model.no_weight_decay()
    assert excluded and all(n.endswith(("alphas", "betas")) for n in excluded)
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4), lr=0.1, weight_decay=5e-4)
    (decayed, wd), (kept, wd0) = _optimizer_groups_by_name(optimizer, model)
    assert kept == excluded and wd0 == 0.0
    assert wd == 5e-4 and decayed == {n for n, _ in model.named_parameters()} - excluded


def test_models_without_no_weight_decay_keep_one_group():
    model = build_model("resnest20", num_classes=4, width=2)
    (group,) = parameter_groups(model, 1e-3)
    assert group["weight_decay"] == 1e-3 and len(group["params"]) == len(list(model.parameters()))

    class Typo(torch.nn.Linear):
        def no_weight_decay(self):
            return {"weights"}

    with pytest.raises(ValueError, match=r"Typo.no_weight_decay\(\) names \['weights'\], which are not parameters"):
        parameter_groups(Typo(2, 2), 1e-3)


def test_newton_cgnet_run_checkpoints_and_resumes_its_two_groups(tmp_path, data):
    cfg = _config(model="newton_cgnet10", model_options={"width": 2}, epochs=2, weight_decay=0.5)
    train(cfg, tmp_path, progress=False, data=data, max_epochs_this_call=1)
    opt = RunDir(tmp_path).load_checkpoint()["optimizer"]
    assert [g["weight_decay"] for g in opt["param_groups"]] == [0.5, 0.0]
    assert train(cfg, tmp_path, progress=False, data=data)["finished"]  # the two-group state reloads


def test_label_smoothing_config_and_training(tmp_path, data):
    with pytest.raises(ValueError, match="label_smoothing"):
        _config(label_smoothing=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        _config(label_smoothing=-0.1)
    plain = train(_config(epochs=1), tmp_path / "plain", progress=False, data=data)["metrics"][0]
    smooth = train(_config(epochs=1, label_smoothing=0.3), tmp_path / "smooth", progress=False, data=data)["metrics"][0]
    # Same seed, data and initial weights: the training loss can only differ if smoothing is applied.
    assert smooth["loss"] != plain["loss"]


def test_config_files_of_older_runs_still_load(tmp_path):
    old = _config().to_dict()
    del old["label_smoothing"]  # a config.json written before the field existed
    rd = RunDir(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    rd.config_path.write_text(json.dumps(old))
    cfg = rd.load_config()
    assert cfg.label_smoothing == 0.0 and cfg == _config()
    rd.init(_config())  # resuming it with today's defaults is the same config, not a conflict
