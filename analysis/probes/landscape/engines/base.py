"""The interface every landscape engine implements, and the registry ``loss_landscape`` picks from.

An engine turns a prepared ``Problem`` into a *chunk evaluator*: a function that takes the
coefficients of K grid points, ``coeff`` of shape (K, number of directions), and returns the summed
loss and the number of correct predictions over all batches at each point, two float64 tensors of
shape (K,). A new engine is one module with a subclass of ``Engine`` decorated with
``@register_engine``, imported by ``analysis.probes.landscape.engines``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from analysis.probes.batches import functional_copy
from analysis.probes.landscape.memory import auto_chunk_size
from analysis.probes.landscape.problem import Problem

__all__ = ["PRECISIONS", "ChunkFn", "EngineUnsupported", "EngineRequest", "Engine", "register_engine",
           "get_engine", "engine_names", "build_chunk_fn"]

PRECISIONS = ("float32", "bfloat16", "float16")

# coeff (K, ndir) -> (summed loss (K,), number correct (K,)), both float64
ChunkFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class EngineUnsupported(ValueError):
    """An engine cannot run this model or setting; the message names the reason."""


@dataclass(frozen=True)
class EngineRequest:
    """What an engine builds its chunk evaluator for.

    ``requested`` is True when the caller named the engine and False when ``engine="auto"`` chose it
    (an engine may then refuse more, e.g. a loss of precision "auto" must not cause silently).
    """

    model: nn.Module
    problem: Problem
    precision: str
    compile: bool | None
    requested: bool


class Engine:
    """A way to evaluate chunks of grid points. Subclasses set ``name`` and implement ``build``.

    ``pads_chunks``: the last chunk is padded to the chunk size (fixed shapes: one compilation).
    ``fallback``: the engine that runs instead when ``build`` raises ``EngineUnsupported`` (with a
    warning if this engine was requested by name, recorded in ``meta["engine_fallback"]`` if "auto"
    chose it); None lets the error through.
    """

    name: str = ""
    pads_chunks: bool = False
    fallback: str | None = None

    def check_precision(self, precision: str) -> None:
        """Raise ValueError before any work if this engine cannot compute in ``precision``."""

    def chunk_size(self, model: nn.Module, problem: Problem, num_points: int) -> int:
        """Grid points per chunk when the caller gives none: as many as fit in half the free memory."""
        clone, _ = functional_copy(model)
        return auto_chunk_size(clone, problem.batches[0][0], num_points=max(1, num_points))

    def build(self, request: EngineRequest) -> ChunkFn:
        """The chunk evaluator for ``request`` (module docstring); may raise ``EngineUnsupported``."""
        raise NotImplementedError


_REGISTRY: dict[str, Engine] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: register an instance of ``cls`` under ``cls.name`` (names are unique)."""
    if not cls.name or cls.name in _REGISTRY or cls.name == "auto":
        raise ValueError(f"engine name {cls.name!r} is empty, reserved or already registered "
                         f"(registered: {sorted(_REGISTRY)})")
    _REGISTRY[cls.name] = cls()
    return cls


def get_engine(name: str) -> Engine:
    """The registered engine called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"engine must be one of {', '.join(map(repr, _REGISTRY))}; got {name!r}") from None


def engine_names() -> tuple[str, ...]:
    """The registered engines' names, in registration order."""
    return tuple(_REGISTRY)


def build_chunk_fn(name: str, request: EngineRequest, meta: dict) -> tuple[str, str, ChunkFn]:
    """``(engine used, precision used, chunk evaluator)``: engine ``name``'s, or its fallback's in float32.

    Called by ``loss_landscape`` itself: the warning of a requested engine's fallback names the
    line that called ``loss_landscape`` (``stacklevel=3``).
    """
    engine = get_engine(name)
    try:
        return name, request.precision, engine.build(request)
    except EngineUnsupported as exc:
        if engine.fallback is None:
            raise
        if request.requested:
            warnings.warn(f"engine={name!r} cannot run this model: {exc}; using the {engine.fallback} engine instead",
                          RuntimeWarning, stacklevel=3)
        else:
            meta["engine_fallback"] = str(exc)
        fallback = get_engine(engine.fallback)
        return fallback.name, "float32", fallback.build(replace(request, precision="float32"))
