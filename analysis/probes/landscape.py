"""Loss landscapes around trained weights: directions, batched grid evaluation, plots.

A landscape is the loss (and accuracy) on given data at theta* + alpha d1 (1-D) or
theta* + alpha d1 + beta d2 (2-D), where theta* are the trained parameters and d1, d2 directions
in parameter space (Li et al. 2018, "Visualizing the loss landscape of neural nets"; NRL Fig. 1).

Directions (``random_directions``, ``directions_to_models``, ``trajectory_pca_directions``)
    Gaussian directions drawn from a seeded CPU generator (so a seed gives the same direction on
    any device), normalised per parameter tensor against the weights:
    ``"filter"``  every filter d_i (slice along dim 0: a conv output channel, a linear row) is
                  rescaled to ||theta_i|| (Li et al. eq. (1)); ``"layer"`` the whole tensor to
                  ||theta||; ``"model"`` the whole direction to the norm of the whole weight
                  vector; ``"none"`` raw Gaussian.
    1-D tensors (biases, BatchNorm weights and biases) follow ``ignore``: ``"biasbn"`` sets them to
    zero (Li et al.'s default); ``"none"`` normalises each vector as one filter. The rescaling
    factor is ``||theta_i|| / ||d_i||`` where ``||d_i|| > 0`` and 0 otherwise, so an all-zero
    weight (a fresh BatchNorm bias) gets a zero direction instead of a division by zero
    (loss-landscapes 3.0.6 raises ZeroDivisionError there; Li et al.'s code copies theta into d).

Grids (``loss_landscape``)
    ``loss[i]`` is at ``alphas[i]``; in 2-D ``loss[i, j]`` is at ``(alphas[i], betas[j])`` for
    grids of any shape (the Li et al. scripts scramble non-square grids). The points are flattened
    row-major, cut into chunks, and each chunk of K points goes through ONE batched forward:
    ``torch.func.vmap`` over K parameter vectors of ``torch.func.functional_call``. The model is
    never modified: the evaluation runs on a deep copy in eval mode (dropout off).

BatchNorm is an explicit choice, ``bn``:
    ``"eval"``         the trained running statistics at every point (the model as deployed);
    ``"recalibrate"``  at every point the statistics PyTorch would hold after
                       ``reset_running_stats()``, ``momentum=None`` and a train-mode pass over
                       ``recalibration_data`` (per-batch mean and unbiased variance, averaged with
                       equal weight per batch), then evaluation with them.
    A model in train mode that has BatchNorm layers and no ``bn`` raises: its output would depend
    on the batch, and silently choosing either mode changes the picture. A model in eval mode
    defaults to ``"eval"``. Models with ``track_running_stats=False`` always use batch statistics.

    How BatchNorm runs under vmap: in the deep copy every ``_BatchNorm`` is replaced by a module
    with the same parameter and buffer names whose forward is the explicit affine form
    ``(x - mean) * rsqrt(var + eps) * weight + bias`` (a *functional form*, not folded into the
    convolutions: folding would need the conv that precedes each BN, and the pre-activation blocks
    of the zoo put BN *before* their convs). This runs under vmap on every backend (cuDNN's
    BatchNorm raises "NYI: querying is_contiguous inside of vmap"), and its ``"collect"`` mode
    returns the batch statistics that ``"recalibrate"`` needs as ordinary outputs of the vmapped
    function, so recalibration is batched over grid points too.

    ``"perturbed"``    the running statistics move with the weights: directions carry entries for
                       every ``running_mean`` / ``running_var`` (``random_directions(...,
                       bn_statistics_too=True)``), and a point uses ``stat + alpha d1 + beta d2``.
                       Choice: each statistic's direction is a Gaussian vector rescaled as ONE vector
                       to the statistic's norm (the 1-D rule of ``ignore="none"``), whatever
                       ``ignore`` says for the parameters, because zeroing them (``"biasbn"``) would
                       make the mode identical to ``"eval"``; a moved variance below zero is clamped
                       at 0 (the layer then divides by sqrt(eps): a large but finite loss, not NaN).
                       The statistics are drawn after all parameter entries, so a seed's parameter
                       directions are the same with or without them.

Engines (``engine=``): ``"auto"`` (the default) is ``"sequential"`` on a CPU in float32 and otherwise
``"grouped"`` where the model can be traced and ``"vmap"`` where not, silently (the result's
``meta["engine"]`` says which ran); ``"sequential"`` evaluates one point at a time with the model's
own layers (``_PointEvaluator``, shared with ``loss_landscape_reference``; on 2 CPU cores it is the
fastest, with channels_last 1.26x loss-landscapes where vmap reaches 0.46x); ``"vmap"`` is the
exact path above; ``"grouped"`` (``GroupedForward``) runs the K points of a chunk as ONE network
with K-fold channels (convs become grouped convs with the K weight sets stacked, eval BatchNorm a
per-channel affine, the final Linear a batched matmul),
optionally in bfloat16/float16, channels_last and ``torch.compile``d on CUDA; models it cannot
trace (channel concatenation, ...) and ``bn="recalibrate"`` fall back to vmap with a warning that
names the reason. ``"compiled"`` is ``torch.compile`` of the vmap path (autocast for reduced
precision). Chunks of the fast engines are padded to a fixed size (one compilation). Measured on
an H200 (ResNet-20, 1,024 images, 21x21; experiments/benchmarks/landscape_speed.py): vmap float32
145 points/s, grouped float32 compiled 342, grouped bfloat16 479 (max rel. loss error 1e-2),
compiled vmap bfloat16 604 (7e-3) with one compiled bfloat16 forward at 1.7 ms; float16 overflowed
to NaN far from the minimum there. Such points are now evaluated again in float32 with the model's
own layers (their flat indices in ``meta["float32_fallback_points"]``), so a reduced-precision grid
never holds an overflow hole. Accuracy per point (experiments/benchmarks/precision_probe.py, CPU,
JPEG CIFAR-10, 64 images, a briefly trained ResNet-20, 7x7, losses >= 1e-2): float16 median relative
error 2.3e-4, max 2.0e-3 (89% of points within 1e-3); bfloat16 median 2.3e-3, max 2.4e-2 (33%).
Neither meets 1e-3 everywhere; float16 comes within 2x of it, bfloat16 within 24x.

Distributed (``distributed=True``): rank and world size come from the initialised
``torch.distributed`` process group; each rank evaluates the flat points ``p % world == rank``
and the shards are all-gathered (``all_gather_object``), so every rank returns the full grid.
``blockaudit landscape`` joins the group itself when started by ``torchrun``.

``loss_landscape_reference`` evaluates the same grid one point at a time on a copy of the
unmodified model with its own nn.BatchNorm layers (recalibrating by PyTorch's own running-stat
update): the independent reference the tests compare against, and the "sequential evaluator"
of the benchmarks.

Results (``LandscapeResult``) carry loss, accuracy, coordinates, the direction metadata (kind,
seed, normalisation, ignore) and the BatchNorm choice; ``save``/``load`` write ``.npz`` + ``.json``.
Long grids resume from a partial result (points holding NaN are evaluated), can checkpoint after
every chunk, and can be sharded across processes (``shard=(rank, world_size)``, merged with
``merge_landscapes``).

Comparing with loss-landscapes (tests/test_landscape_compare.py and the benchmark): inject the same direction into its
``random_plane`` by evaluating ours with ``directions=Directions.given(...)`` built from the
direction it draws (after its own normalisation, on a model whose every normalised vector is
nonzero, e.g. after one training step), on the same data and grid; its grid starts at the corner
and steps with a zig-zag on alternate rows, so compare against our value at the matching
coordinates, not by array position.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from analysis.validation import as_vector, check_bool, check_choice, check_int, check_real

__all__ = [
    "NORMALIZATIONS",
    "IGNORE_CHOICES",
    "BN_CHOICES",
    "ENGINES",
    "PRECISIONS",
    "Directions",
    "bn_statistics",
    "random_directions",
    "normalize_direction",
    "directions_to_models",
    "trajectory_pca_directions",
    "filter_norms",
    "resolve_bn",
    "grid_axis",
    "LandscapeResult",
    "loss_landscape",
    "loss_landscape_reference",
    "merge_landscapes",
    "auto_chunk_size",
    "GroupedForward",
    "GroupedUnsupported",
    "plot_contour",
    "plot_curve",
    "plot_side_by_side",
    "save_figure",
]

NORMALIZATIONS = ("filter", "layer", "model", "none")
IGNORE_CHOICES = ("biasbn", "none")
BN_CHOICES = ("eval", "recalibrate", "perturbed")
ENGINES = ("auto", "vmap", "sequential", "grouped", "compiled")
PRECISIONS = ("float32", "bfloat16", "float16")

Direction = dict  # parameter name -> tensor shaped like that parameter
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# parameters and directions
# ----------------------------------------------------------------------------------------------

def _check_module(name: str, model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(model).__name__}")
    return model


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in model.named_parameters()}


def bn_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm running statistics of ``model``: ``"<layer>.running_mean"`` / ``".running_var"`` -> tensor.

    The buffers that ``bn="perturbed"`` moves along the directions (layers with
    ``track_running_stats=False`` have none).
    """
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
            prefix = f"{name}." if name else ""
            out[prefix + "running_mean"] = m.running_mean.detach()
            out[prefix + "running_var"] = m.running_var.detach()
    return out


def _state_params(name: str, source, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters named in ``reference`` taken from a model or a state dict, shapes checked."""
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


def _check_direction(name: str, direction, weights: dict[str, torch.Tensor],
                     statistics: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The parameter entries of ``direction`` (shapes checked); entries for BN statistics are allowed."""
    if not isinstance(direction, dict):
        raise TypeError(f"{name} must be a dict parameter name -> tensor; got {type(direction).__name__}")
    extra = [k for k in direction if k not in weights and k not in (statistics or {})]
    if extra:
        raise ValueError(
            f"{name} does not match the model: it has entries the model lacks (first: {extra[:3]}); "
            "it was probably built for another model"
        )
    return _state_params(name, direction, weights)


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
        ref, stats = _weights(weights), bn_statistics(weights)
    else:
        ref = {k: v.detach() for k, v in weights.items() if k in direction or not _is_statistic(k)}
        stats = {k: ref.pop(k) for k in list(ref) if _is_statistic(k) and k in direction}
    params = _check_direction("direction", direction, ref, stats)
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


def _is_statistic(name: str) -> bool:
    return name.endswith(".running_mean") or name.endswith(".running_var") or name in ("running_mean", "running_var")


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
                "seed": self.seed, "count": len(self.vectors), "info": _jsonable(self.info)}

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
    _check_module("model", model)
    count = check_int("count", count, min_value=1, max_value=2)
    seed = check_int("seed", seed, min_value=0)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    check_bool("bn_statistics_too", bn_statistics_too)
    weights = _weights(model)
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
    _check_module("model", model)
    check_bool("bn_statistics_too", bn_statistics_too)
    if len(others) not in (1, 2):
        raise ValueError(f"directions_to_models needs 1 or 2 other models; got {len(others)}")
    weights = _weights(model)
    stats = bn_statistics(model) if bn_statistics_too else {}
    reference = {**weights, **stats}
    vectors = []
    for i, other in enumerate(others):
        theta = _state_params(f"others[{i}]", other, reference)
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
    _check_module("model", model)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    if not isinstance(checkpoints, Sequence) or len(checkpoints) < 2:
        n = len(checkpoints) if isinstance(checkpoints, Sequence) else type(checkpoints).__name__
        raise ValueError(f"checkpoints must be a sequence of at least 2 models or state dicts; got {n}")
    weights = _weights(model)
    keys = [k for k, w in weights.items() if not (w.dim() <= 1 and ignore == "biasbn")]
    rows = []
    for i, ckpt in enumerate(checkpoints):
        theta = _state_params(f"checkpoints[{i}]", ckpt, weights)
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


# ----------------------------------------------------------------------------------------------
# the functional copy: BatchNorm as an explicit affine form that runs under vmap
# ----------------------------------------------------------------------------------------------

class _FunctionalBatchNorm(nn.Module):
    """A ``_BatchNorm`` stand-in with the same parameter/buffer names, runnable under vmap.

    ``mode``: ``"eval"`` normalises with the running statistics; ``"batch"`` with the batch's own
    (biased) statistics; ``"collect"`` like ``"batch"`` and also records the batch mean and
    unbiased variance (what PyTorch's running-stat update would add) in ``self.collected``.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = bn.eps
        self.num_features = bn.num_features
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        else:
            self.weight = self.bias = None
        self.tracks = bn.track_running_stats and bn.running_mean is not None
        if self.tracks:
            self.register_buffer("running_mean", bn.running_mean)
            self.register_buffer("running_var", bn.running_var)
            self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.mode = "eval"
        self.collected: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.mode == "eval" and self.tracks:
            mean, var = self.running_mean, self.running_var
        else:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = (x - mean.reshape(shape)).square().mean(dim=dims)
            if self.mode == "collect":
                n = x.numel() // x.shape[1]
                self.collected = (mean, var * (n / max(n - 1, 1)))
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _functional_copy(model: nn.Module) -> tuple[nn.Module, list[tuple[str, _FunctionalBatchNorm]]]:
    clone = copy.deepcopy(model)
    replaced = []
    for name, module in list(clone.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                fbn = _FunctionalBatchNorm(child)
                setattr(module, child_name, fbn)
                replaced.append((f"{name}.{child_name}" if name else child_name, fbn))
    clone.eval()
    return clone, replaced


def resolve_bn(model: nn.Module, bn: str | None) -> str:
    """The BatchNorm choice to use: validates ``bn`` and refuses a train-mode BN model without one."""
    if bn is not None:
        check_choice("bn", bn, BN_CHOICES)
    if not _has_batchnorm(model):
        return "none"
    if bn is None:
        if model.training:
            raise ValueError(
                "model is in train mode and has BatchNorm layers, so its output depends on the batch; "
                "choose bn='eval' (the trained running statistics), bn='recalibrate' (statistics "
                "recomputed at every point) or bn='perturbed' (statistics moved along the directions too), "
                "or call model.eval() first"
            )
        return "eval"
    return bn


# ----------------------------------------------------------------------------------------------
# data and grid
# ----------------------------------------------------------------------------------------------

def _as_batches(name: str, data, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        data = [data]
    try:
        items = list(data)
    except TypeError:
        raise TypeError(f"{name} must be an (inputs, targets) pair of tensors or an iterable of such "
                        f"pairs (a DataLoader); got {type(data).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty; pass at least one (inputs, targets) batch")
    batches = []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise TypeError(f"{name}[{i}] must be an (inputs, targets) pair; got {type(item).__name__}")
        x, y = item[0], item[1]
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        y = y.to(device)
        # A NaN or Inf input (or float target) turns every loss it touches into NaN, which a grid or
        # a Hessian would report as a result; checked after the cast, so an overflow to Inf counts.
        for part, t in (("inputs", x), ("targets", y)):
            if t.is_floating_point() or t.is_complex():
                bad = int(t.numel() - torch.isfinite(t).sum())
                if bad:
                    raise ValueError(
                        f"{name}[{i}] {part} must be finite; got {bad} NaN or infinite entries of {t.numel()} "
                        f"(as {t.dtype}). Remove or repair those samples before computing the loss")
        batches.append((x, y))
    return batches


def grid_axis(start: float, stop: float, num: int) -> np.ndarray:
    """``num`` evenly spaced coordinates from ``start`` to ``stop`` inclusive (``np.linspace``)."""
    start = check_real("start", start)
    stop = check_real("stop", stop)
    num = check_int("num", num, min_value=1)
    return np.linspace(start, stop, num)


def _check_axis(name: str, values) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64)) if values is not None else None
    if arr is None or arr.size == 0:
        raise ValueError(f"{name} must have at least one grid point; got a grid of size 0. "
                         f"Use e.g. grid_axis(-1, 1, 21).")
    return as_vector(name, arr)


def _default_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------

def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
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
        js.write_text(json.dumps(_jsonable(meta), indent=2, sort_keys=True))
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


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------

def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * 1024 ** 3


def auto_chunk_size(model: nn.Module, inputs: torch.Tensor, *, num_points: int | None = None,
                    memory_fraction: float = 0.5, max_chunk: int = 256) -> int:
    """Grid points per batched forward that fit in ``memory_fraction`` of the free memory.

    The memory of one point is estimated from one plain forward of ``inputs``: the bytes of every
    leaf module's output (the activations a vmapped forward holds at once, no autograd) plus the
    parameters, doubled for temporaries. Free memory is ``torch.cuda.mem_get_info`` on CUDA and
    ``MemAvailable`` on the CPU.
    """
    _check_module("model", model)
    memory_fraction = check_real("memory_fraction", memory_fraction, min_value=0.0, max_value=1.0,
                                 include_min=False)
    max_chunk = check_int("max_chunk", max_chunk, min_value=1)
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    per_point = 2 * (total[0] + params) + 1
    device = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else inputs.device
    chunk = int(memory_fraction * _available_bytes(device) // per_point)
    chunk = max(1, min(chunk, max_chunk))
    if num_points is not None:
        chunk = min(chunk, max(1, int(num_points)))
    return chunk


@dataclass
class _Problem:
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


def _prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn) -> _Problem:
    _check_module("model", model)
    if not isinstance(directions, Directions):
        raise TypeError(f"directions must be a Directions (from random_directions, directions_to_models, "
                        f"trajectory_pca_directions or Directions.given); got {type(directions).__name__}")
    alphas = _check_axis("alphas", alphas)
    if len(directions.vectors) == 2:
        if betas is None:
            raise ValueError("directions has 2 vectors, so a 2-D grid needs betas; pass betas or use 1 direction")
        betas = _check_axis("betas", betas)
    elif betas is not None:
        raise ValueError("betas given but directions has only 1 vector; draw 2 directions for a 2-D grid")
    bn_mode = resolve_bn(model, bn)
    weights = _weights(model)
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
    vectors = [_check_direction(f"directions.vectors[{i}]", d, weights, stats)
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
            stat_vectors.append(_state_params(f"directions.vectors[{i}]", {k: d[k] for k in stats}, stats))
    ref = next(iter(weights.values()))
    batches = _as_batches("data", data, ref.device, ref.dtype)
    recal = None
    if bn_mode == "recalibrate":
        recal = batches if recalibration_data is None else _as_batches(
            "recalibration_data", recalibration_data, ref.device, ref.dtype)
    return _Problem(alphas, betas, bn_mode, weights, vectors, stats, stat_vectors, batches, recal,
                    loss_fn or _default_loss)


def _points(alphas: np.ndarray, betas: np.ndarray | None) -> np.ndarray:
    if betas is None:
        return alphas[:, None]
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def _new_result(alphas, betas, directions, bn_mode, num_samples, loss_name, meta) -> LandscapeResult:
    shape = (alphas.size,) if betas is None else (alphas.size, betas.size)
    return LandscapeResult(alphas, betas, np.full(shape, np.nan), np.full(shape, np.nan),
                           directions.metadata(), bn_mode, num_samples, loss_name, meta)


def _loss_name(loss_fn) -> str:
    return "cross_entropy" if loss_fn is None else getattr(loss_fn, "__name__", type(loss_fn).__name__)


def _moved(base: dict, vectors: list, coeff: torch.Tensor, names=None) -> dict:
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


def _moved_statistics(problem: _Problem, coeff: torch.Tensor) -> dict:
    # A variance moved below zero is clamped at zero (the layer then divides by sqrt(eps)): the
    # statistic stays a variance, and the loss there is large but finite instead of NaN.
    moved = _moved(problem.statistics, problem.statistic_vectors, coeff)
    return {k: v.clamp(min=0) if k.endswith("running_var") else v for k, v in moved.items()}


def _autocast(device: torch.device, precision: str):
    import contextlib
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision))


class _PointEvaluator:
    """One grid point at a time on a deep copy of the model with its own layers.

    The copy gets each point's parameters by ``copy_``; for ``bn="recalibrate"`` its nn.BatchNorm
    layers are reset, given ``momentum=None`` and run in train mode over the recalibration batches
    (PyTorch's own running-stat update), then everything runs in eval mode; for ``bn="perturbed"``
    the running statistics are set to the moved ones (a negative variance clamped at 0). No vmap:
    the reference evaluator, and the ``"sequential"`` engine (on a CPU the fastest: batching grid
    points buys nothing on a few cores, while the model's own fused eval BatchNorm is cheaper).
    """

    def __init__(self, model: nn.Module, problem: "_Problem", channels_last: bool = False) -> None:
        self.problem = problem
        self.clone = copy.deepcopy(model).eval()
        self.batches, self.recal = problem.batches, problem.recal
        if channels_last:
            # the same numbers (up to summation order) in the memory layout oneDNN convolves fastest
            self.clone = self.clone.to(memory_format=torch.channels_last)
            self.batches = [(_channels_last(x), y) for x, y in problem.batches]
            self.recal = [(_channels_last(x), y) for x, y in problem.recal] if problem.recal else problem.recal
        self.own = dict(self.clone.named_parameters())
        self.own_stats = bn_statistics(self.clone)
        self.bn_layers = [m for m in self.clone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @torch.no_grad()
    def __call__(self, coord) -> tuple[float, float]:
        """(summed loss, number correct) over all batches at grid coordinates ``coord``."""
        problem, vectors, svectors = self.problem, self.problem.vectors, self.problem.statistic_vectors
        for k, w in problem.weights.items():
            value = w + float(coord[0]) * vectors[0][k]
            if len(vectors) == 2:
                value = value + float(coord[1]) * vectors[1][k]
            self.own[k].copy_(value)
        if problem.bn_mode == "perturbed":
            for k, st in problem.statistics.items():
                value = st + float(coord[0]) * svectors[0][k]
                if len(svectors) == 2:
                    value = value + float(coord[1]) * svectors[1][k]
                self.own_stats[k].copy_(value.clamp(min=0) if k.endswith("running_var") else value)
        if problem.bn_mode == "recalibrate":
            for m in self.bn_layers:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            for x, _ in self.recal:
                self.clone(x)
            for m in self.bn_layers:
                m.eval()
        tot_loss, correct = 0.0, 0.0
        for x, y in self.batches:
            logits = self.clone(x)
            tot_loss += float(problem.loss(logits, y).double().sum())
            correct += float((logits.argmax(dim=-1) == y).sum())
        return tot_loss, correct


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _cpu_channels_last_safe(model: nn.Module) -> bool:
    # torch 2.13's CPU (oneDNN) kernels crash on channels_last 1x1 stride-2 convolutions with fewer
    # than 8 channels (seen in training); such models stay in the default layout.
    return not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                   and min(m.in_channels, m.out_channels) < 8 for m in model.modules())


_SEQUENTIAL_CHUNK = 8  # grid points between checkpoints / progress updates of the sequential engine


def _sequential_chunk_fn(model, problem: "_Problem"):
    """Chunk evaluator of the sequential engine: coeff (K, ndir) -> (summed loss (K,), correct (K,)).

    On a CPU the model runs channels_last where that is safe: 1.5x faster for ResNet-20 on 2 cores.
    """
    ref = next(iter(problem.weights.values()))
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = ref.device.type == "cpu" and has_conv and _cpu_channels_last_safe(model)
    evaluate_point = _PointEvaluator(model, problem, channels_last=channels_last)

    def chunk(coeff: torch.Tensor):
        rows = [evaluate_point(c) for c in coeff.tolist()]
        return (torch.tensor([r[0] for r in rows], dtype=torch.float64),
                torch.tensor([r[1] for r in rows], dtype=torch.float64))

    return chunk


def _vmap_chunk_fn(model, problem: _Problem, precision: str, compile_fn: bool):
    """Chunk evaluator of the vmap engine: coeff (K, ndir) -> (summed loss (K,), correct (K,))."""
    clone, bns = _functional_copy(model)
    buffers = {k: v.detach() for k, v in clone.named_buffers()}
    names = list(problem.weights)
    ref = next(iter(problem.weights.values()))
    loss = problem.loss

    def batch_metrics(params, bufs, x, y):
        with _autocast(ref.device, precision):
            logits = functional_call(clone, (params, bufs), (x,))
        logits = logits.float() if precision != "float32" else logits
        per_sample = loss(logits, y)
        correct = (logits.argmax(dim=-1) == y).sum()
        return per_sample.sum(), correct

    def collect_stats(params, x):
        functional_call(clone, (params, buffers), (x,))
        stats = [fbn.collected for _, fbn in bns if fbn.tracks]
        return [s[0] for s in stats], [s[1] for s in stats]

    metrics_fn = vmap(batch_metrics, in_dims=(0, None, None, None))
    metrics_point_bufs_fn = vmap(batch_metrics, in_dims=(0, 0, None, None))
    if compile_fn:
        metrics_fn, metrics_point_bufs_fn = torch.compile(metrics_fn), torch.compile(metrics_point_bufs_fn)
    collect_fn = vmap(collect_stats, in_dims=(0, None))
    tracked = [(name, fbn) for name, fbn in bns if fbn.tracks]

    def point_buffers(changed: dict, k: int) -> dict:
        # every buffer needs the point dimension under in_dims=0; the unchanged ones are shared
        return {n: changed.get(n, v.unsqueeze(0).expand(k, *v.shape)) for n, v in buffers.items()}

    def chunk(coeff: torch.Tensor):
        k = coeff.shape[0]
        params = _moved(problem.weights, problem.vectors, coeff, names)
        if problem.bn_mode == "recalibrate":
            for _, fbn in bns:
                fbn.mode = "collect"
            sums_m = sums_v = None
            for x, _ in problem.recal:
                means, vars_ = collect_fn(params, x)
                sums_m = means if sums_m is None else [a + b for a, b in zip(sums_m, means)]
                sums_v = vars_ if sums_v is None else [a + b for a, b in zip(sums_v, vars_)]
            for _, fbn in bns:
                fbn.mode = "eval"
                fbn.collected = None
            recalibrated = {}
            for (name, _), m, v in zip(tracked, sums_m, sums_v):
                recalibrated[f"{name}.running_mean"] = m / len(problem.recal)
                recalibrated[f"{name}.running_var"] = v / len(problem.recal)
            bufs, fn = point_buffers(recalibrated, k), metrics_point_bufs_fn
        elif problem.bn_mode == "perturbed":
            bufs, fn = point_buffers(_moved_statistics(problem, coeff), k), metrics_point_bufs_fn
        else:
            bufs, fn = buffers, metrics_fn
        tot_loss = torch.zeros(k, dtype=torch.float64, device=ref.device)
        tot_correct = torch.zeros(k, dtype=torch.float64, device=ref.device)
        for x, y in problem.batches:
            l, c = fn(params, bufs, x, y)
            tot_loss += l.double()
            tot_correct += c.double()
        return tot_loss, tot_correct

    return chunk


# ----------------------------------------------------------------------------------------------
# the grouped engine: P grid points as one network with P-fold channels
# ----------------------------------------------------------------------------------------------

class GroupedUnsupported(ValueError):
    """The model uses an operation the grouped engine cannot run with packed channels."""


import operator as _operator  # noqa: E402

_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Hardtanh,
)
_ELEMENTWISE_FUNCTIONS = {
    _operator.add, _operator.sub, _operator.mul, _operator.truediv, _operator.neg, torch.add, torch.sub, torch.mul,
    torch.relu, torch.tanh, torch.sigmoid, F.relu, F.gelu, F.silu, F.elu, F.leaky_relu, F.relu6, F.softplus,
    F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "add", "mul", "sub", "contiguous"}


class _Packed:
    """A value of the grouped program: ``tensor`` holds P points' channels along dim 1 (point-major)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _flatten_is_per_sample(args, kwargs) -> bool:
    start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


class GroupedForward:
    """``model``'s forward for P parameter sets at once, as one network with P-fold channels.

    Traced with ``torch.fx``; activations of the P points are packed along the channel dimension
    (point-major), so a convolution becomes one grouped convolution (groups multiplied by P,
    the P weight sets stacked along the output channels), an eval-mode BatchNorm a per-channel
    affine with the P points' scale and shift, a final ``nn.Linear`` a batched matrix product,
    and channel-wise ops (activations, pooling, residual additions) run unchanged. The first
    layer sees the shared input and becomes one convolution with P*C_out output channels.
    Anything else (``torch.cat`` on channels, attention, parameters used outside these layers,
    BatchNorm without running statistics) raises ``GroupedUnsupported`` naming the operation.
    """

    def __init__(self, clone: nn.Module) -> None:
        import torch.fx

        class _Tracer(torch.fx.Tracer):
            def is_leaf_module(self, m, qualname):
                return isinstance(m, _FunctionalBatchNorm) or super().is_leaf_module(m, qualname)

        try:
            gm = torch.fx.GraphModule(clone, _Tracer().trace(clone))
        except Exception as exc:  # fx raises many types for untraceable control flow
            raise GroupedUnsupported(f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})") from None
        self.graph_module = gm
        modules = dict(gm.named_modules())
        self.nodes = []
        for node in gm.graph.nodes:
            if node.op == "call_module":
                m = modules[node.target]
                if isinstance(m, nn.Conv2d):
                    if m.padding_mode != "zeros" or isinstance(m.padding, str):
                        raise GroupedUnsupported(f"{node.target}: Conv2d with padding {m.padding!r} / "
                                                 f"padding_mode {m.padding_mode!r}")
                elif isinstance(m, _FunctionalBatchNorm):
                    if not m.tracks:
                        raise GroupedUnsupported(f"{node.target}: BatchNorm without running statistics "
                                                 "(batch statistics mix the points' channels)")
                elif isinstance(m, nn.Flatten):
                    if not (m.start_dim == 1 and m.end_dim == -1):
                        raise GroupedUnsupported(f"{node.target}: Flatten({m.start_dim}, {m.end_dim})")
                elif not isinstance(m, (nn.Linear,) + _CHANNELWISE_MODULES):
                    raise GroupedUnsupported(f"{node.target}: module {type(m).__name__}")
                elif any(True for _ in m.parameters(recurse=False)) and not isinstance(m, nn.Linear):
                    raise GroupedUnsupported(f"{node.target}: {type(m).__name__} with parameters")
                self.nodes.append((node, m))
            elif node.op == "call_function":
                if node.target not in _ELEMENTWISE_FUNCTIONS and node.target is not torch.flatten:
                    raise GroupedUnsupported(f"function {getattr(node.target, '__name__', node.target)} "
                                             f"(node {node.name})")
                if node.target is torch.flatten and not _flatten_is_per_sample(node.args, node.kwargs):
                    raise GroupedUnsupported(f"torch.flatten with other than start_dim=1 (node {node.name})")
                self.nodes.append((node, None))
            elif node.op == "call_method":
                if node.target == "flatten" and not _flatten_is_per_sample(node.args, node.kwargs):
                    raise GroupedUnsupported(f"Tensor.flatten with other than start_dim=1 (node {node.name})")
                if node.target not in _ELEMENTWISE_METHODS | {"flatten"}:
                    raise GroupedUnsupported(f"method Tensor.{node.target} (node {node.name})")
                self.nodes.append((node, None))
            elif node.op == "get_attr":
                raise GroupedUnsupported(f"parameter or buffer {node.target} used outside a layer")
            elif node.op in ("placeholder", "output"):
                self.nodes.append((node, None))
        placeholders = [n for n, _ in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise GroupedUnsupported(f"forward takes {len(placeholders)} inputs; the grouped engine needs 1")
        self.module_names = {id(m): name for name, m in gm.named_modules()}

    def __call__(self, params: dict, buffers: dict, x: torch.Tensor, num_points: int,
                 dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
        """Logits ``(B, P, classes)``. ``params``/``buffers``: name -> (P, *shape) tensors (buffers only
        for BN statistics that vary per point; the others are taken from the model)."""
        import torch.fx
        P = num_points
        env: dict = {}

        def load(a):
            return torch.fx.node.map_arg(a, lambda n: env[n.name])

        def packed(v, like_channels: int | None = None):
            if isinstance(v, _Packed):
                return v.tensor
            if isinstance(v, torch.Tensor) and v.dim() >= 2:
                return v.repeat(1, P, *([1] * (v.dim() - 2)))  # shared value: every point sees it
            return v

        for node, m in self.nodes:
            if node.op == "placeholder":
                t = x.to(dtype)
                env[node.name] = t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
            elif node.op == "output":
                out = load(node.args[0])
                t = out.tensor if isinstance(out, _Packed) else out.repeat(1, P)
                return t.reshape(t.shape[0], P, -1)
            elif node.op == "call_module":
                arg = load(node.args[0])
                name = node.target
                if isinstance(m, nn.Conv2d):
                    w = params[f"{name}.weight"].to(dtype)
                    w = w.reshape(P * w.shape[1], *w.shape[2:])
                    if channels_last:
                        w = w.contiguous(memory_format=torch.channels_last)
                    b = params[f"{name}.bias"].to(dtype).reshape(-1) if m.bias is not None else None
                    if isinstance(arg, _Packed) or m.groups > 1:
                        y = F.conv2d(packed(arg), w, b, m.stride, m.padding, m.dilation, m.groups * P)
                    else:
                        y = F.conv2d(arg, w, b, m.stride, m.padding, m.dilation, 1)
                    env[node.name] = _Packed(y)
                elif isinstance(m, _FunctionalBatchNorm):
                    mean = buffers.get(f"{name}.running_mean")
                    var = buffers.get(f"{name}.running_var")
                    mean = m.running_mean.unsqueeze(0) if mean is None else mean
                    var = m.running_var.unsqueeze(0) if var is None else var
                    scale = torch.rsqrt(var.float() + m.eps)
                    if m.weight is not None:
                        scale = scale * params[f"{name}.weight"].float()
                    shift = -mean.float() * scale
                    if m.weight is not None:
                        shift = shift + params[f"{name}.bias"].float()
                    c = m.num_features
                    scale = scale.expand(P, c).reshape(-1)
                    shift = shift.expand(P, c).reshape(-1)
                    t = packed(arg)
                    view = (1, -1) + (1,) * (t.dim() - 2)
                    env[node.name] = _Packed(t * scale.to(dtype).reshape(view) + shift.to(dtype).reshape(view))
                elif isinstance(m, nn.Linear):
                    w = params[f"{name}.weight"].to(dtype)  # (P, out, in)
                    b = params[f"{name}.bias"].to(dtype) if m.bias is not None else None
                    if isinstance(arg, _Packed):
                        t = arg.tensor
                        t = t.reshape(t.shape[0], P, -1)
                        y = torch.einsum("bpi,poi->bpo", t, w)
                        if b is not None:
                            y = y + b.unsqueeze(0)
                        env[node.name] = _Packed(y.reshape(y.shape[0], -1))
                    else:
                        env[node.name] = _Packed(F.linear(arg, w.reshape(-1, w.shape[-1]),
                                                          None if b is None else b.reshape(-1)))
                else:  # channel-wise module: the packed layout passes through
                    if isinstance(arg, _Packed):
                        env[node.name] = _Packed(m(arg.tensor))
                    else:
                        env[node.name] = m(arg)
            else:
                args, kwargs = load(node.args), load(node.kwargs)
                flat = list(args) + list(kwargs.values())
                if any(isinstance(a, _Packed) for a in flat):
                    args = tuple(packed(a) for a in args)
                    kwargs = {k: packed(v) for k, v in kwargs.items()}
                    wrap = _Packed
                else:
                    wrap = lambda t: t  # noqa: E731
                if node.op == "call_function":
                    env[node.name] = wrap(node.target(*args, **kwargs))
                else:
                    env[node.name] = wrap(getattr(args[0], node.target)(*args[1:], **kwargs))
        raise RuntimeError("the traced graph has no output node")


def _grouped_chunk_fn(model, problem: _Problem, precision: str, compile_fn: bool, channels_last: bool):
    clone, _ = _functional_copy(model)
    program = GroupedForward(clone)  # raises GroupedUnsupported
    names = list(problem.weights)
    ref = next(iter(problem.weights.values()))
    dtype = getattr(torch, precision)
    loss = problem.loss

    def metrics(coeff, x, y):
        k = coeff.shape[0]
        params = _moved(problem.weights, problem.vectors, coeff, names)
        bufs = _moved_statistics(problem, coeff) if problem.bn_mode == "perturbed" else {}
        logits = program(params, bufs, x, k, dtype, channels_last).float()  # (B, K, classes)
        logits = logits.transpose(0, 1)
        per_sample = loss(logits.reshape(-1, logits.shape[-1]), y.repeat(k)).reshape(k, -1)
        correct = (logits.argmax(dim=-1) == y.unsqueeze(0)).sum(dim=1)
        return per_sample.sum(dim=1), correct

    fn = torch.compile(metrics, dynamic=False) if compile_fn else metrics

    def chunk(coeff: torch.Tensor):
        k = coeff.shape[0]
        tot_loss = torch.zeros(k, dtype=torch.float64, device=ref.device)
        tot_correct = torch.zeros(k, dtype=torch.float64, device=ref.device)
        for x, y in problem.batches:
            l, c = fn(coeff, x, y)
            tot_loss += l.double()
            tot_correct += c.double()
        return tot_loss, tot_correct

    return chunk


def _shard_points(num_points: int, shard) -> np.ndarray:
    todo = np.arange(num_points)
    if shard is None:
        return todo
    if not (isinstance(shard, (tuple, list)) and len(shard) == 2):
        raise TypeError(f"shard must be a (rank, world_size) pair; got {shard!r}")
    world = check_int("shard world_size", shard[1], min_value=1)
    rank = check_int("shard rank", shard[0], min_value=0, max_value=world - 1)
    return todo[todo % world == rank]


def _process_group_shard() -> tuple[int, int]:
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group (call "
            "torch.distributed.init_process_group, e.g. in a script started by torchrun); none is initialised")
    return dist.get_rank(), dist.get_world_size()


def loss_landscape(
    model: nn.Module,
    directions: Directions,
    data,
    alphas,
    betas=None,
    *,
    bn: str | None = None,
    recalibration_data=None,
    loss_fn: LossFn | None = None,
    chunk_size: int | None = None,
    resume: LandscapeResult | None = None,
    checkpoint_path=None,
    shard: tuple[int, int] | None = None,
    distributed: bool = False,
    engine: str = "auto",
    precision: str = "float32",
    compile: bool | None = None,
    progress: bool = False,
) -> LandscapeResult:
    """Loss and accuracy of ``model`` on ``data`` over a 1-D or 2-D grid, many points per forward.

    Parameters
    ----------
    model:
        The trained model (never modified; BN layers and dropout are handled on a deep copy).
    directions:
        1 or 2 directions (``Directions``); their count sets the grid's dimension.
    data:
        One ``(inputs, targets)`` batch or an iterable of them (a DataLoader); loss and accuracy
        are averaged over all samples. NaN or infinite inputs (or float targets) raise ValueError.
    alphas, betas:
        Grid coordinates (``grid_axis``); ``betas`` only for 2 directions. Any shapes.
    bn:
        ``"eval"``, ``"recalibrate"`` or ``"perturbed"`` (module docstring); required for a
        train-mode BN model.
    recalibration_data:
        Batches for ``bn="recalibrate"`` (default: ``data``).
    loss_fn:
        ``loss_fn(logits, targets) -> per-sample losses`` (default cross entropy); must be
        vmap-compatible.
    chunk_size:
        Grid points per batched forward (default ``auto_chunk_size``). The grouped and compiled
        engines pad the last chunk to this size (fixed shapes: one compilation).
    resume, checkpoint_path, shard:
        Continue a partial result (its NaN points are evaluated); ``result.save(checkpoint_path)``
        after every chunk; evaluate only the flat (row-major) points ``p`` with
        ``p % world_size == rank`` for ``shard=(rank, world_size)``.
    distributed:
        Take ``shard`` from the initialised ``torch.distributed`` process group (rank, world
        size), evaluate that shard and all-gather the shards: every rank returns the full grid.
        A checkpoint then goes to ``checkpoint_path`` + ``.rank<r>of<w>`` per rank.
    engine:
        ``"vmap"`` (default; the exact path), ``"grouped"`` (``GroupedForward``: P points as one
        grouped-convolution network) or ``"compiled"`` (``torch.compile`` of the vmap path).
        ``"grouped"`` falls back to ``"vmap"`` with a warning naming the reason for a model it
        cannot run or for ``bn="recalibrate"``.
    precision:
        ``"float32"`` or a reduced precision (``"bfloat16"``, ``"float16"``) for the fast engines
        (autocast for ``"compiled"``, weights and activations cast for ``"grouped"``); losses
        are reduced in float32 and summed in float64.
    compile:
        ``torch.compile`` the grouped engine's chunk function (default: on CUDA only).
    progress:
        A tqdm bar over chunks (on stderr).
    """
    check_bool("distributed", distributed)
    check_choice("engine", engine, ENGINES)
    check_choice("precision", precision, PRECISIONS)
    if compile is not None:
        check_bool("compile", compile)
    if distributed:
        if shard is not None:
            raise ValueError("pass either shard=(rank, world_size) or distributed=True, not both "
                             "(distributed=True takes the shard from the process group)")
        shard = _process_group_shard()
    problem = _prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn)
    if precision != "float32" and engine == "vmap":
        raise ValueError(f"precision={precision!r} needs engine='grouped', 'compiled' or 'auto'; the vmap engine is "
                         "the exact float path (the model's own dtype)")
    alphas, betas, bn_mode, weights = problem.alphas, problem.betas, problem.bn_mode, problem.weights
    points = _points(alphas, betas)
    num_samples = problem.num_samples
    todo = _shard_points(points.shape[0], shard)
    if resume is not None:
        if not isinstance(resume, LandscapeResult):
            raise TypeError(f"resume must be a LandscapeResult; got {type(resume).__name__}")
        same = (np.array_equal(resume.alphas, alphas)
                and ((betas is None and resume.betas is None)
                     or (betas is not None and resume.betas is not None and np.array_equal(resume.betas, betas))))
        if not same:
            raise ValueError("resume is a result on another grid; pass the same alphas/betas to continue it")
        if resume.directions.get("seed") != directions.seed or resume.bn != bn_mode:
            raise ValueError(f"resume was made with other directions or BN choice (seed "
                             f"{resume.directions.get('seed')} vs {directions.seed}, bn {resume.bn!r} vs {bn_mode!r})")
        result = LandscapeResult(resume.alphas, resume.betas, resume.loss.copy(), resume.accuracy.copy(),
                                 resume.directions, resume.bn, resume.num_samples, resume.loss_name, dict(resume.meta))
        todo = todo[~np.isfinite(result.loss.reshape(-1)[todo])]
    else:
        meta = {"model": type(model).__name__, "dtype": str(next(iter(weights.values())).dtype),
                "device": str(next(iter(weights.values())).device)}
        result = _new_result(alphas, betas, directions, bn_mode, num_samples, _loss_name(loss_fn), meta)
    if shard is not None and not distributed:
        result.meta["shard"] = [int(shard[0]), int(shard[1])]

    ref = next(iter(weights.values()))
    used_engine = engine
    if engine == "auto" and ref.device.type == "cpu" and precision == "float32":
        # measured on 2 CPU cores (experiments/benchmarks/landscape_speed.py): one point at a time with
        # the model's own layers beats every batched engine there; batching pays on a GPU
        engine = used_engine = "sequential"
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    elif engine == "sequential":
        # points are evaluated one by one; a chunk only sets how often the progress bar and the
        # checkpoint advance, so no memory probe is needed
        chunk_size = _SEQUENTIAL_CHUNK
    else:
        clone, _ = _functional_copy(model)
        chunk_size = auto_chunk_size(clone, problem.batches[0][0], num_points=max(1, todo.size))
    if engine == "sequential":
        if precision != "float32":
            raise ValueError(f"precision={precision!r} needs engine='grouped', 'compiled' or 'auto'; the "
                             "sequential engine runs the model in its own dtype")
        chunk_fn = _sequential_chunk_fn(model, problem)
    elif engine in ("grouped", "auto"):
        try:
            if bn_mode == "recalibrate":
                raise GroupedUnsupported("bn='recalibrate' (per-point batch statistics)")
            if engine == "auto" and ref.dtype != torch.float32:
                # the grouped engine computes in float32 or lower; "auto" must not drop a float64 model's precision
                raise GroupedUnsupported(f"the model is {ref.dtype}; the grouped engine computes in float32")
            chunk_fn = _grouped_chunk_fn(model, problem, precision,
                                         ref.device.type == "cuda" if compile is None else compile,
                                         channels_last=ref.device.type == "cuda")
        except GroupedUnsupported as exc:
            if engine == "grouped":
                import warnings
                warnings.warn(f"engine='grouped' cannot run this model: {exc}; using the vmap engine instead",
                              RuntimeWarning, stacklevel=2)
            else:
                result.meta["engine_fallback"] = str(exc)
            used_engine, precision = "vmap", "float32"
            chunk_fn = _vmap_chunk_fn(model, problem, "float32", False)
    else:
        chunk_fn = _vmap_chunk_fn(model, problem, precision, engine == "compiled")
    if used_engine == "auto":
        used_engine = "grouped"
    result.meta.update({"chunk_size": int(chunk_size), "engine": used_engine, "precision": precision})
    pad = used_engine not in ("vmap", "sequential")  # fixed shapes for compiled code

    if checkpoint_path is not None and distributed:
        checkpoint_path = f"{checkpoint_path}.rank{shard[0]}of{shard[1]}"
    chunks = [todo[i:i + chunk_size] for i in range(0, todo.size, chunk_size)]
    iterator = chunks
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(chunks, desc="landscape", unit="chunk")
    flat_loss, flat_acc = result.loss.reshape(-1), result.accuracy.reshape(-1)
    # Wall time of the first chunk (compilation and warm-up land there) and of the rest (the
    # steady state); the .cpu() copy of every chunk's result synchronises the device.
    timing = {"first_chunk_s": 0.0, "rest_s": 0.0, "rest_points": 0}
    # Reduced precision: a point whose loss overflowed (float16's largest value is 65504; far from
    # the minimum activations grow past it) is evaluated again in float32, one point at a time with
    # the model's own layers, so the grid holds the true value and not a NaN hole.
    exact_point = None
    fallback = []
    with torch.no_grad():
        for n, idx in enumerate(iterator):
            t0 = time.perf_counter()
            coeff = torch.as_tensor(points[idx], dtype=ref.dtype, device=ref.device)
            if pad and len(idx) < chunk_size:
                coeff = torch.cat([coeff, coeff[-1:].expand(chunk_size - len(idx), -1)])
            tot_loss, tot_correct = chunk_fn(coeff)
            flat_loss[idx] = (tot_loss[:len(idx)] / num_samples).cpu().numpy()
            flat_acc[idx] = (tot_correct[:len(idx)] / num_samples).cpu().numpy()
            if precision != "float32":
                for i in idx[~np.isfinite(flat_loss[idx])]:
                    if exact_point is None:
                        exact_point = _PointEvaluator(model, problem)
                    tot, correct = exact_point(points[i])
                    flat_loss[i], flat_acc[i] = tot / num_samples, correct / num_samples
                    fallback.append(int(i))
            if n == 0:
                timing["first_chunk_s"] = time.perf_counter() - t0
            else:
                timing["rest_s"] += time.perf_counter() - t0
                timing["rest_points"] += len(idx)
            if checkpoint_path is not None:
                result.save(checkpoint_path)
    result.meta["timing"] = timing
    if precision != "float32":
        # flat indices of the points computed in float32 because the reduced precision overflowed there
        earlier = result.meta.get("float32_fallback_points", [])  # a resumed grid keeps its earlier ones
        result.meta["float32_fallback_points"] = sorted(set(earlier) | set(fallback))
    if distributed:
        result = _all_gather_result(result)
    return result


def _all_gather_result(result: LandscapeResult) -> LandscapeResult:
    """Every rank's shard gathered (``all_gather_object``) and merged: the full grid on every rank."""
    import torch.distributed as dist
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, (result.loss, result.accuracy))
    parts = [LandscapeResult(result.alphas, result.betas, loss, acc, result.directions, result.bn,
                             result.num_samples, result.loss_name, dict(result.meta)) for loss, acc in shards]
    merged = merge_landscapes(parts)
    merged.meta["world_size"] = len(shards)
    return merged


def loss_landscape_reference(
    model: nn.Module,
    directions: Directions,
    data,
    alphas,
    betas=None,
    *,
    bn: str | None = None,
    recalibration_data=None,
    loss_fn: LossFn | None = None,
    progress: bool = False,
) -> LandscapeResult:
    """The same grid as ``loss_landscape``, one point at a time with the model's own layers.

    A deep copy of ``model`` gets each point's parameters by ``copy_``; for ``bn="recalibrate"``
    its nn.BatchNorm layers are reset, given ``momentum=None`` and run in train mode over the
    recalibration batches (PyTorch's own running-stat update), then everything is evaluated in
    eval mode; for ``bn="perturbed"`` the running statistics are set to the moved ones (a
    negative variance clamped at 0). Independent of the vmap machinery: the reference for tests
    and benchmarks (the "sequential evaluator").
    """
    problem = _prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn)
    points = _points(problem.alphas, problem.betas)
    num_samples = problem.num_samples
    result = _new_result(problem.alphas, problem.betas, directions, problem.bn_mode, num_samples,
                         _loss_name(loss_fn), {"model": type(model).__name__, "evaluator": "reference"})
    evaluate_point = _PointEvaluator(model, problem)
    flat_loss, flat_acc = result.loss.reshape(-1), result.accuracy.reshape(-1)
    iterator = enumerate(points)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, total=len(points), desc="landscape (reference)", unit="point")
    for p, coord in iterator:
        tot_loss, correct = evaluate_point(coord)
        flat_loss[p] = tot_loss / num_samples
        flat_acc[p] = correct / num_samples
    return result


# ----------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _levels(values: Sequence[np.ndarray], levels, log: bool) -> np.ndarray:
    if levels is not None and not isinstance(levels, (int, np.integer)):
        explicit = np.asarray(levels, dtype=np.float64)
        if log and np.any(explicit <= 0):
            raise ValueError(f"log=True needs positive contour levels; got {explicit.min():g}")
        return explicit
    n = 20 if levels is None else check_int("levels", levels, min_value=2)
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    if finite.size == 0:
        raise ValueError("nothing to plot: every grid value is NaN (an unfinished run?)")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12 + abs(lo) * 1e-6
    if log:
        positive = finite[finite > 0]
        if positive.size == 0:
            raise ValueError("log=True needs positive values; every grid value is <= 0 (use log=False)")
        lo = float(positive.min())
        hi = max(hi, lo * (1 + 1e-6))
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def _require_2d(name: str, result) -> LandscapeResult:
    if not isinstance(result, LandscapeResult):
        raise TypeError(f"{name} must be a LandscapeResult; got {type(result).__name__}")
    if result.ndim != 2:
        raise ValueError(f"{name} is a 1-D landscape; contour plots need 2 directions (use plot_curve)")
    return result


def _draw_contour(ax, result, levels, filled, trajectory, title, label_every: int = 2, log: bool = False):
    a, b = np.meshgrid(result.alphas, result.betas, indexing="ij")
    values = result.loss
    # With log levels the colours must follow the levels: a LogNorm spreads the colour map evenly
    # over the decades (a linear norm would paint every level below the top decade alike).
    norm = None
    if log:
        from matplotlib.colors import LogNorm
        norm = LogNorm(vmin=float(levels[0]), vmax=float(levels[-1]))
        values = np.where(values > 0, values, np.nan)  # log scale: non-positive values are not drawn
    cs_f = ax.contourf(a, b, values, levels=levels, cmap="viridis", norm=norm) if filled else None
    cs = ax.contour(a, b, values, levels=levels, colors="k" if filled else None,
                    cmap=None if filled else "viridis", norm=None if filled else norm, linewidths=0.6)
    ax.clabel(cs, cs.levels[::label_every], inline=True, fontsize=7, fmt="%.3g")
    if trajectory is not None:
        t = np.asarray(trajectory, dtype=np.float64)
        ax.plot(t[:, 0], t[:, 1], "-o", color="tab:red", markersize=2.5, linewidth=1.0, label="trajectory")
        ax.legend(loc="upper right", fontsize=7)
    ax.plot([0.0], [0.0], marker="*", color="white" if filled else "k", markersize=9, markeredgecolor="k")
    ax.set_xlabel(r"$\alpha$ (direction 1)")
    ax.set_ylabel(r"$\beta$ (direction 2)")
    ax.set_aspect("auto")
    if title:
        ax.set_title(title, fontsize=9)
    return cs_f if filled else cs


def _colorbar(fig, mappable, ax, label: str, log: bool):
    bar = fig.colorbar(mappable, ax=ax, label=label)
    if log:
        # contourf hands the colour bar its (geometric) levels as ticks, printed as 1.22668x10^3;
        # decades with plain labels read better, the contour labels give the exact levels
        from matplotlib.ticker import LogFormatterSciNotation, LogLocator
        bar.ax.yaxis.set_major_locator(LogLocator(base=10))
        bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation(base=10))
        bar.ax.yaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
    return bar


def plot_contour(result: LandscapeResult, *, levels=None, filled: bool = True, log: bool = False,
                 trajectory=None, title: str | None = None, ax=None):
    """Contour (filled by default) of a 2-D landscape with labelled levels; returns the Figure.

    ``levels``: a count or explicit values; ``log``: levels spaced geometrically (a count) and
    colours on a ``LogNorm``, labelled with their values; ``trajectory``: N x 2 coordinates to overlay (e.g.
    ``directions.info["trajectory"]`` of PCA directions). The trained weights are the star at 0.
    """
    _require_2d("result", result)
    plt = _pyplot()
    lv = _levels([result.loss], levels, log)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(4.6, 3.8))[0]
    ax = ax or fig.axes[0]
    mappable = _draw_contour(ax, result, lv, filled, trajectory, title, log=log)
    if filled:
        _colorbar(fig, mappable, ax, result.loss_name, log)
    return fig


def plot_side_by_side(results: dict, *, levels=None, filled: bool = True, log: bool = False):
    """Panels of several 2-D landscapes (e.g. a block and its baseline) on SHARED contour levels."""
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict title -> LandscapeResult")
    for k, r in results.items():
        _require_2d(f"results[{k!r}]", r)
    plt = _pyplot()
    lv = _levels([r.loss for r in results.values()], levels, log)
    fig, axes = plt.subplots(1, len(results), figsize=(4.0 * len(results) + 0.8, 3.6), squeeze=False)
    mappable = None
    for ax, (title, r) in zip(axes[0], results.items()):
        mappable = _draw_contour(ax, r, lv, filled, None, title, log=log)
    if filled:
        _colorbar(fig, mappable, list(axes[0]), next(iter(results.values())).loss_name, log)
    fig.levels = lv  # the shared levels, for callers and tests
    return fig


def plot_curve(result: LandscapeResult, *, title: str | None = None, ax=None):
    """A 1-D landscape: loss (left axis) and accuracy (right axis) against alpha; returns the Figure."""
    if not isinstance(result, LandscapeResult):
        raise TypeError(f"result must be a LandscapeResult; got {type(result).__name__}")
    if result.ndim != 1:
        raise ValueError("result is a 2-D landscape; use plot_contour (or slice it)")
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.subplots(figsize=(4.6, 3.2))[0]
    ax = ax or fig.axes[0]
    ax.plot(result.alphas, result.loss, color="tab:blue", label=result.loss_name)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(result.loss_name, color="tab:blue")
    twin = ax.twinx()
    twin.plot(result.alphas, 100 * result.accuracy, color="tab:orange", linestyle="--", label="accuracy")
    twin.set_ylabel("accuracy (%)", color="tab:orange")
    twin.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def save_figure(fig, path, *, dpi: int = 110) -> Path:
    """Save ``fig`` as a compact PNG (tight box, modest dpi) and close it; returns the path."""
    plt = _pyplot()
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
