"""``loss_landscape(..., distributed=True)`` with 2 gloo processes on the CPU: the gathered grid is the 1-process grid."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from analysis.probes.landscape import grid_axis, loss_landscape, random_directions


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).double().eval()
    gen = torch.Generator().manual_seed(1)
    data = (torch.randn(6, 3, 6, 6, generator=gen, dtype=torch.float64), torch.randint(0, 5, (6,), generator=gen))
    return model, random_directions(model, 2, seed=2), data, grid_axis(-1, 1, 3), grid_axis(-1, 1, 4)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, dirs, data, alphas, betas = _setup()
        res = loss_landscape(model, dirs, data, alphas, betas, distributed=True, chunk_size=2)
        np.save(os.path.join(out_dir, f"loss{rank}.npy"), res.loss)
        np.save(os.path.join(out_dir, f"acc{rank}.npy"), res.accuracy)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_gather_the_one_process_grid(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model, dirs, data, alphas, betas = _setup()
    single = loss_landscape(model, dirs, data, alphas, betas)
    for rank in range(2):
        loss = np.load(tmp_path / f"loss{rank}.npy")
        assert np.isfinite(loss).all()  # every rank holds the full grid, not its shard
        # float64, same code on the same CPU; only the vmap chunking differs: ~1e-16 apart
        np.testing.assert_allclose(loss, single.loss, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(np.load(tmp_path / f"acc{rank}.npy"), single.accuracy)


def test_distributed_without_a_process_group_raises():
    model, dirs, data, alphas, betas = _setup()
    with pytest.raises(RuntimeError, match="distributed=True needs an initialised torch.distributed process group"):
        loss_landscape(model, dirs, data, alphas, betas, distributed=True)
    with pytest.raises(ValueError, match="either shard=.* or distributed=True"):
        loss_landscape(model, dirs, data, alphas, betas, distributed=True, shard=(0, 2))
