"""Directions in parameter space around trained weights (Li et al. 2018, "Visualizing the loss
landscape of neural nets"; NRL Fig. 1).

``random_directions``, ``directions_to_models``, ``trajectory_pca_directions``: Gaussian directions
drawn from a seeded CPU generator (so a seed gives the same direction on any device), normalised per
parameter tensor against the weights:
``"filter"``  every filter d_i (slice along dim 0: a conv output channel, a linear row) is rescaled to
              ||theta_i|| (Li et al. eq. (1)); ``"layer"`` the whole tensor to ||theta||; ``"model"``
              the whole direction to the norm of the whole weight vector; ``"none"`` raw Gaussian.
1-D tensors (biases, BatchNorm weights and biases) follow ``ignore``: ``"biasbn"`` sets them to zero
(Li et al.'s default); ``"none"`` normalises each vector as one filter. The rescaling factor is
``||theta_i|| / ||d_i||`` where ``||d_i|| > 0`` and 0 otherwise, so an all-zero weight (a fresh
BatchNorm bias) gets a zero direction instead of a division by zero (loss-landscapes 3.0.6 raises
ZeroDivisionError there; Li et al.'s code copies theta into d). Entries for the BatchNorm running
statistics (``bn="perturbed"``): ``analysis.probes.landscape.batchnorm``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from analysis.probes.landscape.batchnorm import bn_statistics, is_statistic
from analysis.probes.landscape.result import jsonable
from analysis.validation import check_bool, check_choice, check_int

__all__ = [
    "NORMALIZATIONS",
    "IGNORE_CHOICES",
    "Direction",
    "Directions",
    "random_directions",
    "normalize_direction",
    "directions_to_models",
    "trajectory_pca_directions",
    "filter_norms",
    "check_module",
    "model_weights",
    "state_params",
    "check_direction",
]

NORMALIZATIONS = ("filter", "layer", "model", "none")
IGNORE_CHOICES = ("biasbn", "none")

Direction = dict  # parameter name -> tensor shaped like that parameter


def check_module(name: str, model) -> nn.Module:
    """``model`` itself when it is a ``torch.nn.Module``; a TypeError naming ``name`` otherwise."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(model).__name__}")
    return model


def model_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s parameters, detached: name -> tensor in ``named_parameters()`` order."""
    return {k: p.detach() for k, p in model.named_parameters()}


def state_params(name: str, source, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters named in ``reference`` taken from a model or a state dict, shapes checked.

    Moved to the device and dtype of the reference entries; ``name`` is the argument named in the errors.
    """
    if isinstance(source, nn.Module):
        values = dict(source.named_parameters())
        values.update({k: v for k, v in source.state_dict().items() if k not in values})
    elif isinstance(source, dict):
        values = source
    else:
        raise TypeError(f"{name} must be an nn.Module or a state dict; got {type(source).__name__}")
    missing = [k for k in reference if k not in values]
    if missing:
        raise ValueError(
            f"{name} does not match the model: it lacks {len(missing)} of its {len(reference)} parameters "
            f"(first: {missing[:3]}). Directions need two models of the same architecture."
        )
    bad = [(k, tuple(values[k].shape), tuple(v.shape)) for k, v in reference.items()
           if tuple(values[k].shape) != tuple(v.shape)]
    if bad:
        k, got, want = bad[0]
        raise ValueError(
            f"{name} does not match the model: parameter {k!r} has shape {got}, expected {want} "
            f"({len(bad)} mismatched). Directions need two models of the same architecture."
        )
    return {k: values[k].detach().to(device=v.device, dtype=v.dtype) for k, v in reference.items()}


def check_direction(name: str, direction, weights: dict[str, torch.Tensor],
                     statistics: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The parameter entries of ``direction`` (shapes checked); entries for BN statistics are allowed.

    ``weights`` are the model's parameters (``model_weights``), ``statistics`` its BatchNorm running
    statistics (``bn_statistics``); an entry the model lacks raises ValueError naming ``name``.
    """
    if not isinstance(direction, dict):
        raise TypeError(f"{name} must be a dict parameter name -> tensor; got {type(direction).__name__}")
    extra = [k for k in direction if k not in weights and k not in (statistics or {})]
    if extra:
        raise ValueError(
            f"{name} does not match the model: it has entries the model lacks (first: {extra[:3]}); "
            "it was probably built for another model"
        )
    return state_params(name, direction, weights)


def _safe_scale(target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    # target/current where current > 0, else 0: a zero weight slice yields a zero direction slice
    # rather than a division by zero, and a zero direction slice stays zero.
    positive = current > 0
    return torch.where(positive, target / torch.where(positive, current, torch.ones_like(current)),
                       torch.zeros_like(current))


def filter_norms(tensor: torch.Tensor) -> torch.Tensor:
    """Norms of the filters of ``tensor``: slices along dim 0 for 2-D and up, the whole vector otherwise."""
    if tensor.dim() <= 1:
        return tensor.reshape(-1).norm().reshape(1)
    return tensor.reshape(tensor.shape[0], -1).norm(dim=1)


def normalize_direction(direction: Direction, weights, normalization: str = "filter",
                        ignore: str = "biasbn") -> Direction:
    """Rescale ``direction`` against ``weights`` (a model or a name -> tensor dict); see the module docstring.

    Returns a new dict; the input is not modified. Li et al. (2018), Sec. 4, eq. (1) for "filter".
    Entries for BatchNorm running statistics (``bn_statistics``) are rescaled as one vector each to
    the norm of the statistic, whatever ``ignore`` says (``"none"`` normalisation leaves them raw).
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    if isinstance(weights, nn.Module):
        ref, stats = model_weights(weights), bn_statistics(weights)
    else:
        ref = {k: v.detach() for k, v in weights.items() if k in direction or not is_statistic(k)}
        stats = {k: ref.pop(k) for k in list(ref) if is_statistic(k) and k in direction}
    params = check_direction("direction", direction, ref, stats)
    out: dict[str, torch.Tensor] = {}
    for k, d in params.items():
        w = ref[k]
        if d.dim() <= 1 and ignore == "biasbn":
            out[k] = torch.zeros_like(d)
        elif normalization == "filter" or (normalization == "layer" and d.dim() <= 1):
            scale = _safe_scale(filter_norms(w), filter_norms(d))
            out[k] = d * scale.reshape(-1, *([1] * (d.dim() - 1))) if d.dim() > 1 else d * scale
        elif normalization == "layer":
            out[k] = d * _safe_scale(w.norm(), d.norm())
        else:
            out[k] = d.clone()
    if normalization == "model":
        kept = [k for k in out if not (out[k].dim() <= 1 and ignore == "biasbn")]
        w_norm = torch.sqrt(sum((ref[k].double() ** 2).sum() for k in kept)) if kept else torch.tensor(0.0)
        d_norm = torch.sqrt(sum((out[k].double() ** 2).sum() for k in kept)) if kept else torch.tensor(0.0)
        scale = _safe_scale(w_norm, d_norm)
        out = {k: v * scale.to(v.dtype) for k, v in out.items()}
    for k, d in direction.items():
        if k in stats:
            d = d.detach().to(device=stats[k].device, dtype=stats[k].dtype)
            out[k] = d.clone() if normalization == "none" else d * _safe_scale(stats[k].norm(), d.norm())
    return out


@dataclass
class Directions:
    """One or two directions in parameter space and how they were made.

    ``vectors`` are name -> tensor dicts shaped like the model's parameters; ``kind`` is
    ``"random"``, ``"model"`` (towards other models), ``"pca"`` (trajectory) or ``"given"``;
    ``info`` holds kind-specific facts (PCA explained variance and trajectory coordinates).
    """

    vectors: tuple
    kind: str
    normalization: str
    ignore: str
    seed: int | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = tuple(self.vectors)
        if len(self.vectors) not in (1, 2):
            raise ValueError(f"Directions needs 1 or 2 vectors (a 1-D or 2-D landscape); got {len(self.vectors)}")

    @classmethod
    def given(cls, *vectors: Direction, normalization: str = "none", ignore: str = "none") -> "Directions":
        """Wrap directions made elsewhere (e.g. injected from another tool) without changing them."""
        return cls(vectors, "given", normalization, ignore)

    def metadata(self) -> dict:
        """JSON-ready description (no tensors)."""
        return {"kind": self.kind, "normalization": self.normalization, "ignore": self.ignore,
                "seed": self.seed, "count": len(self.vectors), "info": jsonable(self.info)}

    def save(self, path) -> Path:
        """Save vectors and metadata with ``torch.save`` to ``path`` (suffix ``.pt`` added if missing)."""
        path = Path(path).with_suffix(".pt") if Path(path).suffix != ".pt" else Path(path)
        torch.save({"vectors": [{k: v.cpu() for k, v in d.items()} for d in self.vectors],
                    "meta": self.metadata()}, path)
        return path

    @classmethod
    def load(cls, path) -> "Directions":
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        meta = blob["meta"]
        return cls(tuple(blob["vectors"]), meta["kind"], meta["normalization"], meta["ignore"],
                   meta["seed"], meta["info"])


def random_directions(model: nn.Module, count: int = 2, *, seed: int = 0, normalization: str = "filter",
                      ignore: str = "biasbn", bn_statistics_too: bool = False) -> Directions:
    """``count`` (1 or 2) seeded Gaussian directions normalised against ``model``'s weights.

    The draws come from a CPU ``torch.Generator`` seeded with ``seed`` in the order of
    ``named_parameters()`` (all of d1, then all of d2), in the parameter's dtype, then move to the
    parameter's device, so a seed names the same direction on every device.
    ``bn_statistics_too=True`` adds entries for the BatchNorm running statistics (needed by
    ``bn="perturbed"``), drawn after all parameter entries, so the parameter part of a seed's
    directions is the same with or without them.
    """
    check_module("model", model)
    count = check_int("count", count, min_value=1, max_value=2)
    seed = check_int("seed", seed, min_value=0)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    check_bool("bn_statistics_too", bn_statistics_too)
    weights = model_weights(model)
    stats = bn_statistics(model) if bn_statistics_too else {}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    raws = []
    for _ in range(count):
        raws.append({k: torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device) for k, w in weights.items()})
    for raw in raws:
        raw.update({k: torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) for k, v in stats.items()})
    reference = {**weights, **stats}
    vectors = [normalize_direction(raw, reference, normalization, ignore) for raw in raws]
    info = {"bn_statistics": True} if stats else {}
    return Directions(tuple(vectors), "random", normalization, ignore, seed, info)


def directions_to_models(model: nn.Module, *others, normalization: str = "none",
                         ignore: str = "none", bn_statistics_too: bool = False) -> Directions:
    """Directions ``theta_other - theta_model`` towards one or two other models (or state dicts).

    With the default ``normalization="none"`` the coordinate 1 reaches the other model's
    parameters. Its BatchNorm running statistics are interpolated only with
    ``bn_statistics_too=True`` and ``bn="perturbed"`` (then coordinate 1 is the other model as
    deployed); otherwise use ``bn="recalibrate"`` to evaluate interpolations of BN models.
    """
    check_module("model", model)
    check_bool("bn_statistics_too", bn_statistics_too)
    if len(others) not in (1, 2):
        raise ValueError(f"directions_to_models needs 1 or 2 other models; got {len(others)}")
    weights = model_weights(model)
    stats = bn_statistics(model) if bn_statistics_too else {}
    reference = {**weights, **stats}
    vectors = []
    for i, other in enumerate(others):
        theta = state_params(f"others[{i}]", other, reference)
        d = {k: theta[k] - w for k, w in reference.items()}
        vectors.append(normalize_direction(d, reference, normalization, ignore) if normalization != "none"
                       or ignore != "none" else d)
    info = {"bn_statistics": True} if stats else {}
    return Directions(tuple(vectors), "model", normalization, ignore, None, info)


def trajectory_pca_directions(model: nn.Module, checkpoints: Sequence, *, ignore: str = "biasbn") -> Directions:
    """The first two principal directions of a training trajectory (Li et al. 2018, Sec. 7).

    Rows are ``theta_i - theta_final`` for every checkpoint (a model or state dict), with 1-D
    tensors zeroed when ``ignore="biasbn"``; the rows are centred and the two leading right
    singular vectors (float64 SVD) are the unit-norm directions. ``info`` holds
    ``explained_variance_ratio`` and ``trajectory`` (N x 2: each checkpoint's coordinates, its
    difference projected on the orthonormal directions; the final model is at the origin).
    """
    check_module("model", model)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    if not isinstance(checkpoints, Sequence) or len(checkpoints) < 2:
        n = len(checkpoints) if isinstance(checkpoints, Sequence) else type(checkpoints).__name__
        raise ValueError(f"checkpoints must be a sequence of at least 2 models or state dicts; got {n}")
    weights = model_weights(model)
    keys = [k for k, w in weights.items() if not (w.dim() <= 1 and ignore == "biasbn")]
    rows = []
    for i, ckpt in enumerate(checkpoints):
        theta = state_params(f"checkpoints[{i}]", ckpt, weights)
        rows.append(torch.cat([(theta[k] - weights[k]).reshape(-1).double().cpu() for k in keys]).numpy())
    diffs = np.stack(rows)
    centred = diffs - diffs.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ncomp = min(2, vt.shape[0])
    var = s ** 2
    ratio = (var[:ncomp] / var.sum()) if var.sum() > 0 else np.zeros(ncomp)
    comps = vt[:ncomp]
    coords = diffs @ comps.T
    vectors = []
    for c in comps:
        d, offset = {}, 0
        for k, w in weights.items():
            if k in keys:
                d[k] = torch.from_numpy(c[offset:offset + w.numel()].reshape(w.shape).copy()).to(w.device, w.dtype)
                offset += w.numel()
            else:
                d[k] = torch.zeros_like(w)
        vectors.append(d)
    info = {"explained_variance_ratio": ratio.tolist(), "trajectory": coords.tolist()}
    return Directions(tuple(vectors), "pca", "none", ignore, None, info)

