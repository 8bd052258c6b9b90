"""The ``"compiled"`` engine: ``torch.compile`` of the vmap path, autocast for reduced precision.

Its chunks are padded to a fixed size, so the compiled function sees one shape (one compilation).
"""
from __future__ import annotations

from analysis.probes.landscape.engines.base import ChunkFn, Engine, EngineRequest, register_engine
from analysis.probes.landscape.engines.vmap import vmap_chunk_fn

__all__ = ["CompiledEngine"]


@register_engine
class CompiledEngine(Engine):
    """``torch.compile(vmap(functional_call))`` in any of the precisions."""

    name = "compiled"
    pads_chunks = True

    def build(self, request: EngineRequest) -> ChunkFn:
        return vmap_chunk_fn(request.model, request.problem, request.precision, True)
