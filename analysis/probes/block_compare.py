"""Measurements that compare any two models with the same input and output: the generic checks' probes.

None of these needs a trained model or knows the papers' blocks, so a user's block (in a baseline's
skeleton, ``analysis.models.skeleton``) and its baseline are measured by the same code:

- ``parameter_count``: trainable parameters;
- ``forward_flops``: floating-point operations of one forward pass per image, counted by torch's
  ``FlopCounterMode`` (a multiply-add is 2 FLOPs; convolutions and matmuls only, which dominate);
- ``activation_peaks``: the largest |value| of every leaf module's output on given inputs, in
  float32, with ``headroom = 65504 / peak`` (float16's largest finite value, ``FP16_MAX``);
- ``block_gradient_norms``: the gradient norm of each residual block's parameters at the model's
  current weights (``model.blocks``), the signal-propagation check at initialisation;
- ``train_throughput``: images per second of SGD steps (forward, backward, update) on one batch,
  the median of timed steps after warm-up steps.

Every function leaves the model's weights, mode and gradients as it found them.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from analysis.probes.fp16_peaks import FP16_MAX
from analysis.validation import check_int

__all__ = ["parameter_count", "forward_flops", "activation_peaks", "block_gradient_norms", "train_throughput"]


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """FLOPs of one forward pass of one image of ``input_shape`` (eval mode, no gradient)."""
    was = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
    return int(counter.get_total_flops())


def _leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if name and not any(True for _ in m.children())}


def activation_peaks(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> dict:
    """``{"peak", "where", "headroom", "per_module"}``: the largest |output| of every leaf module on ``images``.

    ``headroom = FP16_MAX / peak``: below 1 the value would overflow to inf in float16. Measured in
    float32 in eval mode (BatchNorm uses its running statistics), so a peak is never clipped.
    """
    batch_size = check_int("batch_size", batch_size, min_value=1)
    leaves = _leaf_modules(model)
    peaks = dict.fromkeys(leaves, 0.0)
    names = {id(m): n for n, m in leaves.items()}

    def hook(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point() and output.numel():
            name = names[id(module)]
            peaks[name] = max(peaks[name], float(output.detach().abs().max()))

    was = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in leaves.values()]
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                model(images[i:i + batch_size].float())
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    where = max(peaks, key=peaks.get) if peaks else ""
    peak = peaks.get(where, 0.0)
    return {"peak": peak, "where": where, "headroom": FP16_MAX / peak if peak > 0 else float("inf"),
            "per_module": peaks}


def block_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The gradient norm of each block's parameters (``model.blocks``) for the mean cross-entropy on a batch.

    Computed in train mode (as the first training step sees it); the model's gradients and mode are
    restored afterwards.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        raise TypeError(f"{type(model).__name__} has no `blocks` ModuleList; per-block gradient norms need the "
                        "residual blocks there (the skeletons of analysis.models do)")
    params = [[p for p in b.parameters() if p.requires_grad] for b in blocks]
    flat = [p for ps in params for p in ps]
    was = model.training
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point() or "running" in k}
    try:
        loss = F.cross_entropy(model(images.float()), labels)
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    finally:
        model.train(was)
        model.load_state_dict(state, strict=False)  # BatchNorm running statistics moved by the forward pass
    out, i = [], 0
    for ps in params:
        g = [x for x in grads[i:i + len(ps)] if x is not None]
        i += len(ps)
        out.append(float(torch.sqrt(sum((x.double() ** 2).sum() for x in g))) if g else 0.0)
    return out


def train_throughput(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 5,
                     warmup: int = 2, lr: float = 0.0) -> float:
    """Images per second of SGD steps on the batch ``images``, from the fastest of ``steps`` timed steps.

    The fastest step, as ``timeit`` advises: other load on the machine only ever slows a step down (a
    2-core audit measured 380 images/s against 5000 for the same model while a test run shared the
    cores), so the minimum time is the estimate least disturbed by it.

    ``lr=0`` by default, so the weights do not move (the momentum-free update still runs); the
    BatchNorm statistics are restored afterwards.
    """
    steps = check_int("steps", steps, min_value=1)
    warmup = check_int("warmup", warmup, min_value=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    was = model.training
    model.train()
    times = []
    try:
        for i in range(warmup + steps):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(images.float()), labels).backward()
            opt.step()
            if images.is_cuda:
                torch.cuda.synchronize(images.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        opt.zero_grad(set_to_none=True)
        model.load_state_dict(state)
        model.train(was)
    return images.shape[0] / min(times)
