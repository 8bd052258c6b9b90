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

``loss_landscape_reference`` evaluates the same grid one point at a time on a copy of the
unmodified model with its own nn.BatchNorm layers (recalibrating by PyTorch's own running-stat
update): the independent reference the tests compare against, and the "sequential evaluator"
of the benchmarks.

Results (``LandscapeResult``) carry loss, accuracy, coordinates, the direction metadata (kind,
seed, normalisation, ignore) and the BatchNorm choice; ``save``/``load`` write ``.npz`` + ``.json``.
Long grids resume from a partial result (points holding NaN are evaluated), can checkpoint after
every chunk, and can be sharded across processes (``shard=(rank, world_size)``, merged with
``merge_landscapes``).

Comparing with loss-landscapes (benchmark, not a dependency): inject the same direction into its
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from analysis.validation import as_vector, check_choice, check_int, check_real

__all__ = [
    "NORMALIZATIONS",
    "IGNORE_CHOICES",
    "BN_CHOICES",
    "Directions",
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
    "plot_contour",
    "plot_curve",
    "plot_side_by_side",
    "save_figure",
]

NORMALIZATIONS = ("filter", "layer", "model", "none")
IGNORE_CHOICES = ("biasbn", "none")
BN_CHOICES = ("eval", "recalibrate")

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


def _check_direction(name: str, direction, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(direction, dict):
        raise TypeError(f"{name} must be a dict parameter name -> tensor; got {type(direction).__name__}")
    extra = [k for k in direction if k not in weights]
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
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    ref = _weights(weights) if isinstance(weights, nn.Module) else {k: v.detach() for k, v in weights.items()}
    direction = _check_direction("direction", direction, ref)
    out: dict[str, torch.Tensor] = {}
    for k, d in direction.items():
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
                      ignore: str = "biasbn") -> Directions:
    """``count`` (1 or 2) seeded Gaussian directions normalised against ``model``'s weights.

    The draws come from a CPU ``torch.Generator`` seeded with ``seed`` in the order of
    ``named_parameters()`` (all of d1, then all of d2), in the parameter's dtype, then move to the
    parameter's device, so a seed names the same direction on every device.
    """
    _check_module("model", model)
    count = check_int("count", count, min_value=1, max_value=2)
    seed = check_int("seed", seed, min_value=0)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("ignore", ignore, IGNORE_CHOICES)
    weights = _weights(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vectors = []
    for _ in range(count):
        raw = {k: torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device) for k, w in weights.items()}
        vectors.append(normalize_direction(raw, weights, normalization, ignore))
    return Directions(tuple(vectors), "random", normalization, ignore, seed)


def directions_to_models(model: nn.Module, *others, normalization: str = "none",
                         ignore: str = "none") -> Directions:
    """Directions ``theta_other - theta_model`` towards one or two other models (or state dicts).

    With the default ``normalization="none"`` the coordinate 1 reaches the other model's
    parameters. Its BatchNorm running statistics are *not* interpolated: use ``bn="recalibrate"``
    to evaluate interpolations of BN models.
    """
    _check_module("model", model)
    if len(others) not in (1, 2):
        raise ValueError(f"directions_to_models needs 1 or 2 other models; got {len(others)}")
    weights = _weights(model)
    vectors = []
    for i, other in enumerate(others):
        theta = _state_params(f"others[{i}]", other, weights)
        d = {k: theta[k] - w for k, w in weights.items()}
        vectors.append(normalize_direction(d, weights, normalization, ignore) if normalization != "none"
                       or ignore != "none" else d)
    return Directions(tuple(vectors), "model", normalization, ignore)


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
                "choose bn='eval' (the trained running statistics) or bn='recalibrate' (statistics "
                "recomputed at every point), or call model.eval() first"
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
        batches.append((x, y.to(device)))
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


def _prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn):
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
    vectors = [_check_direction(f"directions.vectors[{i}]", d, weights) for i, d in enumerate(directions.vectors)]
    ref = next(iter(weights.values()))
    batches = _as_batches("data", data, ref.device, ref.dtype)
    recal = None
    if bn_mode == "recalibrate":
        recal = batches if recalibration_data is None else _as_batches(
            "recalibration_data", recalibration_data, ref.device, ref.dtype)
    loss_fn = loss_fn or _default_loss
    return alphas, betas, bn_mode, weights, vectors, batches, recal, loss_fn


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
        are averaged over all samples.
    alphas, betas:
        Grid coordinates (``grid_axis``); ``betas`` only for 2 directions. Any shapes.
    bn:
        ``"eval"`` or ``"recalibrate"`` (module docstring); required for a train-mode BN model.
    recalibration_data:
        Batches for ``bn="recalibrate"`` (default: ``data``).
    loss_fn:
        ``loss_fn(logits, targets) -> per-sample losses`` (default cross entropy); must be
        vmap-compatible.
    chunk_size:
        Grid points per batched forward (default ``auto_chunk_size``).
    resume, checkpoint_path, shard:
        Continue a partial result (its NaN points are evaluated); ``result.save(checkpoint_path)``
        after every chunk; evaluate only the flat (row-major) points ``p`` with
        ``p % world_size == rank`` for ``shard=(rank, world_size)``.
    progress:
        A tqdm bar over chunks (on stderr).
    """
    alphas, betas, bn_mode, weights, vectors, batches, recal, loss = _prepare(
        model, directions, alphas, betas, data, bn, recalibration_data, loss_fn)
    points = _points(alphas, betas)
    num_samples = sum(int(x.shape[0]) for x, _ in batches)

    todo = np.arange(points.shape[0])
    if shard is not None:
        if not (isinstance(shard, (tuple, list)) and len(shard) == 2):
            raise TypeError(f"shard must be a (rank, world_size) pair; got {shard!r}")
        world = check_int("shard world_size", shard[1], min_value=1)
        rank = check_int("shard rank", shard[0], min_value=0, max_value=world - 1)
        todo = todo[todo % world == rank]
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
    if shard is not None:
        result.meta["shard"] = [int(shard[0]), int(shard[1])]

    clone, bns = _functional_copy(model)
    buffers = {k: v.detach() for k, v in clone.named_buffers()}
    if chunk_size is None:
        chunk_size = auto_chunk_size(clone, batches[0][0], num_points=max(1, todo.size))
    else:
        chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    result.meta["chunk_size"] = int(chunk_size)
    ref = next(iter(weights.values()))
    names = list(weights)

    def forward(params, bufs, x):
        return functional_call(clone, (params, bufs), (x,))

    def batch_metrics(params, bufs, x, y):
        logits = forward(params, bufs, x)
        per_sample = loss(logits, y)
        correct = (logits.argmax(dim=-1) == y).sum()
        return per_sample.sum(), correct

    def collect_stats(params, x):
        forward(params, buffers, x)
        stats = [fbn.collected for _, fbn in bns if fbn.tracks]
        return [s[0] for s in stats], [s[1] for s in stats]

    metrics_fn = vmap(batch_metrics, in_dims=(0, None, None, None))
    metrics_recal_fn = vmap(batch_metrics, in_dims=(0, 0, None, None))
    collect_fn = vmap(collect_stats, in_dims=(0, None))
    tracked = [(name, fbn) for name, fbn in bns if fbn.tracks]

    chunks = [todo[i:i + chunk_size] for i in range(0, todo.size, chunk_size)]
    iterator = chunks
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(chunks, desc="landscape", unit="chunk")
    flat_loss, flat_acc = result.loss.reshape(-1), result.accuracy.reshape(-1)
    with torch.no_grad():
        for idx in iterator:
            coeff = torch.as_tensor(points[idx], dtype=ref.dtype, device=ref.device)
            params = {}
            for k in names:
                w = weights[k]
                view = (-1,) + (1,) * w.dim()
                p = w.unsqueeze(0) + coeff[:, 0].reshape(view) * vectors[0][k].unsqueeze(0)
                if len(vectors) == 2:
                    p = p + coeff[:, 1].reshape(view) * vectors[1][k].unsqueeze(0)
                params[k] = p
            if bn_mode == "recalibrate":
                for _, fbn in bns:
                    fbn.mode = "collect"
                sums_m = sums_v = None
                for x, _ in recal:
                    means, vars_ = collect_fn(params, x)
                    sums_m = means if sums_m is None else [a + b for a, b in zip(sums_m, means)]
                    sums_v = vars_ if sums_v is None else [a + b for a, b in zip(sums_v, vars_)]
                for _, fbn in bns:
                    fbn.mode = "eval"
                    fbn.collected = None
                recalibrated = {}
                for (name, _), m, v in zip(tracked, sums_m, sums_v):
                    recalibrated[f"{name}.running_mean"] = m / len(recal)
                    recalibrated[f"{name}.running_var"] = v / len(recal)
                # every buffer needs the point dimension under in_dims=0; the others are shared
                bufs = {k: recalibrated.get(k, v.unsqueeze(0).expand(len(idx), *v.shape))
                        for k, v in buffers.items()}
                fn = metrics_recal_fn
            else:
                bufs, fn = buffers, metrics_fn
            tot_loss = torch.zeros(len(idx), dtype=torch.float64, device=ref.device)
            tot_correct = torch.zeros(len(idx), dtype=torch.float64, device=ref.device)
            for x, y in batches:
                l, c = fn(params, bufs, x, y)
                tot_loss += l.double()
                tot_correct += c.double()
            flat_loss[idx] = (tot_loss / num_samples).cpu().numpy()
            flat_acc[idx] = (tot_correct / num_samples).cpu().numpy()
            if checkpoint_path is not None:
                result.save(checkpoint_path)
    return result


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
) -> LandscapeResult:
    """The same grid as ``loss_landscape``, one point at a time with the model's own layers.

    A deep copy of ``model`` gets each point's parameters by ``copy_``; for ``bn="recalibrate"``
    its nn.BatchNorm layers are reset, given ``momentum=None`` and run in train mode over the
    recalibration batches (PyTorch's own running-stat update), then everything is evaluated in
    eval mode. Independent of the vmap machinery: the reference for tests and benchmarks.
    """
    alphas, betas, bn_mode, weights, vectors, batches, recal, loss = _prepare(
        model, directions, alphas, betas, data, bn, recalibration_data, loss_fn)
    points = _points(alphas, betas)
    num_samples = sum(int(x.shape[0]) for x, _ in batches)
    result = _new_result(alphas, betas, directions, bn_mode, num_samples, _loss_name(loss_fn),
                         {"model": type(model).__name__, "evaluator": "reference"})
    clone = copy.deepcopy(model).eval()
    own = dict(clone.named_parameters())
    bn_layers = [m for m in clone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    flat_loss, flat_acc = result.loss.reshape(-1), result.accuracy.reshape(-1)
    with torch.no_grad():
        for p, coord in enumerate(points):
            for k, w in weights.items():
                value = w + float(coord[0]) * vectors[0][k]
                if len(vectors) == 2:
                    value = value + float(coord[1]) * vectors[1][k]
                own[k].copy_(value)
            if bn_mode == "recalibrate":
                for m in bn_layers:
                    m.reset_running_stats()
                    m.momentum = None
                    m.train()
                for x, _ in recal:
                    clone(x)
                for m in bn_layers:
                    m.eval()
            tot_loss, correct = 0.0, 0.0
            for x, y in batches:
                logits = clone(x)
                tot_loss += float(loss(logits, y).double().sum())
                correct += float((logits.argmax(dim=-1) == y).sum())
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
        return np.asarray(levels, dtype=np.float64)
    n = 20 if levels is None else check_int("levels", levels, min_value=2)
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    if finite.size == 0:
        raise ValueError("nothing to plot: every grid value is NaN (an unfinished run?)")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12 + abs(lo) * 1e-6
    if log:
        lo = max(lo, 1e-12)
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def _require_2d(name: str, result) -> LandscapeResult:
    if not isinstance(result, LandscapeResult):
        raise TypeError(f"{name} must be a LandscapeResult; got {type(result).__name__}")
    if result.ndim != 2:
        raise ValueError(f"{name} is a 1-D landscape; contour plots need 2 directions (use plot_curve)")
    return result


def _draw_contour(ax, result, levels, filled, trajectory, title, label_every: int = 2):
    a, b = np.meshgrid(result.alphas, result.betas, indexing="ij")
    values = result.loss
    cs_f = ax.contourf(a, b, values, levels=levels, cmap="viridis") if filled else None
    cs = ax.contour(a, b, values, levels=levels, colors="k" if filled else None,
                    cmap=None if filled else "viridis", linewidths=0.6)
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


def plot_contour(result: LandscapeResult, *, levels=None, filled: bool = True, log: bool = False,
                 trajectory=None, title: str | None = None, ax=None):
    """Contour (filled by default) of a 2-D landscape with labelled levels; returns the Figure.

    ``levels``: a count or explicit values; ``trajectory``: N x 2 coordinates to overlay (e.g.
    ``directions.info["trajectory"]`` of PCA directions). The trained weights are the star at 0.
    """
    _require_2d("result", result)
    plt = _pyplot()
    lv = _levels([result.loss], levels, log)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(4.6, 3.8))[0]
    ax = ax or fig.axes[0]
    mappable = _draw_contour(ax, result, lv, filled, trajectory, title)
    if filled:
        fig.colorbar(mappable, ax=ax, label=result.loss_name)
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
        mappable = _draw_contour(ax, r, lv, filled, None, title)
    if filled:
        fig.colorbar(mappable, ax=list(axes[0]), label=next(iter(results.values())).loss_name)
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
