"""Data-parallel training (2 CPU processes, Gloo) equals the one-process run.

The two ranks are started as `python -m experiments.cli train ...` with the variables torchrun
sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so the command-line path under
torchrun is what is tested; the one-process run is `train()` in this process.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.runs.data import iterate_batches, load_dataset
from experiments.runs.distributed import DistContext, GlobalBatchNorm, convert_batchnorm
from experiments.runs.store import RunDir, TrainConfig
from experiments.runs.train import train

REPO = Path(__file__).resolve().parents[1]
# 161 = 2 x 64 + 33: the last global batch splits unevenly (17 + 16), which the loss scaling must handle.
DATA = {"seed": 0, "n_train": 161, "n_test": 64, "num_classes": 4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config() -> TrainConfig:
    return TrainConfig(model="resnest20", dataset="synthetic", dataset_options=DATA, model_options={"width": 4},
                       seed=3, epochs=2, lr=0.02, batch_size=64, schedule="onecycle", augment=True,
                       label_smoothing=0.1, device="cpu")


def _cli_args(cfg: TrainConfig, out: Path) -> list[str]:
    args = [sys.executable, "-m", "experiments.cli", "train", cfg.model, "--data", cfg.dataset, "--out", str(out),
            "--epochs", str(cfg.epochs), "--lr", str(cfg.lr), "--batch-size", str(cfg.batch_size),
            "--schedule", cfg.schedule, "--label-smoothing", str(cfg.label_smoothing), "--seed", str(cfg.seed),
            "--device", "cpu", "--no-progress"]
    args += ["--augment"] if cfg.augment else []
    for k, v in cfg.dataset_options.items():
        args += ["--data-option", f"{k}={v}"]
    for k, v in cfg.model_options.items():
        args += ["--option", f"{k}={v}"]
    return args


def _run_two_ranks(cfg: TrainConfig, out: Path) -> None:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONWARNINGS": "ignore"}
        procs.append(subprocess.Popen(_cli_args(cfg, out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)


# Float-noise probes: the one-process run again with the normalisation mean moved by 1 and 2 ulps
# (relative 2^-23, 2^-22; 2^-24 rounds away) and with 2 torch threads. Each differs from the
# reference only by rounding, as the two-process run does (per-rank sums), so the largest gap they
# show is this machine's noise floor for these 6 SGD steps (7.0e-5 on a 2-core AMD EPYC, AVX512).
_NOISE_ULPS = (2.0 ** -23, 2.0 ** -22)
# How far above the noise floor the data-parallel run may land. A real fault (one rank's data only,
# local BatchNorm statistics, an unscaled uneven last batch) changes the gradient by O(1) relative
# and the weights by 1e-3 or more; the yardstick run below (lr 1% off, a fault far smaller than any
# of those) moved them by 9.1e-4 here, 13x the floor, so 5x the floor still catches it.
_NOISE_MARGIN = 5.0


def _max_gap(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def _metric_gap(ra: list[dict], rb: list[dict], key: str) -> float:
    return max(abs(x[key] - y[key]) for x, y in zip(ra, rb))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("ddp")
    cfg = _config()
    _run_two_ranks(cfg, root / "ddp")
    data = load_dataset("synthetic", **DATA)
    train(cfg, root / "single", progress=False, data=data, dist=DistContext())
    noise = []
    for i, rel in enumerate(_NOISE_ULPS):
        shifted = dataclasses.replace(data, mean=data.mean * (1.0 + rel))
        train(cfg, root / f"noise{i}", progress=False, data=shifted, dist=DistContext())
        noise.append(RunDir(root / f"noise{i}"))
    torch.set_num_threads(2)
    try:
        train(cfg, root / "noise_threads", progress=False, data=data, dist=DistContext())
    finally:
        torch.set_num_threads(1)
    noise.append(RunDir(root / "noise_threads"))
    train(dataclasses.replace(cfg, lr=cfg.lr * 1.01), root / "fault", progress=False, data=data, dist=DistContext())
    return RunDir(root / "single"), RunDir(root / "ddp"), noise, RunDir(root / "fault")


def test_two_processes_train_the_one_process_model(runs):
    single, ddp, noise, fault = runs
    a, b = single.load_checkpoint()["model"], ddp.load_checkpoint()["model"]
    assert set(a) == set(b), "the data-parallel checkpoint must load into the plain model"
    # Tolerance from the noise floor measured above (see _NOISE_MARGIN). float32 eps (1.2e-7) is a
    # floor under the floor: a machine whose probes all round to identical weights still gets a
    # tolerance of ~100 ulps of an O(1) weight.
    floor = max([_max_gap(a, r.load_checkpoint()["model"]) for r in noise] + [1.2e-7])
    tol = _NOISE_MARGIN * floor
    yardstick = _max_gap(a, fault.load_checkpoint()["model"])
    assert tol < yardstick, (f"noise floor {floor:.3g} too high for this test to catch a 1% lr error "
                             f"({yardstick:.3g}); the comparison would be meaningless on this machine")
    worst = _max_gap(a, b)
    assert worst <= tol, f"weights differ by up to {worst:.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"
    assert torch.equal(a[[k for k in a if k.endswith("num_batches_tracked")][0]],
                       b[[k for k in b if k.endswith("num_batches_tracked")][0]])
    rows_a, rows_b = single.read_metrics(), ddp.read_metrics()
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b] == [1, 2]
    for key in ("lr", "loss", "acc", "test_loss", "test_acc"):
        # Same reasoning per metric. Accuracies move in steps of one image when a logit near a tie
        # crosses, which rounding alone can cause: their floor is at least one image.
        one_image = {"acc": 1 / DATA["n_train"], "test_acc": 1 / DATA["n_test"]}.get(key, 0.0)
        m_floor = max([_metric_gap(rows_a, r.read_metrics(), key) for r in noise] + [1e-7, one_image])
        m_tol = _NOISE_MARGIN * m_floor
        assert _metric_gap(rows_a, rows_b, key) <= m_tol, (key, _metric_gap(rows_a, rows_b, key), m_tol)


def test_only_rank_zero_writes_and_records_the_world_size(runs):
    _, ddp, _, _ = runs
    assert sorted(p.name for p in ddp.path.iterdir()) == ["checkpoint.pt", "config.json", "environment.json",
                                                          "metrics.csv", "result.json"]
    assert ddp.read_result()["world_size"] == 2
    assert RunDir(ddp.path).load_config() == _config()


def test_shards_of_a_batch_are_the_one_process_batch():
    data = load_dataset("synthetic", seed=1, n_train=37, n_test=8, num_classes=3)

    def batches(shard):
        return list(iterate_batches(data.train_images, data.train_labels, 16, data.mean, data.std, shuffle=True,
                                    generator=torch.Generator().manual_seed(4), augment=True, pad_mode="zero",
                                    shard=shard))

    whole = batches(None)
    parts = [batches((r, 3)) for r in range(3)]
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
    assert [p[-1][0].shape[0] for p in parts] == [2, 2, 1]  # 5 = 2 + 2 + 1, as torch.tensor_split
    with pytest.raises(ValueError, match=r"shard must be \(rank, world_size\) with 0 <= rank < world_size; got \(3, 3\)"):
        next(iterate_batches(data.train_images, data.train_labels, 16, data.mean, data.std, shard=(3, 3)))


def test_global_batchnorm_is_batchnorm_outside_a_process_group():
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    converted = convert_batchnorm(copy.deepcopy(bn), torch.device("cpu"))
    assert isinstance(converted[1], GlobalBatchNorm)
    x = torch.randn(8, 3, 5, 5)
    assert torch.equal(bn(x), converted(x))


def test_torchrun_environment_is_read_and_checked():
    assert DistContext.from_env({}) == DistContext()
    ctx = DistContext.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ctx.enabled and not ctx.is_main and ctx.device("cuda") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="inconsistent torchrun environment: RANK=2, WORLD_SIZE=2"):
        DistContext.from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
