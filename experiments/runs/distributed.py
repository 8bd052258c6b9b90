"""Data-parallel training across processes (``torchrun``): the process group and global BatchNorm.

``torchrun --nproc_per_node N -m experiments.cli train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; ``DistContext.from_env``
reads them and ``DistContext.start`` joins the process group (NCCL on CUDA, Gloo on CPU). Every
rank draws the same permutation and augmentations from the same seeded generator and keeps its
slice of every global batch (``experiments.runs.data.iterate_batches(shard=...)``), so the global batch
is the one-process batch and DDP's averaged gradient is its gradient (``experiments.runs.train``).

BatchNorm statistics must be global too, or the N-process run is a different model from the
one-process run. On CUDA that is ``torch.nn.SyncBatchNorm``. In torch 2.13 ``SyncBatchNorm``
refuses CPU tensors ("SyncBatchNorm expected input tensor to be on GPU ..."), so on CPU every
BatchNorm becomes ``GlobalBatchNorm``: the per-rank sums are combined with the autograd-aware
all-reduce ``_AllReduceSum`` (two all-reduces per layer and forward, and two back: the mean,
then the centred sum of squares, which avoids the cancellation of ``E[x^2] - E[x]^2``). The
consequence: CPU data parallelism is exact up to float summation order but slow (two extra
collectives per BatchNorm layer); it is there for tests and small machines, not for speed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "GlobalBatchNorm", "convert_batchnorm", "all_reduce_sum", "all_reduce_min"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ=None) -> "DistContext":
        """The context ``torchrun`` describes in the environment; one process when ``WORLD_SIZE`` is unset."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            values = {k: int(env.get(k, "0")) for k in _ENV}
        except ValueError:
            got = {k: env.get(k) for k in _ENV}
            raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them); got {got}") from None
        rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}; "
                             "expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
        return cls(rank, world, local)

    def device(self, requested: str) -> torch.device:
        """The device this rank trains on: ``cuda`` becomes ``cuda:LOCAL_RANK`` when data-parallel."""
        dev = torch.device(requested)
        if self.enabled and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", self.local_rank)
        return dev

    def start(self, device: torch.device) -> bool:
        """Join the process group if data-parallel and not joined yet; True if this call joined it."""
        if not self.enabled or dist.is_initialized():
            return False
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={self.world_size} but {', '.join(missing)} unset: start data-parallel "
                             "training with torchrun --nproc_per_node N, which sets them")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size,
                                **({"device_id": device} if device.type == "cuda" else {}))
        return True

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (identity when not data-parallel)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; ``t`` itself when not data-parallel)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_min(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients.

    Rank r's loss depends on every rank's statistics, so d(sum of losses)/d(local sum) collects
    each rank's upstream gradient: the backward is itself an all-reduce. (torch's
    ``torch.distributed.nn.functional.all_reduce`` does the same and is deprecated in 2.13.)
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are over the global batch of all ranks (module docstring).

    Outside a process group, or in eval mode, it is exactly the BatchNorm it replaced. Statistics:
    mean = sum_r S_r / N, var = sum_r sum (x - mean)^2 / N (biased, used to normalise, as BatchNorm);
    the running variance gets the unbiased N / (N - 1) version, as ``nn.BatchNorm``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N x C x ...); got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local_n = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dims), local_n]))
        n = sums[-1]
        mean = sums[:-1] / n
        var = _AllReduceSum.apply((xf - mean.view(shape)).square().sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` made global: ``SyncBatchNorm`` on CUDA, ``GlobalBatchNorm`` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global_bn(module)


def _to_global_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        ref = next(iter(list(module.parameters()) + list(module.buffers())), None)
        if ref is not None:
            out = out.to(ref.device)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_global_bn(child))
    return out

