"""Learning-rate schedules (pure functions of the step), per-epoch seeds and the SGD optimizer of a run."""
from __future__ import annotations

import math

import torch
from torch import nn

from experiments.runs.store import SCHEDULES, TrainConfig

__all__ = ["steps_per_epoch", "lr_at_step", "lr_at_epoch", "seed_for", "parameter_groups", "make_optimizer"]


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    """Optimizer steps in one epoch of ``n_train`` images (global batches; ``drop_last`` drops the remainder)."""
    steps = n_train // config.batch_size if config.drop_last else math.ceil(n_train / config.batch_size)
    if steps < 1:
        raise ValueError(f"batch_size={config.batch_size} with drop_last=True leaves no batch of the {n_train} "
                         "training images; lower batch_size or set drop_last=False")
    return steps


def lr_at_step(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of (0-based, global) optimizer ``step``.

    ``step`` and ``cosine`` change per epoch (``lr_at_epoch``). ``onecycle``: with T = epochs x
    steps_per_epoch steps and W = round(warmup_fraction * T) warm-up steps, lr * (s + 1) / W for
    s < W (the first step already moves), then lr * (T - s) / (T - W), which reaches 0 at s = T.
    """
    if config.schedule != "onecycle":
        return lr_at_epoch(config, step // steps_per_epoch)
    total = config.epochs * steps_per_epoch
    warm = round(config.warmup_fraction * total)
    if step < warm:
        return config.lr * (step + 1) / warm
    return config.lr * max(0, total - step) / (total - warm)


def lr_at_epoch(config: TrainConfig, epoch: int, steps_per_epoch: int | None = None) -> float:
    """Learning rate at the first step of (0-based) ``epoch`` (throughout it for ``step`` / ``cosine``)."""
    if config.schedule == "onecycle":
        if steps_per_epoch is None:
            raise ValueError("the onecycle schedule changes every step: pass steps_per_epoch (or use lr_at_step)")
        return lr_at_step(config, epoch * steps_per_epoch, steps_per_epoch)
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * epoch / config.epochs))
    assert config.schedule in SCHEDULES
    return config.lr * config.gamma ** sum(epoch >= m for m in config.milestones)


def seed_for(config: TrainConfig, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffling and augmentation: a function of (seed, epoch) alone, so a resume replays it."""
    return config.seed * 1_000_003 + epoch


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """SGD parameter groups: weight decay on every parameter except those ``model.no_weight_decay()`` names.

    Without such a method (or with an empty set) there is one group, as in the ResNEst authors' code
    (BN and biases decayed too), so checkpoints of older runs keep their one-group optimizer state.
    Otherwise the named parameters (the Newton-CG nets' alpha/beta scalars, which the ND authors keep
    out of weight decay) form a second group with ``weight_decay=0``; a name that is not a parameter
    raises, since a silent miss would decay what the model asked to exclude.
    """
    named = dict(model.named_parameters())
    excluded = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    unknown = sorted(excluded - set(named))
    if unknown:
        raise ValueError(f"{type(model).__name__}.no_weight_decay() names {unknown}, which are not parameters "
                         f"of the model; expected names from named_parameters(), e.g. {next(iter(named), '')!r}")
    decayed = [p for n, p in named.items() if n not in excluded]
    if not excluded:
        return [{"params": decayed, "weight_decay": weight_decay}]
    return [{"params": decayed, "weight_decay": weight_decay},
            {"params": [p for n, p in named.items() if n in excluded], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig, fused: bool | None = None) -> torch.optim.SGD:
    """SGD of ``config`` over ``parameter_groups(model)``.

    ``fused=None`` uses the fused kernel (one launch for all parameters, the same update as the
    per-parameter loop: ``tests/test_train.py`` compares them) when the parameters are on CUDA and
    this torch has it, and the default implementation otherwise; True insists, False refuses.
    """
    kwargs = dict(lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                  weight_decay=config.weight_decay)
    groups = parameter_groups(model, config.weight_decay)
    if fused is None:
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        if on_cuda:
            try:
                return torch.optim.SGD(groups, fused=True, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                pass  # an older torch or an unsupported dtype: the default kernel does the same update
        return torch.optim.SGD(groups, **kwargs)
    return torch.optim.SGD(groups, fused=bool(fused), **kwargs)
