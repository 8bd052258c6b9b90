"""A run directory: everything needed to resume or analyse one training run.

    RUN_DIR/
      config.json        the resolved ``TrainConfig`` (every field, typed; the seed is ``seed``)
      environment.json   Python/torch/numpy versions, device, GPU, platform, threads, world size
      metrics.csv        one row per finished epoch: epoch, lr, loss, acc, test_loss, test_acc, seconds,
                         train_seconds, images_per_s
      checkpoint.pt      model + optimizer + epoch + RNG state, written atomically after every epoch
      result.json        written once the last epoch is done: final metrics, total training seconds,
                         peak GPU memory; its presence marks the run finished
      model_source.json  only for a model registered outside blockaudit (``register_model`` in the
                         user's module): that module's name and file, so ``load_run`` in a fresh process
                         (``blockaudit landscape|curvature|risk-gap``) imports it and finds the model

Columns: ``lr`` is the learning rate at the epoch's first step; ``loss`` / ``acc`` are the running
training loss (with label smoothing, if any) and accuracy over the epoch; ``test_*`` are NaN on
epochs that were not evaluated (``eval_every``); ``seconds`` is the epoch's wall time, evaluation
and checkpoint included; ``train_seconds`` is the pure training time (device synchronised at both
ends, no evaluation) and ``images_per_s`` the training images over it. Rows written before a
column existed read back with NaN in it.

A run with ``result.json`` is finished even without ``checkpoint.pt`` (GPU results are kept
without their checkpoints). Unknown keys in a config file are rejected so a typo cannot silently
fall back to a default; fields added later have defaults, so older config files still load. A
different config is refused once the directory holds trained state (checkpoint, metrics or
result); a directory holding only the config of a run that never finished an epoch takes the new
one (``RunDir.init``). A damaged ``config.json`` or ``checkpoint.pt`` is a ValueError that names
the file and how to recover.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib
import importlib.util
import inspect
import json
import math
import os
import pickle
import platform
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
from torch import nn

from analysis.models import build_model, list_models, model_info
from analysis.validation import check_bool, check_choice, check_int, check_real
from experiments.runs.provenance import provenance

__all__ = ["TrainConfig", "RunDir", "load_run", "CLAIM_RECORD", "METRIC_FIELDS", "SCHEDULES", "PRECISIONS", "COMPILE_MODES", "environment_info",
           "check_device"]

METRIC_FIELDS = ("epoch", "lr", "loss", "acc", "test_loss", "test_acc", "seconds", "train_seconds", "images_per_s")
SCHEDULES = ("step", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("raise", "stop")
CLAIM_RECORD = "claim.json"  # a run's record of the claims it was trained for (RunDir.record_claim)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PAD_MODES = ("reflect", "zero")


@dataclass
class TrainConfig:
    """A training run, fully resolved. Defaults are the ResNEst authors' CIFAR recipe except ``epochs``.

    ``milestones`` are epochs at which a ``step`` schedule multiplies the lr by ``gamma`` (authors:
    60/120/160, x0.2 over 200 epochs); ``cosine`` anneals to 0 over ``epochs``; ``onecycle`` is set
    per step: a linear warm-up over the first ``warmup_fraction`` of all steps, then a linear decay
    to 0 (for short GPU runs). ``label_smoothing`` (in [0, 1)) smooths the training targets only;
    the reported test loss is plain cross-entropy.

    Speed options (``experiments.runs.train``): ``precision`` ``"bf16"`` trains and evaluates under bf16
    autocast, ``"fp16"`` under float16 autocast with dynamic loss scaling (``torch.amp.GradScaler``:
    steps whose gradients overflow are skipped and the scale lowered; a non-finite *loss* is still an
    error, float16's largest finite value being 65504); ``channels_last`` stores the model and batches NHWC (on CUDA; ignored on the CPU, where
    torch 2.13 crashes in the backward of small 1x1 stride-2 convolutions on NHWC tensors); ``compile`` wraps the model in
    ``torch.compile(mode=compile_mode)``; ``deterministic`` asks torch for deterministic kernels;
    ``eval_every`` evaluates every that many epochs (the last epoch always); ``drop_last`` drops
    the last incomplete batch of every epoch; ``pad_mode`` is the augmentation's crop padding.
    ``on_nonfinite``: ``"raise"`` (default) stops a run whose training loss turns non-finite with
    ``FloatingPointError``; ``"stop"`` ends it as finished instead, with the diagnosis (step, layer)
    in ``result.json["nonfinite"]``, for experiments whose outcome *is* whether that happens (NRL-fp16).
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
    warmup_fraction: float = 0.2
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    deterministic: bool = False
    eval_every: int = 1
    eval_batch_size: int = 512
    drop_last: bool = False
    pad_mode: str = "reflect"
    on_nonfinite: str = "raise"
    # torch's intra-op threads for a CPU run (None: leave torch's setting). A CPU run's numbers
    # depend on it (reductions split over threads round differently), so sweeps set it for CPU runs
    # and it enters their run ids, with the CPU's kernel set (experiments.runs.sweep.canonical_config).
    threads: int | None = None
    # A rounding-size change of every initial weight: each scaled by 1 +- perturb_ulps * 2^-23 (one
    # float32 ulp per unit, random signs). The audit trains such twins of a few runs to measure how
    # far float noise alone moves a result (experiments.audit.empirical, experiments.runs.train._perturb_weights).
    perturb_ulps: int = 0

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
        check_real("warmup_fraction", self.warmup_fraction, min_value=0.0, max_value=1.0, include_max=False)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        check_choice("pad_mode", self.pad_mode, PAD_MODES)
        check_choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        for name in ("augment", "nesterov", "channels_last", "compile", "deterministic", "drop_last"):
            check_bool(name, getattr(self, name))
        check_int("eval_every", self.eval_every, min_value=1)
        check_int("eval_batch_size", self.eval_batch_size, min_value=1)
        if self.threads is not None:
            check_int("threads", self.threads, min_value=1)
        check_int("perturb_ulps", self.perturb_ulps, min_value=0)
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'cuda:1'; got {self.device!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device must be a torch device string such as 'cpu', 'cuda' or 'cuda:1'; "
                             f"got {self.device!r}") from None
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


def check_device(device: str | torch.device) -> torch.device:
    """``device`` parsed and checked to exist on this machine; a ValueError says what to use instead.

    The one check of a requested device (training, checkpoint loading, the landscape and curvature
    commands): without it a CUDA device on a CPU-only machine fails later, deep in torch.
    """
    if not isinstance(device, torch.device):
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was requested but torch.cuda.is_available() is False "
                             f"(torch {torch.__version__}); use device 'cpu' (blockaudit: --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported; valid devices: 'cpu', 'cuda', 'cuda:N'")
    return device


def environment_info(device: str = "cpu", world_size: int = 1) -> dict:
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "world_size": world_size,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu_count"] = torch.cuda.device_count()

    # The commit (and whether the code was edited), every package version, the CPU, its kernel set
    # and the thread count: what a reader needs to tell why two runs of one config differ.
    info["provenance"] = provenance(device)
    return info


class RunDir:
    """Paths and atomic reads/writes of one run directory (module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    environment_path = property(lambda self: self.path / "environment.json")
    result_path = property(lambda self: self.path / "result.json")
    claim_path = property(lambda self: self.path / CLAIM_RECORD)

    def _write_atomic(self, target: Path, write) -> None:
        tmp = target.with_name(target.name + ".tmp")
        write(tmp)
        os.replace(tmp, target)  # a kill mid-write leaves the previous file intact

    def claim_record(self) -> dict | None:
        """``{"claims": [ids], "paper": id}``: what the run was trained for (None when nothing recorded it)."""
        if not self.claim_path.exists():
            return None
        record = json.loads(self.claim_path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("claims", []), list):
            raise ValueError(f"{self.claim_path}: expected an object like {{\"claims\": [\"NRL-params\"], "
                             f"\"paper\": \"NRL\"}}; got {record!r}")
        return record

    def record_claim(self, claim: str, paper: str) -> None:
        """Add ``claim`` (and its ``paper``) to the run's ``claim.json``; one run may serve several claims.

        The run id leaves the claim out (the same config computes the same numbers whatever it is
        for), so this record is where a report finds which paper a run belongs to.
        """
        if not claim and not paper:
            return
        record = self.claim_record() or {"claims": []}
        if claim and claim not in record["claims"]:
            record["claims"] = [*record["claims"], claim]
        if paper:
            papers = record.get("papers", [record["paper"]] if record.get("paper") else [])
            if paper not in papers:
                papers.append(paper)
            record["paper"] = papers[0]
            if len(papers) > 1:
                record["papers"] = papers
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_atomic(self.claim_path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))

    def has_trained_state(self) -> bool:
        """True once the run has left more than its config: a checkpoint, metric rows or a result."""
        return any(p.exists() for p in (self.checkpoint_path, self.metrics_path, self.result_path))

    def init(self, config: TrainConfig, environment: bool = True) -> None:
        """Create the directory and write config (and environment); refuse a different config with trained state.

        A directory that holds only the config of a run that never finished an epoch (killed or
        failed during its first) has nothing to lose, so its config (even a damaged one) is
        replaced: the corrected command just runs. Once a checkpoint, metrics or a result exist,
        a different config is refused, since resuming would mix two computations.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        new = config.to_dict()
        if self.config_path.exists() and self.has_trained_state():
            old = self.load_config().to_dict()
            if old != new:
                diff = {k: (v, new[k]) for k, v in old.items() if new[k] != v}
                raise ValueError(f"run directory {self.path} holds trained state of a different config (stored vs "
                                 f"given: {diff}); re-run with the stored settings to resume it, or pass a new --out "
                                 f"(or delete {self.path}) to train this config")
        elif not self.config_path.exists() or self._stored_config_dict() != new:
            self._write_atomic(self.config_path, lambda p: p.write_text(json.dumps(new, indent=2)))
        if environment:
            self.write_environment(environment_info(config.device))
        self._record_model_source(config.model)

    model_source_path = property(lambda self: self.path / "model_source.json")

    def _record_model_source(self, name: str) -> None:
        """Where a model registered outside ``analysis.models`` comes from (module docstring)."""
        try:
            builder = model_info(name).builder
        except KeyError:
            return
        module = builder.__module__
        if module.split(".")[0] == "analysis":
            return
        file = inspect.getsourcefile(builder)
        info = {"model": name, "module": module, "file": str(Path(file).resolve()) if file else None}
        self._write_atomic(self.model_source_path, lambda p: p.write_text(json.dumps(info, indent=2)))

    def write_environment(self, info: dict) -> None:
        self._write_atomic(self.environment_path, lambda p: p.write_text(json.dumps(info, indent=2)))

    def write_result(self, result: dict) -> None:
        self._write_atomic(self.result_path, lambda p: p.write_text(json.dumps(result, indent=2)))

    def read_result(self) -> dict | None:
        """``result.json`` as a dict, or None if the run has not finished."""
        if not self.result_path.exists():
            return None
        try:
            return json.loads(self.result_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"corrupt {self.result_path}: {exc}; delete it to let the run finish again") from None

    def is_finished(self) -> bool:
        """True once ``result.json`` exists (checkpoint or not), or for older runs whose checkpoint is at the end."""
        if self.result_path.exists():
            return True
        if not self.checkpoint_path.exists() or not self.config_path.exists():
            return False
        return int(self.load_checkpoint()["epoch"]) >= self.load_config().epochs

    def load_config(self) -> TrainConfig:
        """The stored ``TrainConfig``; a damaged or invalid ``config.json`` is a ValueError naming it and the fix."""
        if not self.config_path.exists():
            raise FileNotFoundError(f"no config.json in {self.path}: not a run directory")
        try:
            data = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.config_path} is damaged (not valid JSON: {exc}); {self._config_fix()}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path} is damaged (a JSON {type(data).__name__}, not an object of "
                             f"TrainConfig fields); {self._config_fix()}")
        try:
            return TrainConfig.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.config_path} is not a valid run config ({exc}); {self._config_fix()}") from None

    def _stored_config_dict(self) -> dict | None:
        try:
            return self.load_config().to_dict()
        except ValueError:
            return None

    def _config_fix(self) -> str:
        if self.checkpoint_path.exists():
            return (f"restore it from the copy in {self.checkpoint_path} (its 'config' entry), or delete {self.path} "
                    "and re-run the training command to train from scratch")
        if self.result_path.exists():
            return "restore it from a copy (result.json keeps the results, not the config)"
        return f"delete {self.path} (nothing was trained in it) and re-run the training command"

    def save_checkpoint(self, state: dict) -> None:
        self._write_atomic(self.checkpoint_path, lambda p: torch.save(state, p))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict | None:
        """The checkpoint (None if there is none); a damaged file is a ValueError naming it and the fix.

        A CUDA ``map_location`` on a machine without CUDA is refused first (``check_device``), so
        that torch's deserialisation error is never mistaken for a damaged file.
        """
        if not self.checkpoint_path.exists():
            return None
        if isinstance(map_location, (str, torch.device)):
            check_device(map_location)
        try:
            return torch.load(self.checkpoint_path, map_location=map_location, weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            if isinstance(exc, RuntimeError) and _zip_intact(self.checkpoint_path):
                raise  # an intact file (CUDA out of memory, ...): never advise deleting it
            # torch's first sentence says what is wrong; the rest is a paragraph of generic advice.
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
            if self.result_path.exists():
                fix = (f"the run's results (result.json, metrics.csv) are intact; to get its weights back delete "
                       f"{self.checkpoint_path} and {self.result_path} and re-run the training command (it trains "
                       "again from scratch)")
            else:
                fix = ("delete it and re-run the training command to train the run again from scratch (no other "
                       "copy of the weights exists)")
            raise ValueError(f"checkpoint {self.checkpoint_path} is damaged ({why}); {fix}") from None

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open() as fh:
            return [{k: (int(v) if k == "epoch" else _float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]

    def write_metrics(self, rows: list[dict]) -> None:
        def write(p: Path) -> None:
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS, restval="nan")
                w.writeheader()
                w.writerows(rows)

        self._write_atomic(self.metrics_path, write)


def _zip_intact(path: Path) -> bool:
    """True if ``path`` is a zip archive (torch.save's format) whose every member passes its CRC check."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _float(text: str) -> float:
    # An empty cell (a column added after the row was written) reads as NaN, like a skipped evaluation.
    return float(text) if text not in ("", None) else math.nan


# --- loading a trained run ---------------------------------------------------------------------

def load_run(run_dir: Path | str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained model (eval mode, on ``map_location``) and config of a run directory."""
    rd = RunDir(run_dir)
    config = rd.load_config()
    ckpt = rd.load_checkpoint(map_location=map_location)
    if ckpt is None:
        why = ("the run finished but its checkpoint was deleted (result.json holds its metrics)"
               if rd.result_path.exists() else "the run has not finished an epoch")
        raise FileNotFoundError(f"no checkpoint.pt in {rd.path}: {why}")
    ensure_model_registered(rd, config.model)
    num_classes = _num_classes_from_state(config, ckpt["model"])
    model = build_model(config.model, num_classes=num_classes, **config.model_options)
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval(), config


def ensure_model_registered(rd: "RunDir", name: str) -> None:
    """Register the run's model if a user's module defined it (``model_source.json``); else a clear error."""
    if name in list_models():
        return
    path = rd.model_source_path
    if not path.exists():
        raise KeyError(f"unknown model {name!r} in {rd.path}: it was registered outside blockaudit and the run "
                       "records no source (model_source.json); import the module that registers it first. "
                       f"Registered models: {', '.join(list_models())}")
    src = json.loads(path.read_text())
    tried = []
    if src["module"] != "__main__":
        try:
            importlib.import_module(src["module"])
        except ImportError as exc:
            tried.append(f"import {src['module']} ({exc})")
    if name not in list_models() and src.get("file") and src["module"] != "__main__":
        file = Path(src["file"])
        if file.is_file():
            spec = importlib.util.spec_from_file_location(src["module"], file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[src["module"]] = module
            spec.loader.exec_module(module)
        else:
            tried.append(f"the file {file} (not found)")
    if name not in list_models():
        hint = (" It was registered in a script (__main__), which cannot be imported again: move the "
                "register_model call into a module." if src["module"] == "__main__" else "")
        raise KeyError(f"model {name!r} of {rd.path} is registered by {src['module']} ({src.get('file')}), but "
                       f"importing it did not register it; tried: {'; '.join(tried) or 'nothing'}.{hint}")


def _state_shapes(config: TrainConfig, num_classes: int) -> dict:
    try:
        with torch.device("meta"):  # allocates nothing
            model = build_model(config.model, num_classes=num_classes, **config.model_options)
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        model = build_model(config.model, num_classes=num_classes, **config.model_options)  # computes at build
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _num_classes_from_state(config: TrainConfig, state: dict) -> int:
    """The class count a checkpoint was trained with, whatever its classifier is called.

    The model is built (on the meta device) with 1 and with 2 classes; a state entry whose shape
    differs between the two holds the class count on the axis that differs (a linear head's rows, a
    fixed projection's columns), and the checkpoint's entry gives it.
    """
    one, two = _state_shapes(config, 1), _state_shapes(config, 2)
    for key, shape in one.items():
        if two.get(key) != shape and key in state:
            axes = [i for i, (a, b) in enumerate(zip(shape, two[key])) if (a, b) == (1, 2)]
            if axes:
                return int(state[key].shape[axes[0]])
    raise ValueError(f"cannot infer num_classes from the checkpoint of model {config.model!r}: no entry of its "
                     "state dict has a shape that depends on num_classes")
