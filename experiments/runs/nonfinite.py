"""A non-finite training loss: the error it raises, and the eager replay that finds where it started.

``NonFiniteDiagnosis`` is a mixin of ``experiments.runs.train.Trainer``: the trainer sees a
non-finite loss only every ``CHECK_EVERY`` steps, so the diagnosis replays the epoch eagerly from the
snapshot taken at its start (weights, optimizer, scaler and RNG state), checks gradients and weights
after every step, and runs the offending batch forward with hooks that name the first module whose
output is non-finite.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from analysis.probes.fp16_peaks import FP16_MAX  # 65504: larger values overflow to inf in float16
from experiments.runs.data import ImageDataset
from experiments.runs.schedule import lr_at_step, steps_per_epoch

__all__ = ["NonFiniteLoss", "NonFiniteDiagnosis", "first_nonfinite", "rng_state", "set_rng_state"]


class NonFiniteLoss(FloatingPointError):
    """The training loss turned non-finite; ``info`` holds step, epoch, batch, lr, loss, where and advice."""

    def __init__(self, message: str, info: dict) -> None:
        super().__init__(message)
        self.info = info


def first_nonfinite(named_tensors) -> str | None:
    for name, t in named_tensors:
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def tensors_of(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in tensors_of(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in tensors_of(o)]
    return []


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class NonFiniteDiagnosis:
    """``raise_non_finite``: replay the epoch to the bad step and raise ``NonFiniteLoss`` naming where it went bad.

    Uses the trainer's ``config``, ``net``, ``model``, ``optimizer``, ``scaler``, ``device``,
    ``_snapshot`` (taken at the start of each epoch) and its ``batches`` / ``_forward_loss`` /
    ``_backward`` / ``_update`` / ``_global_batch`` steps, so the replay runs the same code.
    """

    def raise_non_finite(self, data: ImageDataset, epoch: int, bad_step: int) -> None:
        c = self.config
        n = data.train_images.shape[0]
        spe = steps_per_epoch(c, n)
        loss, where = self._diagnose(data, epoch, bad_step)
        lr = lr_at_step(c, bad_step, spe)
        advice = [f"lower the learning rate (lr={c.lr:g}; this step used {lr:g})"
                  + (" or lengthen the warm-up (warmup_fraction)" if c.schedule == "onecycle" else "")]
        if c.precision == "fp16":
            advice.append(f"train in bf16 or fp32 (precision='bf16' / 'fp32'; float16 overflows above {FP16_MAX:g})")
        elif c.precision != "fp32":
            advice.append("train in fp32 (precision='fp32'; bf16 keeps 8 mantissa bits)")
        if c.model.startswith("newton_resnet") and not c.model_options.get("second_order_tanh", False):
            advice.append("for Newton-ResNets set the model option second_order_tanh=True (a tanh after the "
                          "second-order term keeps it bounded, NRL sec. 4.4)")
        info = {"step": bad_step, "epoch": epoch, "batch": bad_step - epoch * spe, "lr": lr, "loss": loss,
                "where": where, "precision": c.precision, "advice": advice}
        raise NonFiniteLoss(
            f"non-finite training loss {loss} at step {bad_step} (epoch {epoch}, batch {bad_step - epoch * spe}, "
            f"lr {lr:g}): {where}. To fix: {'; '.join(advice)}", info)

    def _diagnose(self, data: ImageDataset, epoch: int, bad_step: int) -> tuple[str, str]:
        """Replay ``epoch`` eagerly from its start up to ``bad_step``; return (loss there, where it went bad)."""
        snap = self._snapshot
        assert snap is not None and snap["epoch"] == epoch
        self.net.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if snap.get("scaler") is not None:
            self.scaler.load_state_dict(snap["scaler"])
        set_rng_state(snap["rng"], self.device)
        c, n = self.config, data.train_images.shape[0]
        spe = steps_per_epoch(c, n)
        named_params = list(self.net.named_parameters())
        for i, (x, y) in enumerate(self.batches(data, epoch)):
            step = epoch * spe + i
            gb = self._global_batch(n, i)
            if step == bad_step:
                return self._diagnose_step(x, y, gb)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at_step(c, step, spe)
            _, loss_sum = self._forward_loss(self.model, x, y)
            self._backward(loss_sum, gb)
            # With loss scaling an overflowing gradient is expected: the scaler skips that step.
            name = None if self.scaler.is_enabled() else first_nonfinite((n_, p.grad) for n_, p in named_params)
            if name is not None:
                return "nan", (f"the loss was finite at step {step} but the gradient of parameter {name!r} was not; "
                               "the update made the weights non-finite")
            self._update()
            name = first_nonfinite(named_params)
            if name is not None:
                return "nan", (f"parameter {name!r} became non-finite in the update of step {step} "
                               f"(lr {lr_at_step(c, step, spe):g}): the update overflowed")
        return "nan", "an eager replay of the epoch did not reach the step (internal error)"

    def _diagnose_step(self, x: torch.Tensor, y: torch.Tensor, global_batch: int) -> tuple[str, str]:
        name = first_nonfinite(self.net.named_parameters())
        if name is not None:
            return "nan", f"parameter {name!r} was already non-finite before this step"
        if not bool(torch.isfinite(x).all()):
            return "nan", "the input batch holds non-finite values (check the data and its normalisation)"
        first: list[tuple[str, nn.Module]] = []
        names = {id(m): n for n, m in self.net.named_modules()}

        def hook(module, _inputs, output):
            if not first and any(t.is_floating_point() and not bool(torch.isfinite(t).all())
                                 for t in tensors_of(output)):
                first.append((names.get(id(module), "?") or "(the whole model)", module))

        handles = [m.register_forward_hook(hook) for m in self.net.modules()]
        try:
            _, loss_sum = self._forward_loss(self.model, x, y)
        finally:
            for h in handles:
                h.remove()
        loss = f"{float(loss_sum.detach()) / x.shape[0]:g}"
        if first:
            name, module = first[0]
            return loss, (f"module {name!r} ({type(module).__name__}) is the first whose output is non-finite "
                          "(its inputs and all weights were finite)")
        self._backward(loss_sum, global_batch)
        grad = first_nonfinite((n_, p.grad) for n_, p in self.net.named_parameters())
        if not math.isfinite(float(loss_sum.detach())):
            return loss, "every module output was finite but the loss was not (logits too large for the loss)"
        if grad is not None:
            return loss, f"the gradient of parameter {grad!r} was non-finite"
        return loss, ("an eager fp32-exact replay of this step was finite: the non-finite value came from "
                      "non-deterministic or compiled kernels (try compile=False, deterministic=True)")
