"""Training loop and run directory: files, resume identity on CPU, no redo, non-finite loss, config guard."""
from __future__ import annotations

import json

import pytest
import torch

from experiments.runs.data import load_dataset
from experiments.runs.store import METRIC_FIELDS, RunDir, TrainConfig
from analysis.models import build_model
from experiments.runs.store import load_run
from experiments.runs.train import lr_at_epoch, parameter_groups, train

# Tiny convs on this oversubscribed 2-core machine ran ~10x slower with 2 torch threads.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING = ("seconds", "train_seconds", "images_per_s")  # wall-clock columns: differ between identical runs


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
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
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
    with pytest.raises(ValueError, match="holds trained state of a different config .*'lr'"):
        train(_config(epochs=1, lr=0.2), tmp_path, progress=False, data=data)
    with pytest.raises(ValueError, match="unknown config key.*'learning_rate'"):
        TrainConfig.from_dict({"model": "resnet20", "learning_rate": 0.1})
    with pytest.raises(ValueError, match="schedule must be one of 'step', 'cosine', 'onecycle'; got 'linear'"):
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


# --- issue 5: fast path, schedules, result.json, diagnostics, CLI seeds, benchmark --------------

from experiments.runs.train import lr_at_step, make_optimizer, steps_per_epoch  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_onecycle_is_a_pure_function_of_the_step():
    cfg = TrainConfig(model="resnet20", epochs=4, lr=0.4, schedule="onecycle", warmup_fraction=0.25)
    spe = 10  # 40 steps: 10 warm-up, 30 decay
    lrs = [lr_at_step(cfg, s, spe) for s in range(40)]
    assert lrs[0] == pytest.approx(0.04) and lrs[9] == pytest.approx(0.4) and lrs[10] == pytest.approx(0.4)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:10]))  # linear warm-up
    diffs = [a - b for a, b in zip(lrs[10:], lrs[11:])]
    assert all(d == pytest.approx(0.4 / 30) for d in diffs)  # linear decay ...
    assert lr_at_step(cfg, 40, spe) == 0.0 and lrs[-1] == pytest.approx(0.4 / 30)  # ... reaching 0 at the end
    assert lr_at_epoch(cfg, 1, spe) == lrs[10]
    with pytest.raises(ValueError, match="onecycle schedule changes every step: pass steps_per_epoch"):
        lr_at_epoch(cfg, 1)
    cos = TrainConfig(model="resnet20", epochs=10, lr=0.1, schedule="cosine")
    assert [lr_at_step(cos, s, 7) for s in (0, 6, 7)] == [lr_at_epoch(cos, 0)] * 2 + [lr_at_epoch(cos, 1)]
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(model="resnet20", warmup_fraction=1.0)


def test_onecycle_run_resumes_exactly(tmp_path, data):
    cfg = _config(schedule="onecycle", epochs=2, augment=True, pad_mode="zero")
    train(cfg, tmp_path / "straight", progress=False, data=data)
    train(cfg, tmp_path / "resumed", progress=False, data=data, max_epochs_this_call=1)
    train(cfg, tmp_path / "resumed", progress=False, data=data)
    sa, sb = RunDir(tmp_path / "straight").load_checkpoint()["model"], RunDir(tmp_path / "resumed").load_checkpoint()["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = RunDir(tmp_path / "straight").read_metrics()
    assert rows[1]["lr"] == lr_at_step(cfg, steps_per_epoch(cfg, 96), steps_per_epoch(cfg, 96)) != rows[0]["lr"]


def test_result_json_and_finished_without_checkpoint(tmp_path, data):
    cfg = _config(epochs=2, eval_every=2)
    out = train(cfg, tmp_path, progress=False, data=data)
    rd = RunDir(tmp_path)
    rows = rd.read_metrics()
    # eval_every=2: epoch 1 not evaluated (NaN), epoch 2 (the last) evaluated.
    assert rows[0]["test_acc"] != rows[0]["test_acc"] and 0.0 <= rows[1]["test_acc"] <= 1.0
    assert all(r["train_seconds"] > 0 and r["images_per_s"] == pytest.approx(96 / r["train_seconds"]) for r in rows)
    assert all(r["train_seconds"] <= r["seconds"] for r in rows)  # pure training time excludes evaluation
    res = rd.read_result()
    assert res["finished"] and res["epochs"] == 2 and res["final"]["test_acc"] == rows[1]["test_acc"]
    assert res["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows))
    assert res["peak_gpu_memory_bytes"] is None and res["world_size"] == 1 and res["final"]["epoch"] == 2
    assert repr(out["metrics"]) == repr(rows)  # repr: NaN (not evaluated) != NaN under ==
    # GPU results are committed without checkpoints: such a run is finished and is not redone.
    rd.checkpoint_path.unlink()
    again = train(cfg, tmp_path, progress=False, data=data)
    assert again["epochs_run"] == 0 and again["finished"] and not rd.checkpoint_path.exists()
    assert repr(again["metrics"]) == repr(rows) and rd.is_finished()
    with pytest.raises(FileNotFoundError, match="finished but its checkpoint was deleted"):
        load_run(tmp_path)


def test_metrics_written_before_new_columns_read_as_nan(tmp_path):
    rd = RunDir(tmp_path)
    rd.write_metrics([{"epoch": 1, "lr": 0.1, "loss": 1.0, "acc": 0.5, "test_loss": 1.1, "test_acc": 0.4, "seconds": 2.0}])
    (row,) = rd.read_metrics()
    assert row["seconds"] == 2.0 and row["train_seconds"] != row["train_seconds"]  # NaN


def test_non_finite_loss_names_the_first_bad_step_and_module(tmp_path, data, monkeypatch):
    import experiments.runs.train as train_mod

    build = train_mod.build_model
    poison_step = 4  # global step 4 = epoch 1, batch 1 (3 batches per epoch)

    def poisoned(*args, **kwargs):
        model = build(*args, **kwargs)
        stem_bn = model.blocks[0].norm1

        def hook(module, inputs, output):
            # Keyed on model state (BN's batch counter = steps taken + 1), not on a call counter, so
            # the diagnostic replay of the epoch meets the NaN at the same step as training did.
            if module.training and int(stem_bn.num_batches_tracked) == poison_step + 1:
                return output * float("nan")
            return None

        model.blocks[3].conv1.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "build_model", poisoned)
    cfg = _config(epochs=3, model="newton_resnet_1111", model_options={"width": 2}, precision="fp32")
    with pytest.raises(FloatingPointError) as err:
        train(cfg, tmp_path, progress=False, data=data)
    msg = str(err.value)
    assert "non-finite training loss nan at step 4 (epoch 1, batch 1" in msg
    assert "module 'blocks.3.conv1' (Conv2d) is the first whose output is non-finite" in msg
    assert "lower the learning rate" in msg and "second_order_tanh=True" in msg and "NRL sec. 4.4" in msg
    # The checkpoint of the last good epoch is intact.
    assert RunDir(tmp_path).load_checkpoint()["epoch"] == 1


def test_non_finite_from_a_huge_lr_names_a_real_layer(tmp_path, data):
    with pytest.raises(FloatingPointError) as err:
        train(_config(lr=1e30, weight_decay=0.0, epochs=3), tmp_path, progress=False, data=data)
    msg = str(err.value)
    model = build_model("resnest20", num_classes=4, width=2)
    names = set(dict(model.named_modules())) | set(dict(model.named_parameters()))
    import re

    named = re.search(r"(?:module|parameter) '([^']+)'", msg)
    assert named and named.group(1) in names, msg
    assert "To fix: lower the learning rate (lr=1e+30" in msg


# Fused vs per-parameter SGD: same arithmetic, possibly contracted into multiply-adds, so the
# weights may differ by rounding. Tolerance = this margin times the per-parameter kernel's noise
# floor (its 3 steps with the gradients moved by 1-2 ulps); it must stay below the smallest fault
# the test exists for, a fused kernel that drops weight decay (the yardstick run below: 5.7e-4 of
# the weights' scale, 135x the tolerance on a 2-core AMD EPYC). On 5 emulated CPUs (AVX512, AVX2
# and no-SIMD ATen kernels, oneDNN at AVX2, 1 and 2 threads) fused and per-parameter SGD differed
# by at most 0.4x the floor; 10x covers a worse rounding draw.
_FUSED_SGD_MARGIN = 10.0


def test_fused_sgd_makes_the_same_update(one_torch_thread, noise_floor, scaled_gap):
    import dataclasses

    cfg = TrainConfig(model="resnet20", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    start = build_model("newton_cgnet10", num_classes=4, width=2).state_dict()

    def three_steps(fused, rel=0.0, config=cfg):
        model = build_model("newton_cgnet10", num_classes=4, width=2)
        model.load_state_dict(start)
        opt = make_optimizer(model, config, fused=fused)
        assert bool(opt.defaults.get("fused")) == fused
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g) * (1 + rel)
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    # Each parameter in units of its own largest entry; element-wise SGD has no reductions, so the
    # thread-count probe adds nothing and is left out.
    floor = noise_floor(lambda r: three_steps(False, r), scaled_gap, other_thread_count=False, at_least=1.2e-7)
    tol = _FUSED_SGD_MARGIN * floor
    plain = three_steps(False)
    yardstick = scaled_gap(three_steps(False, config=dataclasses.replace(cfg, weight_decay=0.0)), plain)
    assert tol < yardstick, f"noise floor {floor:.3g} too high to tell a lost weight decay ({yardstick:.3g})"
    gap = scaled_gap(three_steps(True), plain)
    assert gap <= tol, f"weights differ by {gap:.3g} of their scale; noise floor {floor:.3g}, tolerance {tol:.3g}"


def test_new_config_fields_are_validated():
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16', 'fp16'; got 'fp8'"):
        _config(precision="fp8")
    with pytest.raises(ValueError, match="on_nonfinite must be one of 'raise', 'stop'; got 'ignore'"):
        _config(on_nonfinite="ignore")
    with pytest.raises(ValueError, match="compile_mode must be one of 'default', 'reduce-overhead'"):
        _config(compile_mode="fast")
    with pytest.raises(ValueError, match="eval_every"):
        _config(eval_every=0)
    with pytest.raises(TypeError, match="channels_last must be True or False; got int 1"):
        _config(channels_last=1)
    with pytest.raises(ValueError, match="device must be a torch device string .* got 'gpu'"):
        _config(device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, data):
    with pytest.raises(ValueError, match=r"device 'cuda' was requested but torch.cuda.is_available\(\) is False"):
        train(_config(device="cuda"), tmp_path, progress=False, data=data)


def test_bf16_on_cpu_trains_or_says_why_not(tmp_path, data):
    cfg = _config(epochs=1, precision="bf16", channels_last=True)
    try:
        out = train(cfg, tmp_path, progress=False, data=data)
    except ValueError as exc:  # a CPU without bf16 kernels: the error must say what to use instead
        assert "precision='bf16' does not run on this CPU" in str(exc) and "use precision='fp32'" in str(exc)
    else:
        plain = train(_config(epochs=1), tmp_path / "fp32", progress=False, data=data)
        # bf16 keeps 8 mantissa bits: the first epoch's loss agrees with fp32 to ~1e-2, not exactly.
        assert out["metrics"][0]["loss"] == pytest.approx(plain["metrics"][0]["loss"], rel=5e-2)
        assert out["metrics"][0]["loss"] != plain["metrics"][0]["loss"]


def test_cli_seeds_make_one_run_directory_per_seed(tmp_path, capsys):
    from experiments.cli import main

    args = ["train", "resnest20", "--data", "synthetic", "--data-option", "n_train=64", "--data-option", "n_test=16",
            "--data-option", "num_classes=3", "--option", "width=2", "--epochs", "1", "--batch-size", "32",
            "--schedule", "onecycle", "--eval-every", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    assert main(args + ["--seeds", "0,2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0", "seed2"]
    cfgs = [RunDir(tmp_path / f"seed{s}").load_config() for s in (0, 2)]
    assert [c.seed for c in cfgs] == [0, 2] and cfgs[0].schedule == "onecycle" and cfgs[0].device == "cpu"
    assert all(RunDir(tmp_path / f"seed{s}").is_finished() for s in (0, 2))
    assert main(args + ["--seeds", "0,2"]) == 0 and "already finished" in capsys.readouterr().out
    assert main(args + ["--seeds", "0,x"]) == 2
    assert "--seeds '0,x': 'x' is not an integer; write distinct integers >= 0" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "single"), "--seed", "5"]) == 0
    assert RunDir(tmp_path / "single").load_config().seed == 5


def test_benchmark_smoke(tmp_path):
    from experiments.benchmarks.train_speed import main

    assert main(["--smoke", "--out", str(tmp_path), "--smoke-images", "256"]) == 0
    report = json.loads((tmp_path / "train_speed.json").read_text())
    parts = [r["part"] for r in report["results"]]
    assert parts == ["a", "b", "d"]
    assert report["results"][0]["ratio_vs_baseline"] == 1.0 and all(r["images_per_s"] > 0 for r in report["results"])
    assert (tmp_path / "train_speed.csv").read_text().startswith("part,variant,images_per_s,ratio_vs_baseline")
    assert "| part | variant | images/s |" in (tmp_path / "train_speed.md").read_text()
    assert (tmp_path / "tta_seed0" / "result.json").exists()


@needs_cuda
def test_cuda_fast_path_trains_and_resumes(tmp_path, data):
    cfg = _config(device="cuda", precision="bf16", channels_last=True, augment=True, schedule="onecycle", epochs=2)
    train(cfg, tmp_path / "a", progress=False, data=data)
    train(cfg, tmp_path / "b", progress=False, data=data, max_epochs_this_call=1)
    train(cfg, tmp_path / "b", progress=False, data=data)
    res = RunDir(tmp_path / "a").read_result()
    assert res["peak_gpu_memory_bytes"] > 0 and res["channels_last_applied"] and res["device"].startswith("cuda")
    sa, sb = RunDir(tmp_path / "a").load_checkpoint()["model"], RunDir(tmp_path / "b").load_checkpoint()["model"]
    # cuDNN autotuning may pick other kernels after a restart: bf16 runs agree closely, not bitwise.
    worst = max((sa[k].float().cpu() - sb[k].float().cpu()).abs().max().item() for k in sa if sa[k].is_floating_point())
    assert worst < 5e-2


@needs_cuda
def test_cuda_deterministic_runs_repeat_bitwise(tmp_path, data):
    cfg = _config(device="cuda", deterministic=True, epochs=1)
    train(cfg, tmp_path / "a", progress=False, data=data)
    train(cfg, tmp_path / "b", progress=False, data=data)
    sa, sb = RunDir(tmp_path / "a").load_checkpoint()["model"], RunDir(tmp_path / "b").load_checkpoint()["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.are_deterministic_algorithms_enabled()  # the flag is restored after the run


@needs_cuda
@pytest.mark.slow
def test_cuda_compiled_training_runs(tmp_path, data):
    for mode in ("default", "reduce-overhead"):
        cfg = _config(device="cuda", precision="bf16", channels_last=True, compile=True, compile_mode=mode, epochs=2)
        out = train(cfg, tmp_path / mode, progress=False, data=data)
        assert out["finished"] and all(r["loss"] == r["loss"] for r in out["metrics"])
        assert RunDir(tmp_path / mode).read_result()["compile_seconds_last_call"] > 0
