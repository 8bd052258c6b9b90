"""The ``"sequential"`` engine: one grid point at a time with the model's own layers.

``PointEvaluator`` sets a deep copy's parameters point by point (no vmap); it is also
``loss_landscape_reference``'s evaluator and the float32 re-evaluation of points where a reduced
precision overflowed. On 2 CPU cores it is the fastest engine, with channels_last 1.26x
loss-landscapes where vmap reaches 0.46x (experiments/benchmarks/landscape_speed.py).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from analysis.probes.landscape.batchnorm import bn_statistics
from analysis.probes.landscape.engines.base import ChunkFn, Engine, EngineRequest, register_engine
from analysis.probes.landscape.problem import Problem

__all__ = ["PointEvaluator", "SequentialEngine", "sequential_chunk_fn", "cpu_channels_last_safe", "SEQUENTIAL_CHUNK"]


class PointEvaluator:
    """One grid point at a time on a deep copy of the model with its own layers.

    The copy gets each point's parameters by ``copy_``; for ``bn="recalibrate"`` its nn.BatchNorm
    layers are reset, given ``momentum=None`` and run in train mode over the recalibration batches
    (PyTorch's own running-stat update), then everything runs in eval mode; for ``bn="perturbed"``
    the running statistics are set to the moved ones (a negative variance clamped at 0). No vmap:
    the reference evaluator, and the ``"sequential"`` engine (on a CPU the fastest: batching grid
    points buys nothing on a few cores, while the model's own fused eval BatchNorm is cheaper).
    """

    def __init__(self, model: nn.Module, problem: Problem, channels_last: bool = False) -> None:
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


def cpu_channels_last_safe(model: nn.Module) -> bool:
    """Whether ``model`` may run channels_last on the CPU (the sequential engine's faster layout)."""
    # torch 2.13's CPU (oneDNN) kernels crash on channels_last 1x1 stride-2 convolutions with fewer
    # than 8 channels (seen in training); such models stay in the default layout.
    return not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                   and min(m.in_channels, m.out_channels) < 8 for m in model.modules())


SEQUENTIAL_CHUNK = 8  # grid points between checkpoints / progress updates of the sequential engine


def sequential_chunk_fn(model, problem: Problem) -> ChunkFn:
    """Chunk evaluator of the sequential engine: coeff (K, ndir) -> (summed loss (K,), correct (K,)).

    On a CPU the model runs channels_last where that is safe: 1.5x faster for ResNet-20 on 2 cores.
    """
    ref = next(iter(problem.weights.values()))
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = ref.device.type == "cpu" and has_conv and cpu_channels_last_safe(model)
    evaluate_point = PointEvaluator(model, problem, channels_last=channels_last)

    def chunk(coeff: torch.Tensor):
        rows = [evaluate_point(c) for c in coeff.tolist()]
        return (torch.tensor([r[0] for r in rows], dtype=torch.float64),
                torch.tensor([r[1] for r in rows], dtype=torch.float64))

    return chunk


@register_engine
class SequentialEngine(Engine):
    """Points one by one in the model's own dtype; a chunk only paces the progress bar and checkpoints."""

    name = "sequential"

    def chunk_size(self, model: nn.Module, problem: Problem, num_points: int) -> int:
        # points are evaluated one by one; a chunk only sets how often the progress bar and the
        # checkpoint advance, so no memory probe is needed
        return SEQUENTIAL_CHUNK

    def build(self, request: EngineRequest) -> ChunkFn:
        if request.precision != "float32":
            raise ValueError(f"precision={request.precision!r} needs engine='grouped', 'compiled' or 'auto'; the "
                             "sequential engine runs the model in its own dtype")
        return sequential_chunk_fn(request.model, request.problem)
