"""`blockaudit landscape` / `blockaudit curvature` end to end on a tiny 1-epoch run: files, reload, centre loss, errors."""
from __future__ import annotations

import json
import os
import re
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from analysis.probes.landscape import LandscapeResult
from experiments.cli import main
from experiments.runs.data import iterate_batches, load_dataset
from experiments.runs.probes import LandscapeConfig, run_landscape
from experiments.runs.store import TrainConfig, load_run
from experiments.runs.train import train

DATA_OPTS = {"seed": 0, "n_train": 96, "n_test": 32, "num_classes": 4, "noise": 60.0}
SAMPLES = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """resnet20 at width 2 (BatchNorm layers, so --bn matters), trained one epoch on synthetic data."""
    path = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="resnet20", dataset="synthetic", dataset_options=DATA_OPTS, model_options={"width": 2},
                      seed=0, epochs=1, lr=0.05, batch_size=32, schedule="cosine")
    train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def landscape_out(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("landscape")
    rc = main(["landscape", str(run), "--points", "3", "--samples", str(SAMPLES), "--chunk-size", "4",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    return out


def _own_loss(run_dir, samples: int, seed: int = 0) -> float:
    """The model's mean cross-entropy on the same seeded subset, by a plain eval-mode forward in float64."""
    model, config = load_run(run_dir)
    data = load_dataset(config.dataset, **config.dataset_options)
    idx = torch.randperm(data.train_labels.shape[0], generator=torch.Generator().manual_seed(seed))[:samples]
    (x, y), = list(iterate_batches(data.train_images[idx], data.train_labels[idx], samples, data.mean, data.std,
                                   dtype=torch.float64))
    with torch.no_grad():
        return float(F.cross_entropy(model.double()(x), y))


def test_landscape_writes_files_and_reloads(landscape_out, capsys):
    for name in ("landscape.npz", "landscape.json", "landscape.png", "landscape.md"):
        assert (landscape_out / name).stat().st_size > 0, name
    result = LandscapeResult.load(landscape_out / "landscape")
    assert result.shape == (3, 3) and result.complete
    np.testing.assert_allclose(result.alphas, [-1.0, 0.0, 1.0])
    assert result.bn == "eval" and result.num_samples == SAMPLES
    assert isinstance(result.meta["log_levels"], bool)
    meta = json.loads((landscape_out / "landscape.json").read_text())
    assert meta["directions"]["normalization"] == "filter" and meta["directions"]["seed"] == 0
    md = (landscape_out / "landscape.md").read_text()
    assert "landscape.png" in md and "centre" in md and "minimum on the grid" in md


def test_landscape_centre_equals_model_loss(landscape_out, run):
    """The grid's origin is the trained model itself: its loss equals a direct forward on the same images."""
    result = LandscapeResult.load(landscape_out / "landscape")
    # float32 forward vs float64 reference over a 24-image mean: rounding is ~1e-7 relative per
    # logit through ~20 layers, far inside the 1e-5 the issue asks for.
    assert result.loss[1, 1] == pytest.approx(_own_loss(run, SAMPLES), rel=1e-5)
    assert result.meta["centre_loss"] == pytest.approx(result.loss[1, 1], rel=1e-5)
    # a perturbation of the size of the weights must move the loss, or the grid is not around theta*
    assert np.ptp(result.loss) > 1e-3 * result.loss[1, 1]


def test_landscape_1d_recalibrate(run, tmp_path, capsys):
    rc = main(["landscape", str(run), "--dim", "1", "--points", "3", "--samples", "16", "--bn", "recalibrate",
               "--norm", "layer", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    result = LandscapeResult.load(tmp_path / "landscape.json")
    assert result.ndim == 1 and result.shape == (3,) and result.bn == "recalibrate"
    assert (tmp_path / "landscape.png").exists()
    assert "loss: centre" in capsys.readouterr().out


def test_run_landscape_is_library_code_without_the_cli(run, tmp_path):
    """The audit calls experiments.runs.probes with a typed config; the files are the CLI's."""
    result, files = run_landscape(LandscapeConfig(run_dir=run, dim=1, points=3, samples=8, out=tmp_path))
    assert [f.name for f in files] == ["landscape.md", "landscape.npz", "landscape.json", "landscape.png"]
    assert result.shape == (3,) and result.complete and result.meta["samples_seed"] == 0
    with pytest.raises(ValueError, match=r"--points must be >= 2"):
        LandscapeConfig(run_dir=run, points=1)


def test_curvature_writes_files(run, tmp_path):
    rc = main(["curvature", str(run), "--top-k", "2", "--lanczos-steps", "6", "--probes", "2", "--samples", "16",
               "--out", str(tmp_path)])
    assert rc == 0
    for name in ("curvature.json", "curvature.png", "curvature.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    s = json.loads((tmp_path / "curvature.json").read_text())
    top = s["top_eigenvalues"]
    assert len(top) == 2 and top[0] >= top[1]
    assert s["min_eigenvalue"] <= top[-1]
    assert np.isfinite(s["trace"]["value"]) and s["bn"] == "eval"
    assert s["loss"] == pytest.approx(_own_loss(run, 16), rel=1e-10)  # both float64, same images


def test_curvature_restricted_to_a_block(run, tmp_path):
    model, _ = load_run(run)
    name = next(n for n, m in model.named_modules() if n and any(True for _ in m.parameters()) and "." not in n)
    size = sum(p.numel() for p in dict(model.named_modules())[name].parameters())
    rc = main(["curvature", str(run), "--module", name, "--top-k", "1", "--lanczos-steps", "4", "--probes", "2",
               "--samples", "8", "--out", str(tmp_path)])
    assert rc == 0
    s = json.loads((tmp_path / "curvature.json").read_text())
    assert s["module"] == name and s["dim"] == size


def test_missing_run_dir_is_named(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    for cmd in ("landscape", "curvature"):
        assert main([cmd, str(missing)]) == 2
        err = capsys.readouterr().err
        assert str(missing) in err and "does not exist" in err


@pytest.mark.parametrize("args, match", [
    (["--points", "0"], r"--points must be >= 2 \(grid points per axis.*got 0"),
    (["--range", "0"], "--range"),
    (["--samples", "0"], "--samples"),
])
def test_landscape_rejects_bad_settings(run, tmp_path, capsys, args, match):
    assert main(["landscape", str(run), "--out", str(tmp_path), *args]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "landscape.npz").exists()


def test_curvature_rejects_bad_settings(run, tmp_path, capsys):
    assert main(["curvature", str(run), "--top-k", "5", "--lanczos-steps", "3", "--out", str(tmp_path)]) == 2
    assert "--lanczos-steps must be at least --top-k" in capsys.readouterr().err
    assert main(["curvature", str(run), "--module", "nope", "--out", str(tmp_path)]) == 2
    assert "submodule 'nope'" in capsys.readouterr().err


def test_bn_choice_cannot_be_dropped(run):
    """The CLI never evaluates without a BatchNorm choice: argparse rejects anything but the listed modes."""
    with pytest.raises(SystemExit):
        main(["landscape", str(run), "--bn", "train"])
    with pytest.raises(SystemExit):
        main(["landscape", str(run), "--dim", "3"])


def test_landscape_perturbed_bn_with_the_grouped_engine(run, landscape_out, tmp_path):
    out = tmp_path / "perturbed"
    rc = main(["landscape", str(run), "--points", "3", "--samples", str(SAMPLES), "--chunk-size", "4",
               "--bn", "perturbed", "--engine", "grouped", "--no-progress", "--out", str(out)])
    assert rc == 0
    res = LandscapeResult.load(out / "landscape")
    assert res.bn == "perturbed" and res.meta["engine"] == "grouped" and res.complete
    evald = LandscapeResult.load(landscape_out / "landscape")
    # same seed and grid: the centre is the deployed model either way (float32 sums: 1e-5);
    # elsewhere moving the BN statistics changes the loss
    assert res.loss[1, 1] == pytest.approx(evald.loss[1, 1], rel=1e-5)
    assert np.abs(res.loss / evald.loss - 1).max() > 1e-3


def _torchrun_like_worker(rank: int, world: int, port: int, run_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    rc = main(["landscape", run_dir, "--points", "3", "--samples", str(SAMPLES), "--chunk-size", "2",
               "--no-progress", "--out", out])
    assert rc == 0


def test_landscape_under_torchrun_shards_and_rank0_writes(run, landscape_out, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist"
    # the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR/PORT), in 2 spawned processes
    mp.spawn(_torchrun_like_worker, args=(2, port, str(run), str(out)), nprocs=2, join=True)
    res = LandscapeResult.load(out / "landscape")
    single = LandscapeResult.load(landscape_out / "landscape")
    assert res.meta["world_size"] == 2 and res.complete
    # float32, same points, different vmap chunking: a few ulps
    np.testing.assert_allclose(res.loss, single.loss, rtol=1e-5)
