"""Results of a landscape: loss and accuracy on the grid, with how they were made.

``LandscapeResult`` carries loss, accuracy, coordinates, the direction metadata (kind, seed,
normalisation, ignore) and the BatchNorm choice; ``save``/``load`` write ``.npz`` + ``.json``.
Long grids resume from a partial result (points holding NaN are evaluated), can checkpoint after
every chunk, and can be sharded across processes (``shard=(rank, world_size)``, merged with
``merge_landscapes``; ``distributed=True`` gathers the shards with ``all_gather_result``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch.distributed as dist

__all__ = ["LandscapeResult", "merge_landscapes", "new_result", "all_gather_result", "jsonable"]


def jsonable(obj):
    """``obj`` with numpy arrays and scalars turned into lists and Python numbers, keys into strings (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


@dataclass
class LandscapeResult:
    """Loss and accuracy on a 1-D or 2-D grid; ``loss[i, j]`` is at ``(alphas[i], betas[j])``.

    Points not evaluated yet (a partial or sharded run) hold NaN. ``directions`` is the
    ``Directions.metadata()`` dict (kind, seed, normalization, ignore); ``bn`` the BatchNorm choice
    (``"none"`` for a model without BatchNorm); ``meta`` anything else worth keeping.
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray
    directions: dict
    bn: str
    num_samples: int
    loss_name: str = "cross_entropy"
    meta: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return 1 if self.betas is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.loss.shape)

    @property
    def complete(self) -> bool:
        return bool(np.all(np.isfinite(self.loss)))

    def save(self, path) -> tuple[Path, Path]:
        """Write ``PATH.npz`` (arrays) and ``PATH.json`` (metadata); returns both paths."""
        base = Path(path)
        base = base.with_suffix("") if base.suffix in (".npz", ".json") else base
        npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        arrays = {"alphas": self.alphas, "loss": self.loss, "accuracy": self.accuracy}
        if self.betas is not None:
            arrays["betas"] = self.betas
        tmp = npz.with_name(npz.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, npz)
        meta = {"directions": self.directions, "bn": self.bn, "num_samples": self.num_samples,
                "loss_name": self.loss_name, "meta": self.meta, "shape": list(self.shape)}
        js.write_text(json.dumps(jsonable(meta), indent=2, sort_keys=True))
        return npz, js

    @classmethod
    def load(cls, path) -> "LandscapeResult":
        """Read a result written by ``save`` (give the path with or without suffix)."""
        base = Path(path)
        base = base.with_suffix("") if base.suffix in (".npz", ".json") else base
        npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        for p in (npz, js):
            if not p.exists():
                raise FileNotFoundError(f"no landscape result at {p} (save() writes PATH.npz and PATH.json)")
        meta = json.loads(js.read_text())
        with np.load(npz) as z:
            betas = z["betas"] if "betas" in z.files else None
            return cls(z["alphas"], betas, z["loss"], z["accuracy"], meta["directions"], meta["bn"],
                       int(meta["num_samples"]), meta["loss_name"], meta["meta"])


def merge_landscapes(results: Sequence[LandscapeResult]) -> LandscapeResult:
    """Combine shards (or partial runs) of the same grid: each point from the result that holds it."""
    if not results:
        raise ValueError("merge_landscapes needs at least one result")
    first = results[0]
    loss, acc = first.loss.copy(), first.accuracy.copy()
    for i, r in enumerate(results[1:], start=1):
        same = (r.loss.shape == first.loss.shape and np.array_equal(r.alphas, first.alphas)
                and ((r.betas is None and first.betas is None)
                     or (r.betas is not None and first.betas is not None and np.array_equal(r.betas, first.betas))))
        if not same:
            raise ValueError(f"results[{i}] is on another grid (shape {r.loss.shape} vs {first.loss.shape} "
                             "or different coordinates); only shards of one grid can be merged")
        take = np.isfinite(r.loss) & ~np.isfinite(loss)
        loss[take], acc[take] = r.loss[take], r.accuracy[take]
    meta = dict(first.meta)
    meta.pop("shard", None)
    return LandscapeResult(first.alphas, first.betas, loss, acc, first.directions, first.bn,
                           first.num_samples, first.loss_name, meta)


def new_result(alphas, betas, directions, bn_mode, num_samples, loss_name, meta) -> LandscapeResult:
    """An all-NaN result on the grid ``alphas`` (x ``betas``): every point still to be evaluated."""
    shape = (alphas.size,) if betas is None else (alphas.size, betas.size)
    return LandscapeResult(alphas, betas, np.full(shape, np.nan), np.full(shape, np.nan),
                           directions.metadata(), bn_mode, num_samples, loss_name, meta)


def all_gather_result(result: LandscapeResult) -> LandscapeResult:
    """Every rank's shard gathered (``all_gather_object``) and merged: the full grid on every rank."""
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, (result.loss, result.accuracy))
    parts = [LandscapeResult(result.alphas, result.betas, loss, acc, result.directions, result.bn,
                             result.num_samples, result.loss_name, dict(result.meta)) for loss, acc in shards]
    merged = merge_landscapes(parts)
    merged.meta["world_size"] = len(shards)
    return merged
