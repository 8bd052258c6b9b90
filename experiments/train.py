"""A minimal but real training loop on CPU datasets (``experiments.data``) writing a run directory.

``train(config, run_dir)``: SGD with Nesterov momentum (weight decay on every parameter except those
a model's ``no_weight_decay()`` names, see ``parameter_groups``), optional label smoothing, a
``step`` or ``cosine`` lr schedule (set per epoch from a pure function of the epoch, so no scheduler
state can drift), a tqdm bar, a checkpoint after every epoch, resume from it, and no work at all for
a finished run. Shuffling uses a generator seeded by ``(seed, epoch)`` and the global torch RNG
state is checkpointed, so a run killed after any epoch resumes to bit-identical weights and metrics
on CPU (``tests/test_train.py``). A non-finite loss raises ``FloatingPointError`` naming the global
step.

``load_run(run_dir) -> (model, config)`` rebuilds the model from the run for analyses.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from analysis.models import build_model
from experiments.data import ImageDataset, iterate_batches, load_dataset
from experiments.rundir import RunDir, TrainConfig

__all__ = ["train", "load_run", "lr_at_epoch", "evaluate", "parameter_groups", "add_subcommand", "TrainResult"]


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used throughout (0-based) ``epoch``."""
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return config.lr * config.gamma ** sum(epoch >= m for m in config.milestones)


def _seed_for(config: TrainConfig, epoch: int) -> int:
    return config.seed * 1_000_003 + epoch


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, split: str = "test", batch_size: int = 512,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``split`` of ``data``."""
    images = data.test_images if split == "test" else data.train_images
    labels = data.test_labels if split == "test" else data.train_labels
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for x, y in iterate_batches(images, labels, batch_size, data.mean, data.std):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = labels.shape[0]
    return total_loss / n, correct / n


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


class TrainResult(dict):
    """``{"epochs_run": int, "finished": bool, "metrics": list[dict]}``."""


def _build(config: TrainConfig, data: ImageDataset) -> nn.Module:
    return build_model(config.model, num_classes=data.num_classes, **config.model_options)


def train(config: TrainConfig, run_dir: Path | str, *, progress: bool = True,
          max_epochs_this_call: int | None = None, data: ImageDataset | None = None) -> TrainResult:
    """Train ``config`` into ``run_dir``, resuming from its checkpoint; return what was done.

    ``max_epochs_this_call`` stops after that many epochs (the checkpoint is written, so the next
    call resumes): for splitting long jobs and for testing resume. ``data`` skips reloading the
    dataset (it must be what ``config.dataset`` / ``dataset_options`` load).
    """
    rd = RunDir(run_dir)
    rd.init(config)
    device = torch.device(config.device)
    data = data if data is not None else load_dataset(config.dataset, **config.dataset_options)

    torch.manual_seed(config.seed)
    model = _build(config, data).to(device)
    optimizer = torch.optim.SGD(parameter_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                                weight_decay=config.weight_decay)
    start_epoch, metrics = 0, []
    ckpt = rd.load_checkpoint(map_location=device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_state"])
        start_epoch, metrics = ckpt["epoch"], ckpt["metrics"]
    if start_epoch >= config.epochs:
        return TrainResult(epochs_run=0, finished=True, metrics=metrics)

    end_epoch = config.epochs if max_epochs_this_call is None else min(config.epochs, start_epoch + max_epochs_this_call)
    n_train = data.train_images.shape[0]
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(end_epoch - start_epoch) * steps_per_epoch, desc=f"train {config.model}", unit="step")
    try:
        for epoch in range(start_epoch, end_epoch):
            t0 = time.perf_counter()
            lr = lr_at_epoch(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            gen = torch.Generator().manual_seed(_seed_for(config, epoch))
            loss_sum, correct = 0.0, 0
            batches = iterate_batches(data.train_images, data.train_labels, config.batch_size, data.mean,
                                      data.std, shuffle=True, generator=gen, augment=config.augment)
            for i, (x, y) in enumerate(batches):
                x, y = x.to(device), y.to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                if not torch.isfinite(loss):
                    step = epoch * steps_per_epoch + i
                    raise FloatingPointError(
                        f"non-finite training loss {float(loss.detach())} at step {step} (epoch {epoch}, batch {i}, "
                        f"lr {lr:g}); lower the learning rate or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * y.shape[0]
                correct += int((logits.detach().argmax(1) == y).sum())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss):.3f}")
            test_loss, test_acc = evaluate(model, data, "test", device=device)
            metrics = metrics + [{"epoch": epoch + 1, "lr": lr, "loss": loss_sum / n_train, "acc": correct / n_train,
                                  "test_loss": test_loss, "test_acc": test_acc,
                                  "seconds": time.perf_counter() - t0}]
            rd.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "epoch": epoch + 1, "rng_state": torch.get_rng_state(), "metrics": metrics,
                                "config": config.to_dict()})
            rd.write_metrics(metrics)
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(epochs_run=end_epoch - start_epoch, finished=end_epoch >= config.epochs, metrics=metrics)


def load_run(run_dir: Path | str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained model (eval mode, on ``map_location``) and config of a run directory."""
    rd = RunDir(run_dir)
    config = rd.load_config()
    ckpt = rd.load_checkpoint(map_location=map_location)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint.pt in {rd.path}: the run has not finished an epoch")
    num_classes = _num_classes_from_state(ckpt["model"])
    model = build_model(config.model, num_classes=num_classes, **config.model_options)
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), config


def _num_classes_from_state(state: dict) -> int:
    # The last linear layer's bias has num_classes entries in every registered model.
    bias = [v for k, v in state.items() if k.endswith("bias") and v.ndim == 1 and ("fc." in k or "heads." in k)]
    if not bias:
        raise ValueError("cannot infer num_classes from the checkpoint: no fc/heads bias found")
    return int(bias[-1].shape[0])


# --- command line -----------------------------------------------------------------------------

def _parse_option(text: str) -> tuple[str, object]:
    import json

    if "=" not in text:
        raise ValueError(f"--option must look like KEY=VALUE; got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a registered model on a CPU dataset into a run directory",
                              description="Train MODEL; re-running the same command resumes or does nothing.")
    p.add_argument("model", metavar="MODEL", help="registered model name (see analysis.models.list_models())")
    p.add_argument("--data", default="digits", help="dataset name (default: %(default)s)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. n_train=2000 (repeatable)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. width=8 (repeatable)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--schedule", choices=("step", "cosine"), default="cosine")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the training loss, in [0, 1) (default: %(default)s)")
    p.add_argument("--augment", action="store_true", help="reflect-pad crop + horizontal flip")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    config = TrainConfig(
        model=args.model, dataset=args.data,
        model_options=dict(_parse_option(o) for o in args.option),
        dataset_options=dict(_parse_option(o) for o in args.data_option),
        seed=args.seed, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        weight_decay=args.weight_decay, momentum=args.momentum, schedule=args.schedule, augment=args.augment,
        label_smoothing=args.label_smoothing)
    result = train(config, args.out, progress=not args.no_progress)
    if result["epochs_run"] == 0:
        print(f"{args.out}: already finished ({config.epochs} epochs); nothing to do")
    last = result["metrics"][-1]
    print(f"{args.out}: epoch {last['epoch']}/{config.epochs} loss {last['loss']:.4f} acc {last['acc']:.4f} "
          f"test_loss {last['test_loss']:.4f} test_acc {last['test_acc']:.4f}")
    return 0
