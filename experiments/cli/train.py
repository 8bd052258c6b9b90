"""``blockaudit train``: train one model (or one per seed) into a run directory (experiments.runs.train)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import torch

from experiments.runs.distributed import DistContext
from experiments.runs.store import COMPILE_MODES, ON_NONFINITE, PAD_MODES, PRECISIONS, SCHEDULES, TrainConfig
from experiments.runs.train import check_trainable, load_training_data, train

__all__ = ["add_subcommand", "config_from_args"]


def _parse_option(text: str, flag: str = "--option") -> tuple[str, object]:
    if "=" not in text:
        raise ValueError(f"{flag} must look like KEY=VALUE; got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parse_seeds(text: str) -> list[int]:
    """``--seeds`` text -> distinct non-negative seeds; a ValueError names the text and the bad item."""
    example = "write distinct integers >= 0 separated by commas, e.g. --seeds 0,1,2"
    seeds: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"--seeds {text!r} has an empty item; {example}")
        try:
            seed = int(item)
        except ValueError:
            raise ValueError(f"--seeds {text!r}: {item!r} is not an integer; {example}") from None
        if seed < 0:
            raise ValueError(f"--seeds {text!r}: seed {seed} is negative; {example}")
        if seed in seeds:
            raise ValueError(f"--seeds {text!r} lists seed {seed} twice (it would be the same run); {example}")
        seeds.append(seed)
    return seeds


def _parse_milestones(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(m) for m in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated epochs such as 60,120,160; got {text!r}") from None


def _train_defaults() -> dict:
    """``TrainConfig``'s field defaults: the CLI's defaults, so a command and a sweep with the same settings agree."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def add_subcommand(subparsers) -> None:
    d = _train_defaults()
    p = subparsers.add_parser(
        "train", help="train a registered model into a run directory (CPU or GPU; torchrun for several)",
        description="Train MODEL; re-running the same command resumes or does nothing. Under "
                    "`torchrun --nproc_per_node N` the same command trains data-parallel. Defaults are "
                    "TrainConfig's (experiments/runs/store.py), the same as a sweep file's.")
    p.add_argument("model", metavar="MODEL", help="registered model name (see `blockaudit models`)")
    p.add_argument("--data", default=d["dataset"], help="dataset name (default: %(default)s)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, e.g. n_train=2000, root=DIR (cifar10), path=FILE.zip (cifar10_jpeg), "
                        "cache_dir=DIR (repeatable)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. width=8 (repeatable)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs (default: %(default)s)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=d["seed"], help="one run, written to --out (default: %(default)s)")
    seeds.add_argument("--seeds", metavar="S1,S2,...", help="one run per seed, written to OUT/seed<S>/")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="training batch size (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="SGD weight decay (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d["momentum"],
                   help="SGD (Nesterov) momentum (default: %(default)s)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"],
                   help="per-epoch step (x gamma at each milestone) or cosine, or per-step onecycle "
                        "(default: %(default)s)")
    p.add_argument("--milestones", type=_parse_milestones, default=d["milestones"], metavar="E1,E2,...",
                   help="step schedule: epochs at which the lr is multiplied by --gamma (default: "
                        f"{','.join(map(str, d['milestones']))})")
    p.add_argument("--gamma", type=float, default=d["gamma"],
                   help="step schedule: lr factor at each milestone (default: %(default)s)")
    p.add_argument("--warmup-fraction", type=float, default=d["warmup_fraction"],
                   help="onecycle: share of all steps spent warming up (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"],
                   help="label smoothing of the training loss, in [0, 1) (default: %(default)s)")
    p.add_argument("--augment", action="store_true", default=d["augment"],
                   help="random crop after padding by 4 + horizontal flip")
    p.add_argument("--pad-mode", choices=PAD_MODES, default=d["pad_mode"],
                   help="padding of the augmentation's crop (default: %(default)s)")
    # "auto" rather than TrainConfig's "cpu": where a run executes changes its numbers by rounding
    # only (sweep run ids leave the device out), and a GPU should not sit idle by default.
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N, or auto = cuda if available (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=d["precision"],
                   help="bf16/fp16 train and evaluate under that autocast; fp16 with loss scaling "
                        "(default: %(default)s)")
    p.add_argument("--on-nonfinite", choices=ON_NONFINITE, default=d["on_nonfinite"],
                   help="a non-finite training loss: raise an error, or stop the run as finished with the "
                        "diagnosis in result.json (default: %(default)s)")
    p.add_argument("--channels-last", action="store_true", default=d["channels_last"],
                   help="NHWC memory format (faster convs on GPUs)")
    p.add_argument("--compile", action="store_true", default=d["compile"], help="torch.compile the model")
    p.add_argument("--compile-mode", default=d["compile_mode"], choices=COMPILE_MODES,
                   help="torch.compile mode (default: %(default)s)")
    p.add_argument("--deterministic", action="store_true", default=d["deterministic"],
                   help="deterministic kernels (slower on GPU)")
    p.add_argument("--eval-every", type=int, default=d["eval_every"],
                   help="evaluate every N epochs; the last epoch always (default: %(default)s)")
    p.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"],
                   help="evaluation batch size (default: %(default)s)")
    p.add_argument("--drop-last", action="store_true", default=d["drop_last"],
                   help="drop each epoch's last incomplete batch")
    p.add_argument("--out", type=Path, required=True, help="run directory (with --seeds: the parent of seed<S>/)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (training and data decoding)")
    p.set_defaults(func=_cmd_train)


def _resolve_device(text: str) -> str:
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return text


def config_from_args(args) -> TrainConfig:
    """The ``TrainConfig`` of parsed ``blockaudit train`` arguments (``--seeds`` aside)."""
    return TrainConfig(
        model=args.model, dataset=args.data,
        model_options=dict(_parse_option(o, "--option") for o in args.option),
        dataset_options=dict(_parse_option(o, "--data-option") for o in args.data_option),
        seed=args.seed, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        weight_decay=args.weight_decay, momentum=args.momentum, schedule=args.schedule,
        milestones=args.milestones, gamma=args.gamma, augment=args.augment,
        label_smoothing=args.label_smoothing, warmup_fraction=args.warmup_fraction, pad_mode=args.pad_mode,
        device=_resolve_device(args.device), precision=args.precision, channels_last=args.channels_last,
        compile=args.compile, compile_mode=args.compile_mode, deterministic=args.deterministic,
        eval_every=args.eval_every, eval_batch_size=args.eval_batch_size, drop_last=args.drop_last,
        on_nonfinite=args.on_nonfinite)


def _cmd_train(args) -> int:
    seed_list = _parse_seeds(args.seeds) if args.seeds is not None else None
    config = config_from_args(args)
    dist = DistContext.from_env()
    runs = [(config, args.out)] if seed_list is None else [
        (replace(config, seed=s), args.out / f"seed{s}") for s in seed_list]
    data = None
    if len(runs) > 1:  # one load for every seed (the dataset does not depend on the training seed)
        check_trainable(config)  # before the load: a typo fails in a second
        data = load_training_data(config, not args.no_progress and dist.is_main)
    for cfg, out in runs:
        result = train(cfg, out, progress=not args.no_progress, data=data, dist=dist)
        if not dist.is_main:
            continue
        if result.get("nonfinite"):
            print(f"{out}: stopped at a non-finite loss: {result['nonfinite']['message']}")
        if result["epochs_run"] == 0 and not result.get("nonfinite"):
            print(f"{out}: already finished ({cfg.epochs} epochs); nothing to do")
        if not result["metrics"]:
            continue
        last = result["metrics"][-1]
        print(f"{out}: epoch {last['epoch']}/{cfg.epochs} loss {last['loss']:.4f} acc {last['acc']:.4f} "
              f"test_loss {last['test_loss']:.4f} test_acc {last['test_acc']:.4f}")
    return 0
