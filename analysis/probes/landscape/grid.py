"""The grid of a landscape: coordinates, their row-major order, and the shard a process evaluates.

``loss[i]`` is at ``alphas[i]``; in 2-D ``loss[i, j]`` is at ``(alphas[i], betas[j])`` for grids of
any shape (the Li et al. scripts scramble non-square grids). The points are flattened row-major
(``grid_points``), cut into chunks, and each chunk goes through the chosen engine.

Distributed (``distributed=True`` of ``loss_landscape``): rank and world size come from the
initialised ``torch.distributed`` process group (``process_group_shard``); each rank evaluates the
flat points ``p % world == rank`` (``shard_points``) and the shards are all-gathered
(``all_gather_object``), so every rank returns the full grid. ``blockaudit landscape`` joins the
group itself when started by ``torchrun``.
"""
from __future__ import annotations

import numpy as np
import torch.distributed as dist

from analysis.validation import as_vector, check_int, check_real

__all__ = ["grid_axis", "check_axis", "grid_points", "shard_points", "process_group_shard"]


def grid_axis(start: float, stop: float, num: int) -> np.ndarray:
    """``num`` evenly spaced coordinates from ``start`` to ``stop`` inclusive (``np.linspace``)."""
    start = check_real("start", start)
    stop = check_real("stop", stop)
    num = check_int("num", num, min_value=1)
    return np.linspace(start, stop, num)


def check_axis(name: str, values) -> np.ndarray:
    """``values`` as a float64 vector of grid coordinates; an empty or missing axis raises ValueError
    naming ``name``."""
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64)) if values is not None else None
    if arr is None or arr.size == 0:
        raise ValueError(f"{name} must have at least one grid point; got a grid of size 0. "
                         f"Use e.g. grid_axis(-1, 1, 21).")
    return as_vector(name, arr)


def grid_points(alphas: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
    """The grid's coordinates, one row per point in row-major order: (N, 1) in 1-D, (N, 2) in 2-D."""
    if betas is None:
        return alphas[:, None]
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def shard_points(num_points: int, shard) -> np.ndarray:
    """The flat indices a process evaluates: all of them, or those ``p`` with ``p % world_size == rank``
    for ``shard=(rank, world_size)``."""
    todo = np.arange(num_points)
    if shard is None:
        return todo
    if not (isinstance(shard, (tuple, list)) and len(shard) == 2):
        raise TypeError(f"shard must be a (rank, world_size) pair; got {shard!r}")
    world = check_int("shard world_size", shard[1], min_value=1)
    rank = check_int("shard rank", shard[0], min_value=0, max_value=world - 1)
    return todo[todo % world == rank]


def process_group_shard() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` process group; RuntimeError without one."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group (call "
            "torch.distributed.init_process_group, e.g. in a script started by torchrun); none is initialised")
    return dist.get_rank(), dist.get_world_size()
