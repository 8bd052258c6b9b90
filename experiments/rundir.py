"""A run directory: everything needed to resume or analyse one training run.

    RUN_DIR/
      config.json        the resolved ``TrainConfig`` (every field, typed)
      environment.json   Python/torch/numpy versions, device, platform, thread count
      metrics.csv        one row per finished epoch: epoch, lr, loss, acc, test_loss, test_acc, seconds
      checkpoint.pt      model + optimizer + scheduler + epoch + RNG state, written atomically

The full drivers (CIFAR, GPU, sweeps) extend ``TrainConfig``; unknown keys in a config file are
rejected so a typo cannot silently fall back to a default.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from analysis.validation import check_choice, check_int, check_real

__all__ = ["TrainConfig", "RunDir", "METRIC_FIELDS", "environment_info"]

METRIC_FIELDS = ("epoch", "lr", "loss", "acc", "test_loss", "test_acc", "seconds")
SCHEDULES = ("step", "cosine")


@dataclass
class TrainConfig:
    """A training run, fully resolved. Defaults are the ResNEst authors' CIFAR recipe except ``epochs``.

    ``milestones`` are epochs at which a ``step`` schedule multiplies the lr by ``gamma`` (authors:
    60/120/160, x0.2 over 200 epochs); ``cosine`` anneals to 0 over ``epochs``. ``label_smoothing``
    (in [0, 1)) smooths the training targets only; the reported test loss is plain cross-entropy.
    """

    model: str
    dataset: str = "digits"
    model_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    seed: int = 0
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "step"
    milestones: tuple[int, ...] = (60, 120, 160)
    gamma: float = 0.2
    augment: bool = False
    device: str = "cpu"
    # Fields added later need defaults: config.json files of older runs lack them and must still load.
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise TypeError(f"model must be a registered model name; got {self.model!r}")
        check_int("seed", self.seed, min_value=0)
        check_int("epochs", self.epochs, min_value=1)
        check_int("batch_size", self.batch_size, min_value=1)
        check_real("lr", self.lr, min_value=0.0, include_min=False)
        check_real("weight_decay", self.weight_decay, min_value=0.0)
        check_real("momentum", self.momentum, min_value=0.0, max_value=1.0, include_max=False)
        check_real("gamma", self.gamma, min_value=0.0, include_min=False)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_real("label_smoothing", self.label_smoothing, min_value=0.0, max_value=1.0, include_max=False)
        self.milestones = tuple(check_int("milestones", m, min_value=1) for m in self.milestones)
        self.model_options = dict(self.model_options)
        self.dataset_options = dict(self.dataset_options)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(names))}")
        data = dict(data)
        if "milestones" in data:
            data["milestones"] = tuple(data["milestones"])
        return cls(**data)


def environment_info(device: str = "cpu") -> dict:
    import numpy

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


class RunDir:
    """Paths and atomic reads/writes of one run directory (module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    environment_path = property(lambda self: self.path / "environment.json")

    def _write_atomic(self, target: Path, write) -> None:
        tmp = target.with_name(target.name + ".tmp")
        write(tmp)
        os.replace(tmp, target)  # a kill mid-write leaves the previous file intact

    def init(self, config: TrainConfig) -> None:
        """Create the directory and write config/environment; refuse a different existing config."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            old = self.load_config()
            if old.to_dict() != config.to_dict():
                diff = {k: (v, config.to_dict()[k]) for k, v in old.to_dict().items() if config.to_dict()[k] != v}
                raise ValueError(f"run directory {self.path} holds a different config (differs in {diff}); "
                                 f"use a new directory or the same config to resume")
        else:
            self._write_atomic(self.config_path, lambda p: p.write_text(json.dumps(config.to_dict(), indent=2)))
        self._write_atomic(self.environment_path,
                           lambda p: p.write_text(json.dumps(environment_info(config.device), indent=2)))

    def load_config(self) -> TrainConfig:
        if not self.config_path.exists():
            raise FileNotFoundError(f"no config.json in {self.path}: not a run directory")
        return TrainConfig.from_dict(json.loads(self.config_path.read_text()))

    def save_checkpoint(self, state: dict) -> None:
        self._write_atomic(self.checkpoint_path, lambda p: torch.save(state, p))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location=map_location, weights_only=False)

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open() as fh:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]

    def write_metrics(self, rows: list[dict]) -> None:
        def write(p: Path) -> None:
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
                w.writeheader()
                w.writerows(rows)

        self._write_atomic(self.metrics_path, write)
