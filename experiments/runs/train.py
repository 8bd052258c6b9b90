"""The training loop: one run directory per run, fast on a GPU, exact resume on the CPU, data-parallel.

``train(config, run_dir)``: SGD with Nesterov momentum (weight decay on every parameter except those
a model's ``no_weight_decay()`` names, see ``parameter_groups``; the fused CUDA kernel where it
exists, ``make_optimizer``), optional label smoothing, a ``step`` / ``cosine`` (per epoch) or
``onecycle`` (per step) lr schedule, each a pure function of the step (``lr_at_step``) so no
scheduler state can drift, a tqdm bar with loss, accuracy and images/s, a checkpoint after every
epoch, resume from it, ``result.json`` at the end, and no work at all for a finished run.
Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)`` and the global torch
RNG state is checkpointed, so a run killed after any epoch resumes to bit-identical weights and
metrics on CPU (``tests/test_train.py``).

The hot loop (``Trainer.train_epoch``) keeps the data on the device as uint8 (``ImageDataset.to``)
and crops, flips and normalises there (``iterate_batches``); the loss sum, correct count and the
first step with a non-finite loss are accumulated on the device and read every ``CHECK_EVERY``
steps and at the end of the epoch, so the host never waits for the device in between. Options
(``TrainConfig``): bf16 autocast, float16 autocast with loss scaling (GradScaler, its state in the
checkpoint), channels_last, ``torch.compile`` (a warm-up on throw-away batches absorbs compile time
before the clock starts, ``compile_seconds`` in ``result.json``), deterministic kernels, evaluation
every ``eval_every`` epochs under the same autocast.

A non-finite loss stops the run with ``FloatingPointError``: the first bad global step, where the
non-finite values first appeared (the epoch is replayed eagerly from a snapshot taken at its start,
checking gradients and weights after every step, then the offending batch runs forward with hooks
that name the first module whose output is non-finite) and what to try. With
``on_nonfinite="stop"`` the run ends there as finished instead, the diagnosis in ``result.json``.

Data-parallel (``torchrun``, ``experiments.runs.distributed``): every rank computes its slice of each
global batch, its loss is scaled by ``world_size / global_batch`` so DDP's gradient average is the
gradient of the global batch's mean loss, BatchNorm is made global, and only rank 0 writes the run
directory. Dropout (no registered model uses it by default) draws per rank, so such a model is not
the one-process model.

The schedules and the optimizer are ``experiments.runs.schedule``'s, the non-finite diagnosis
``experiments.runs.nonfinite``'s; ``experiments.runs.store.load_run(run_dir) -> (model, config)``
rebuilds a trained model for analyses, and ``experiments.cli.train`` is the command.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from analysis.models import build_model, list_models, model_info
from analysis.probes.fp16_peaks import FP16_MAX  # 65504: larger values overflow to inf in float16
from experiments.runs.data import ImageDataset, iterate_batches, load_dataset
from experiments.runs.distributed import DistContext, all_reduce_min, all_reduce_sum, convert_batchnorm
from experiments.runs.nonfinite import NonFiniteDiagnosis, NonFiniteLoss, rng_state, set_rng_state
from experiments.runs.provenance import provenance
from experiments.runs.schedule import (
    lr_at_epoch,
    lr_at_step,
    make_optimizer,
    parameter_groups,
    seed_for,
    steps_per_epoch,
)
from experiments.runs.store import RunDir, TrainConfig, check_device, environment_info

__all__ = ["train", "evaluate", "Trainer", "TrainResult", "CHECK_EVERY", "NonFiniteLoss", "FP16_MAX",
           "check_trainable", "cpu_threads", "load_training_data",
           # re-exported from experiments.runs.schedule
           "lr_at_epoch", "lr_at_step", "steps_per_epoch", "parameter_groups", "make_optimizer"]

# Steps between reads of the device-side accumulators (progress bar, non-finite flag): one host
# sync per CHECK_EVERY steps instead of one per step.
CHECK_EVERY = 50
_NO_BAD_STEP = 2 ** 62


# --- building blocks --------------------------------------------------------------------------

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES.get(precision, torch.bfloat16),
                          enabled=precision in _AUTOCAST_DTYPES)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, split: str = "test", batch_size: int = 512,
             device: str | torch.device = "cpu", *, precision: str = "fp32",
             channels_last: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``split`` of ``data``.

    Sums stay on the device and are read once; ``precision="bf16"`` / ``"fp16"`` evaluates under that autocast.
    """
    images, labels = data.split(split)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for x, y in iterate_batches(images, labels, batch_size, data.mean, data.std, channels_last=channels_last):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, precision):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    finally:
        model.train(was_training)
    n = labels.shape[0]
    return float(loss_sum) / n, int(correct) / n


def _check_device(device: torch.device) -> None:
    check_device(device)  # experiments.runs.store: the one check, shared with checkpoint loading and the analyses


def check_trainable(config: TrainConfig) -> None:
    """Refuse a config whose model cannot be built, before anything is written (``train`` calls it first).

    The model is built once on the CPU (well under a second for every registered model; under
    ``fork_rng``, so the caller's RNG state is untouched): a misspelt option name or a bad option
    value is a ValueError naming it and the model's valid options with their defaults.
    """
    if config.model not in list_models():
        raise ValueError(f"unknown model {config.model!r}; registered models: {', '.join(list_models())} "
                         "(`blockaudit models` describes them)")
    defaults = model_info(config.model).defaults()
    valid = ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in defaults.items()) or "none"
    unknown = sorted(set(config.model_options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for model {config.model!r}; valid "
                         f"options (with defaults): {valid}; pass them as --option KEY=VALUE")
    try:
        with torch.random.fork_rng(devices=[]):
            build_model(config.model, **config.model_options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model {config.model!r} cannot be built with options {config.model_options} ({exc}); "
                         f"valid options (with defaults): {valid}") from None


def load_training_data(config: TrainConfig, progress: bool) -> ImageDataset:
    """``config``'s dataset; a bad dataset option is a ValueError (``load_dataset`` says which and the valid ones)."""
    try:
        return load_dataset(config.dataset, show_progress=progress, **config.dataset_options)
    except TypeError as exc:  # unknown/missing option names, or an option of the wrong type
        raise ValueError(f"{exc} (blockaudit: --data-option KEY=VALUE)") from None


_CPU_AUTOCAST_ERROR: dict[str, str] = {}  # per precision, filled once: "" if it trains on this CPU, else why not


def _check_precision(precision: str, device: torch.device) -> None:
    if precision not in _AUTOCAST_DTYPES:
        return
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision='bf16' needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
                             "has none: use precision='fp16' or 'fp32'")
        return
    if precision not in _CPU_AUTOCAST_ERROR:
        try:  # a conv + BatchNorm + linear step under CPU autocast: what training needs
            net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2))
            with torch.autocast("cpu", dtype=_AUTOCAST_DTYPES[precision]):
                out = net(torch.randn(2, 3, 6, 6))
            F.cross_entropy(out.float(), torch.tensor([0, 1])).backward()
            _CPU_AUTOCAST_ERROR[precision] = ""
        except Exception as exc:  # noqa: BLE001 - any failure means the same: this autocast does not run here
            _CPU_AUTOCAST_ERROR[precision] = f"{type(exc).__name__}: {exc}"
    if _CPU_AUTOCAST_ERROR[precision]:
        raise ValueError(f"precision={precision!r} does not run on this CPU with torch {torch.__version__} "
                         f"({_CPU_AUTOCAST_ERROR[precision]}); use precision='fp32'")


@contextlib.contextmanager
def _kernel_flags(deterministic: bool, device: torch.device):
    """Deterministic kernels on request, cuDNN autotuning otherwise; the previous flags are restored."""
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    try:
        if deterministic:
            if device.type == "cuda":
                # cuBLAS needs this before its first handle is made to be deterministic.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            cudnn.deterministic, cudnn.benchmark = True, False
        elif device.type == "cuda":
            cudnn.benchmark = True
        yield
    except RuntimeError as exc:
        if deterministic and "deterministic" in str(exc):
            raise RuntimeError(f"{exc}\n(deterministic=True: an operation of this model has no deterministic "
                               "kernel on this device; train with deterministic=False)") from exc
        raise
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]


def _perturb_weights(net: nn.Module, ulps: int, seed: int) -> None:
    """Scale every initial weight by 1 +- ulps * 2^-23 (signs at random): float noise at its source.

    A rounding-size difference in every parameter, as another machine's kernels make in every
    result; a shift of the inputs would not do, since the first BatchNorm subtracts it. The signs
    come from a generator of their own, so the run's global random stream (data order,
    augmentation, dropout) is the unperturbed run's.
    """
    gen = torch.Generator().manual_seed(0x5EED + seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.is_floating_point():
                signs = torch.randint(0, 2, p.shape, generator=gen).to(p.device, p.dtype) * 2 - 1
                p.mul_(1.0 + ulps * 2.0 ** -23 * signs)


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: torch.device | str = "cpu"):
    """``threads`` torch threads while on the CPU (restored afterwards); None or another device: untouched."""
    if threads is None or torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- one process's share of a run -------------------------------------------------------------

class Trainer(NonFiniteDiagnosis):
    """The model, optimizer and training step of one run on one process (``train`` and the benchmark use it).

    ``net`` is the plain module (its BatchNorm made global when data-parallel), ``model`` the same
    wrapped in DDP when data-parallel, ``step_model`` that compiled when ``config.compile``.
    """

    def __init__(self, config: TrainConfig, num_classes: int, *, dist: DistContext | None = None,
                 device: torch.device | str | None = None) -> None:
        self.config = config
        self.dist = dist if dist is not None else DistContext()
        self.device = torch.device(device) if device is not None else self.dist.device(config.device)
        _check_device(self.device)
        _check_precision(config.precision, self.device)
        # NHWC only on CUDA: torch 2.13's CPU backward of a 1x1 stride-2 convolution with few channels
        # (ResNet-20 at width 4) crashes the process on channels_last tensors, and the CPU gains little.
        self.channels_last = config.channels_last and self.device.type == "cuda"
        torch.manual_seed(config.seed)
        net = build_model(config.model, num_classes=num_classes, **config.model_options).to(self.device)
        if config.perturb_ulps:
            _perturb_weights(net, config.perturb_ulps, config.seed)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.dist.enabled:
            net = convert_batchnorm(net, self.device)
        self.net = net
        self.optimizer = make_optimizer(net, config)
        # Dynamic loss scaling for float16 (a no-op pass-through otherwise): gradients that overflow
        # make the scaler skip the step and halve the scale.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.model: nn.Module = net
        if self.dist.enabled:
            # Buffers need no broadcast each step: global BatchNorm gives every rank the same running
            # statistics. torch 2.13 renamed the switch (the old name warns); 2.11 knows only the old one.
            no_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})
            self.model = DistributedDataParallel(net, device_ids=[self.device] if self.device.type == "cuda" else None,
                                                 gradient_as_bucket_view=True, **no_sync)
        self.step_model = torch.compile(self.model, mode=config.compile_mode) if config.compile else self.model
        self.compile_seconds = 0.0
        self._snapshot: dict | None = None

    # state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def _take_snapshot(self, epoch: int) -> None:
        self._snapshot = {"epoch": epoch, "model": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                          "optimizer": copy.deepcopy(self.optimizer.state_dict()), "rng": rng_state(self.device),
                          "scaler": copy.deepcopy(self.scaler.state_dict()) if self.scaler.is_enabled() else None}

    # data ---------------------------------------------------------------------------------
    def batches(self, data: ImageDataset, epoch: int):
        """This rank's part of every global batch of ``epoch`` (same draws on every rank)."""
        c = self.config
        gen = torch.Generator().manual_seed(seed_for(c, epoch))
        shard = (self.dist.rank, self.dist.world_size) if self.dist.enabled else None
        return iterate_batches(data.train_images, data.train_labels, c.batch_size, data.mean, data.std,
                               shuffle=True, generator=gen, augment=c.augment, pad_mode=c.pad_mode,
                               drop_last=c.drop_last, channels_last=self.channels_last, shard=shard)

    def _global_batch(self, n_train: int, i: int) -> int:
        return min(self.config.batch_size, n_train - i * self.config.batch_size)

    # the step -----------------------------------------------------------------------------
    def _forward_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with _autocast(self.device, self.config.precision):
            logits = model(x)
        loss_sum = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=self.config.label_smoothing)
        return logits, loss_sum

    def _backward(self, loss_sum: torch.Tensor, global_batch: int) -> None:
        # DDP averages the ranks' gradients; each rank's sum scaled by world/global_batch makes that
        # average the gradient of the global batch's mean loss, whatever the slice sizes.
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss_sum * (self.dist.world_size / global_batch)).backward()

    def _update(self) -> None:
        # fp16: unscale, skip the step if a gradient overflowed, adapt the scale; else optimizer.step()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def step(self, x: torch.Tensor, y: torch.Tensor, global_batch: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this rank's part ``(x, y)``; returns the loss sum and correct count (on device)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits, loss_sum = self._forward_loss(self.step_model, x, y)
        self._backward(loss_sum, global_batch)
        self._update()
        return loss_sum.detach(), (logits.detach().argmax(1) == y).sum()

    def warm_up(self, data: ImageDataset, repeats: int = 3) -> float:
        """Compile (``config.compile``) on throw-away batches of every shape an epoch has; state is restored.

        Returns the seconds spent (also added to ``compile_seconds``); 0 without compile. Three
        repeats per shape: CUDA-graph modes record on a later call than the first.
        """
        if not self.config.compile:
            return 0.0
        c, n = self.config, data.train_images.shape[0]
        spe = steps_per_epoch(c, n)
        sizes = sorted({self._local_size(self._global_batch(n, i)) for i in (0, spe - 1)}, reverse=True)
        state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        rng = rng_state(self.device)
        gen = torch.Generator(device=self.device).manual_seed(0)
        _sync(self.device)
        t0 = time.perf_counter()
        for size in sizes:
            x = torch.randn(size, *data.train_images.shape[1:], device=self.device, generator=gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, int(data.num_classes), (size,), device=self.device, generator=gen)
            for _ in range(repeats):
                _, loss_sum = self._forward_loss(self.step_model, x, y)
                self._backward(loss_sum, max(size, 1) * self.dist.world_size)
        _sync(self.device)
        took = time.perf_counter() - t0
        self.optimizer.zero_grad(set_to_none=True)
        self.net.load_state_dict(state)
        set_rng_state(rng, self.device)
        self.compile_seconds += took
        return took

    def _local_size(self, global_batch: int) -> int:
        if not self.dist.enabled:
            return global_batch
        size, extra = divmod(global_batch, self.dist.world_size)
        return size + (self.dist.rank < extra)

    # an epoch -----------------------------------------------------------------------------
    def train_epoch(self, data: ImageDataset, epoch: int, bar=None) -> dict:
        """Train one epoch; returns global ``loss_sum``, ``correct``, ``images``, ``train_seconds``.

        ``data`` must be on this trainer's device. Raises ``FloatingPointError`` (module docstring)
        when a loss of the epoch was not finite.
        """
        c, dev = self.config, self.device
        n = data.train_images.shape[0]
        spe = steps_per_epoch(c, n)
        first = epoch * spe
        if any(s < self.dist.world_size for s in {self._global_batch(n, 0), self._global_batch(n, spe - 1)}):
            raise ValueError(f"a batch of {self._global_batch(n, spe - 1)} images cannot be split over "
                             f"{self.dist.world_size} processes; set drop_last=True or change batch_size")
        lrs = [lr_at_step(c, first + i, spe) for i in range(spe)]
        self._take_snapshot(epoch)
        self.net.train()
        loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
        correct_acc = torch.zeros((), dtype=torch.int64, device=dev)
        bad = torch.full((), _NO_BAD_STEP, dtype=torch.int64, device=dev)
        step_dev = torch.full((), first, dtype=torch.int64, device=dev)
        images = 0
        _sync(dev)
        t0 = last_t = time.perf_counter()
        last_images = 0
        for i, (x, y) in enumerate(self.batches(data, epoch)):
            loss_sum, correct = self.step(x, y, self._global_batch(n, i), lrs[i])
            loss_acc += loss_sum
            correct_acc += correct
            bad = torch.where(torch.isfinite(loss_sum) | (bad != _NO_BAD_STEP), bad, step_dev)
            step_dev += 1
            images += self._global_batch(n, i)
            if bar is not None:
                bar.update(1)
            if (i + 1) % CHECK_EVERY == 0 and i + 1 < spe:
                bad_step = int(all_reduce_min(bad.clone(), self.dist))
                if bad_step != _NO_BAD_STEP:
                    self.raise_non_finite(data, epoch, bad_step)
                if bar is not None:
                    now = time.perf_counter()
                    scale = self.dist.world_size  # rank 0's running figures stand for the others'
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss_acc) * scale / images:.3f}",
                                    acc=f"{int(correct_acc) * scale / images:.3f}",
                                    img_s=f"{(images - last_images) / max(now - last_t, 1e-9):,.0f}")
                    last_t, last_images = now, images
        totals = all_reduce_sum(torch.stack([loss_acc, correct_acc.to(torch.float64)]), self.dist)
        bad_step = int(all_reduce_min(bad.clone(), self.dist))
        loss_total, correct_total = totals.tolist()  # the epoch's one full sync
        train_seconds = time.perf_counter() - t0
        if bad_step != _NO_BAD_STEP:
            self.raise_non_finite(data, epoch, bad_step)
        if bar is not None:
            bar.set_postfix(epoch=epoch, loss=f"{loss_total / images:.3f}", acc=f"{correct_total / images:.3f}",
                            img_s=f"{images / train_seconds:,.0f}")
        return {"loss_sum": loss_total, "correct": correct_total, "images": images, "train_seconds": train_seconds,
                "lr": lrs[0]}

    def evaluate(self, data: ImageDataset, split: str = "test") -> tuple[float, float]:
        # The eager module: evaluation is not timed, and a compiled eval graph would be a recompile.
        return evaluate(self.net, data, split, self.config.eval_batch_size, self.device,
                        precision=self.config.precision, channels_last=self.channels_last)

# --- a run ------------------------------------------------------------------------------------

class TrainResult(dict):
    """``{"epochs_run": int, "finished": bool, "metrics": list[dict]}``."""


def train(config: TrainConfig, run_dir: Path | str, *, progress: bool = True,
          max_epochs_this_call: int | None = None, data: ImageDataset | None = None,
          dist: DistContext | None = None) -> TrainResult:
    """Train ``config`` into ``run_dir``, resuming from its checkpoint; return what was done.

    ``max_epochs_this_call`` stops after that many epochs (the checkpoint is written, so the next
    call resumes): for splitting long jobs and for testing resume. ``data`` skips reloading the
    dataset (it must be what ``config.dataset`` / ``dataset_options`` load; it is moved to the
    device once if it is elsewhere). ``dist`` defaults to what ``torchrun`` put in the
    environment (one process without it); the process group is joined and left here if needed.
    """
    if max_epochs_this_call is not None and (not isinstance(max_epochs_this_call, int) or max_epochs_this_call < 1):
        raise ValueError(f"max_epochs_this_call must be a positive int or None; got {max_epochs_this_call!r}")
    dist = dist if dist is not None else DistContext.from_env()
    device = dist.device(config.device)
    rd = RunDir(run_dir)
    if not rd.result_path.exists():
        # What can fail without training fails here, before the run directory is written (a typo
        # must not leave a config.json behind) and before joining a process group (NCCL on a
        # machine without CUDA fails obscurely).
        _check_device(device)
        _check_precision(config.precision, device)
        check_trainable(config)
        if data is None:
            data = load_training_data(config, progress and dist.is_main)
    started = dist.start(device) if dist.enabled else False
    try:
        error = None
        if dist.is_main:
            try:
                rd.init(config, environment=False)
            except ValueError as exc:
                error = str(exc)
        error = dist.broadcast_object(error)
        if error is not None:
            raise ValueError(error)
        if rd.result_path.exists():
            return TrainResult(epochs_run=0, finished=True, metrics=rd.read_metrics())
        with _kernel_flags(config.deterministic, device), cpu_threads(config.threads, device):
            return _train(config, rd, device, dist, progress, max_epochs_this_call, data)
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _train(config, rd: RunDir, device, dist: DistContext, progress, max_epochs_this_call, data) -> TrainResult:
    _check_device(device)
    # To the CPU: the RNG states must stay CPU byte tensors; load_state_dict moves the rest.
    ckpt = rd.load_checkpoint(map_location="cpu")
    if ckpt is not None and ckpt["epoch"] >= config.epochs:
        return TrainResult(epochs_run=0, finished=True, metrics=ckpt["metrics"])
    data = data if data is not None else load_training_data(config, progress and dist.is_main)
    if data.device != device:
        data = data.to(device)
    if dist.is_main:
        rd.write_environment(environment_info(str(device), dist.world_size))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    trainer = Trainer(config, data.num_classes, dist=dist, device=device)
    start_epoch, metrics = 0, []
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
        set_rng_state({"cpu": ckpt["rng_state"], **({"cuda": ckpt["cuda_rng_state"]} if "cuda_rng_state" in ckpt
                                                      else {})}, device)
        start_epoch, metrics = ckpt["epoch"], ckpt["metrics"]
    end_epoch = config.epochs if max_epochs_this_call is None else min(config.epochs, start_epoch + max_epochs_this_call)
    trainer.warm_up(data)
    spe = steps_per_epoch(config, data.train_images.shape[0])
    bar = None
    if progress and dist.is_main:
        bar = tqdm(total=(end_epoch - start_epoch) * spe, desc=f"train {config.model}", unit="step")
    stopped = None
    try:
        for epoch in range(start_epoch, end_epoch):
            t0 = time.perf_counter()
            try:
                stats = trainer.train_epoch(data, epoch, bar)
            except NonFiniteLoss as exc:
                if config.on_nonfinite != "stop":
                    raise
                # The outcome being measured: end the run as finished, keeping the last good epoch's checkpoint.
                stopped = {**exc.info, "message": str(exc)}
                break
            test_loss = test_acc = math.nan
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                test_loss, test_acc = trainer.evaluate(data, "test")
            metrics = metrics + [{
                "epoch": epoch + 1, "lr": stats["lr"], "loss": stats["loss_sum"] / stats["images"],
                "acc": stats["correct"] / stats["images"], "test_loss": test_loss, "test_acc": test_acc,
                "seconds": time.perf_counter() - t0, "train_seconds": stats["train_seconds"],
                "images_per_s": stats["images"] / stats["train_seconds"]}]
            if dist.is_main:
                state = {**trainer.state_dict(), "epoch": epoch + 1, "rng_state": torch.get_rng_state(),
                         "metrics": metrics, "config": config.to_dict()}
                if device.type == "cuda":
                    state["cuda_rng_state"] = torch.cuda.get_rng_state(device)
                rd.save_checkpoint(state)
                rd.write_metrics(metrics)
    finally:
        if bar is not None:
            bar.close()
    finished = end_epoch >= config.epochs or stopped is not None
    if finished and dist.is_main:
        rd.write_result(_result(config, metrics, trainer, device, dist, stopped))
    epochs_run = (metrics[-1]["epoch"] if metrics else 0) - start_epoch
    out = TrainResult(epochs_run=epochs_run, finished=finished, metrics=metrics)
    if stopped is not None:
        out["nonfinite"] = stopped
    return out


def _result(config: TrainConfig, metrics: list[dict], trainer: Trainer, device: torch.device,
            dist: DistContext, stopped: dict | None = None) -> dict:
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    evaluated = [m["test_acc"] for m in metrics if isinstance(m.get("test_acc"), float) and math.isfinite(m["test_acc"])]
    seconds = [m.get("train_seconds", math.nan) for m in metrics]
    return {
        "finished": True,
        "model": config.model,
        "dataset": config.dataset,
        "seed": config.seed,
        "epochs": config.epochs,
        "final": {k: clean(v) for k, v in metrics[-1].items()} if metrics else {},
        "best_test_acc": max(evaluated) if evaluated else None,
        # NaN (null) when an epoch ran before train_seconds was recorded.
        "train_seconds": clean(float(sum(seconds))),
        "compile_seconds_last_call": trainer.compile_seconds,
        "peak_gpu_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
        "device": str(device),
        "world_size": dist.world_size,
        "precision": config.precision,
        "channels_last_applied": trainer.channels_last,
        # on_nonfinite="stop": the run ended early at a non-finite loss (step, layer, advice); else null.
        "nonfinite": stopped,
        "epochs_completed": metrics[-1]["epoch"] if metrics else 0,
        # The commit, packages and machine of the call that finished the run (environment.json
        # has the latest call's; a run resumed elsewhere differs between the two).
        "provenance": provenance(str(device)),
    }
