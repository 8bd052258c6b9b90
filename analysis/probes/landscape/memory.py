"""How many grid points one batched forward may hold: ``auto_chunk_size`` from the free memory."""
from __future__ import annotations

import torch
from torch import nn

from analysis.probes.landscape.directions import check_module
from analysis.validation import check_int, check_real

__all__ = ["auto_chunk_size", "available_bytes"]


def available_bytes(device: torch.device) -> int:
    """Free memory of ``device`` in bytes: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` on the
    CPU (2 GiB where /proc/meminfo cannot be read)."""
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
    check_module("model", model)
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
    chunk = int(memory_fraction * available_bytes(device) // per_point)
    chunk = max(1, min(chunk, max_chunk))
    if num_points is not None:
        chunk = min(chunk, max(1, int(num_points)))
    return chunk
