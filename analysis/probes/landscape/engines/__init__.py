"""Engines of ``loss_landscape`` (``engine=``), registered by name (``engines.base``).

``"auto"`` (the default) is ``"sequential"`` on a CPU in float32 and otherwise ``"grouped"`` where the
model can be traced and ``"vmap"`` where not, silently (the result's ``meta["engine"]`` says which
ran; ``choose_engine``); ``"sequential"`` evaluates one point at a time with the model's own layers
(``PointEvaluator``, shared with ``loss_landscape_reference``; on 2 CPU cores it is the fastest,
with channels_last 1.26x loss-landscapes where vmap reaches 0.46x); ``"vmap"`` is the exact path
(one ``torch.func.vmap`` forward per chunk); ``"grouped"`` (``GroupedForward``) runs the K points
of a chunk as ONE network with K-fold channels (convs become grouped convs with the K weight sets
stacked, eval BatchNorm a per-channel affine, the final Linear a batched matmul), optionally in
bfloat16/float16, channels_last and ``torch.compile``d on CUDA; models it cannot trace (channel
concatenation, ...) and ``bn="recalibrate"`` fall back to vmap with a warning that names the
reason. ``"compiled"`` is ``torch.compile`` of the vmap path (autocast for reduced precision).
Chunks of the fast engines are padded to a fixed size (one compilation).

Measured on an H200 (ResNet-20, 1,024 images, 21x21; experiments/benchmarks/landscape_speed.py):
vmap float32 145 points/s, grouped float32 compiled 342, grouped bfloat16 479 (max rel. loss
error 1e-2), compiled vmap bfloat16 604 (7e-3) with one compiled bfloat16 forward at 1.7 ms;
float16 overflowed to NaN far from the minimum there. Such points are now evaluated again in
float32 with the model's own layers (their flat indices in ``meta["float32_fallback_points"]``), so
a reduced-precision grid never holds an overflow hole. Accuracy per point
(experiments/benchmarks/precision_probe.py, CPU, JPEG CIFAR-10, 64 images, a briefly trained
ResNet-20, 7x7, losses >= 1e-2): float16 median relative error 2.3e-4, max 2.0e-3 (89% of points
within 1e-3); bfloat16 median 2.3e-3, max 2.4e-2 (33%). Neither meets 1e-3 everywhere; float16
comes within 2x of it, bfloat16 within 24x.

A new engine is one module here: a subclass of ``Engine`` with ``@register_engine``, imported
below (the import order is the order of ``ENGINES``).
"""
from __future__ import annotations

import torch

# Importing an engine's module registers it; the import order is the order of ENGINES (the "engine
# must be one of ..." message and the CLI's --engine choices), so these stay unsorted.
# isort: off
from analysis.probes.landscape.engines import vmap  # noqa: F401
from analysis.probes.landscape.engines import sequential  # noqa: F401
from analysis.probes.landscape.engines import grouped  # noqa: F401
from analysis.probes.landscape.engines import compiled  # noqa: F401
# isort: on
from analysis.probes.landscape.engines.base import (
    PRECISIONS,
    ChunkFn,
    Engine,
    EngineRequest,
    EngineUnsupported,
    build_chunk_fn,
    engine_names,
    get_engine,
    register_engine,
)
from analysis.probes.landscape.engines.grouped import GroupedForward, GroupedUnsupported
from analysis.probes.landscape.engines.sequential import PointEvaluator

__all__ = ["ENGINES", "PRECISIONS", "ChunkFn", "Engine", "EngineRequest", "EngineUnsupported", "GroupedForward",
           "GroupedUnsupported", "PointEvaluator", "build_chunk_fn", "choose_engine", "engine_names", "get_engine",
           "register_engine"]

ENGINES = ("auto", *engine_names())


def choose_engine(engine: str, device: torch.device, precision: str) -> str:
    """The registered engine that runs for ``engine``: itself, or the one ``"auto"`` stands for.

    ``"auto"`` is ``"sequential"`` on a CPU in float32 and ``"grouped"`` otherwise (which falls back
    to ``"vmap"`` where it cannot run).
    """
    if engine != "auto":
        return engine
    if device.type == "cpu" and precision == "float32":
        # measured on 2 CPU cores (experiments/benchmarks/landscape_speed.py): one point at a time with
        # the model's own layers beats every batched engine there; batching pays on a GPU
        return "sequential"
    return "grouped"
