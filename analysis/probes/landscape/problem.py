"""The validated inputs of one landscape evaluation (``Problem``) and the parameters at grid points.

``prepare`` checks the model, directions, grid, BatchNorm choice and data once, for every engine;
``moved`` gives ``theta* + alpha d1 (+ beta d2)`` for a chunk of points with a leading point dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from analysis.probes.batches import as_batches, per_sample_cross_entropy
from analysis.probes.landscape.batchnorm import bn_statistics, resolve_bn
from analysis.probes.landscape.directions import Directions, check_direction, check_module, model_weights, state_params
from analysis.probes.landscape.grid import check_axis

__all__ = ["LossFn", "Problem", "prepare", "loss_name", "moved", "moved_statistics"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """Validated inputs of one landscape evaluation."""

    alphas: np.ndarray
    betas: np.ndarray | None
    bn_mode: str
    weights: dict
    vectors: list
    statistics: dict
    statistic_vectors: list
    batches: list
    recal: list | None
    loss: LossFn

    @property
    def num_samples(self) -> int:
        return sum(int(x.shape[0]) for x, _ in self.batches)


def prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn) -> Problem:
    """Validate the inputs of ``loss_landscape`` / ``loss_landscape_reference`` (their errors) into a ``Problem``."""
    check_module("model", model)
    if not isinstance(directions, Directions):
        raise TypeError(f"directions must be a Directions (from random_directions, directions_to_models, "
                        f"trajectory_pca_directions or Directions.given); got {type(directions).__name__}")
    alphas = check_axis("alphas", alphas)
    if len(directions.vectors) == 2:
        if betas is None:
            raise ValueError("directions has 2 vectors, so a 2-D grid needs betas; pass betas or use 1 direction")
        betas = check_axis("betas", betas)
    elif betas is not None:
        raise ValueError("betas given but directions has only 1 vector; draw 2 directions for a 2-D grid")
    bn_mode = resolve_bn(model, bn)
    weights = model_weights(model)
    if not weights:
        raise ValueError("model has no parameters; there is no landscape to draw")
    device_type = next(iter(weights.values())).device.type
    if torch.is_autocast_enabled(device_type):
        # Inside one autocast region torch caches the low-precision copy of every weight; grid points
        # set weights in place, so every point would reuse the first point's copy (seen: a 3x3 grid
        # with nine equal losses). Reduced precision goes through ``precision=`` instead.
        raise RuntimeError(f"loss_landscape was called inside a torch.autocast({device_type!r}) region, where "
                           "autocast's weight cache would give every grid point the first point's weights; call it "
                           "outside autocast and pass precision='float16' or 'bfloat16' for reduced precision")
    stats = bn_statistics(model)
    vectors = [check_direction(f"directions.vectors[{i}]", d, weights, stats)
               for i, d in enumerate(directions.vectors)]
    stat_vectors: list = []
    if bn_mode == "perturbed":
        for i, d in enumerate(directions.vectors):
            missing = [k for k in stats if k not in d]
            if missing:
                raise ValueError(
                    f"bn='perturbed' moves the BatchNorm running statistics along the directions, but "
                    f"directions.vectors[{i}] has no entries for {len(missing)} of them (first: {missing[0]!r}); "
                    "draw them with random_directions(..., bn_statistics_too=True) or "
                    "directions_to_models(..., bn_statistics_too=True)")
            stat_vectors.append(state_params(f"directions.vectors[{i}]", {k: d[k] for k in stats}, stats))
    ref = next(iter(weights.values()))
    batches = as_batches("data", data, ref.device, ref.dtype)
    recal = None
    if bn_mode == "recalibrate":
        recal = batches if recalibration_data is None else as_batches(
            "recalibration_data", recalibration_data, ref.device, ref.dtype)
    return Problem(alphas, betas, bn_mode, weights, vectors, stats, stat_vectors, batches, recal,
                   loss_fn or per_sample_cross_entropy)


def loss_name(loss_fn) -> str:
    """The name a result records for ``loss_fn`` (``"cross_entropy"`` for the default)."""
    return "cross_entropy" if loss_fn is None else getattr(loss_fn, "__name__", type(loss_fn).__name__)


def moved(base: dict, vectors: list, coeff: torch.Tensor, names=None) -> dict:
    """``base[k] + sum_i coeff[:, i] * vectors[i][k]`` for every point: tensors with a leading point dim."""
    out = {}
    for k in (names or base):
        w = base[k]
        view = (-1,) + (1,) * w.dim()
        p = w.unsqueeze(0) + coeff[:, 0].reshape(view).to(w.dtype) * vectors[0][k].unsqueeze(0)
        if len(vectors) == 2:
            p = p + coeff[:, 1].reshape(view).to(w.dtype) * vectors[1][k].unsqueeze(0)
        out[k] = p
    return out


def moved_statistics(problem: Problem, coeff: torch.Tensor) -> dict:
    """The BatchNorm running statistics at every point of ``coeff`` (``bn="perturbed"``), variances clamped at 0."""
    # A variance moved below zero is clamped at zero (the layer then divides by sqrt(eps)): the
    # statistic stays a variance, and the loss there is large but finite instead of NaN.
    stats = moved(problem.statistics, problem.statistic_vectors, coeff)
    return {k: v.clamp(min=0) if k.endswith("running_var") else v for k, v in stats.items()}
