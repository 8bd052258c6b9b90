"""Audit a user's block against a baseline: generic checks on paired seeds, claims from a spec file.

``audit_block("my_blocks.py:SEBlock", "resnet20")`` puts the block into the baseline's skeleton
(``analysis.models.skeleton``), trains block and baseline on the same seeds into the results store
(finished runs are reused: a second call trains nothing; an edited block is a new run id), and
measures on every seed:

========================  ======================================================================
check                     what
========================  ======================================================================
``accuracy``              final test accuracy, block - baseline, percentage points
``params``                trainable parameters, block / baseline
``flops``                 forward FLOPs per image, block / baseline
``throughput``            training images per second at initialisation, block / baseline
``fp16_headroom``         65504 / largest |activation| on the test set at the trained weights,
                          block / baseline (below 1 x the baseline: closer to float16 overflow)
``grad_spread``           max / min per-block gradient norm at initialisation, block / baseline
                          (above 1: the block's gradients vanish or explode more across depth)
``hessian_top``           largest Hessian eigenvalue of the test loss at the trained weights
                          (LOBPCG, block 4, 4 iterations; 128 test images, BatchNorm in eval mode), block / baseline
``hessian_trace``         Hessian trace (Hutch++, 12 products, same batch), block / baseline
``linear_capacity``       with every activation module removed from both (the NRL-linear test,
                          generalised), final test accuracy of the block's net - the baseline's,
                          which is then an affine map: does the block add capacity of its own?
``sharpness``             mean loss increase at +-0.25 along a seeded filter-normalised random
                          direction (Li et al. 2018; same seed and normalisation for both models),
                          block / baseline
========================  ======================================================================

Each is a mean over seeds with the two-sided 95% t interval of ``experiments.audit.stats`` (the
papers' comparisons use the same rule). A spec file (TOML) attaches claims to checks::

    [[claims]]
    id = "SE-acc"
    statement = "the SE block costs at most 1 point of accuracy"
    check = "accuracy"
    region = [-1.0, "inf"]     # the effects that agree with the claim: lo < effect < hi

A claim holds when the whole interval lies inside its region, fails when it lies wholly outside,
and is inconclusive otherwise; a check no claim names is reported as ``measured``. ``executor="slurm"``
trains the runs as submitit jobs on a cluster (``"local"``: submitit's local executor); the probes
then run here, on the stored runs. Every run's probe
values are kept in its run directory (``block_probes.json``), so a second call measures nothing again.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import lobpcg
from tqdm.auto import tqdm

from analysis.models import build_model
from analysis.models.skeleton import BASELINES, block_options
from analysis.plotting.block_compare import plot_block_audit
from analysis.plotting.landscape import save_figure
from analysis.probes.block_compare import (
    activation_peaks,
    block_gradient_norms,
    forward_flops,
    parameter_count,
    train_throughput,
)
from analysis.probes.curvature import HessianOperator, hutchpp_trace
from analysis.probes.landscape import loss_landscape, random_directions
from experiments.audit.stats import judge, paired_stats
from experiments.claims.profiles import FULL_BASE, QUICK_BASE, model
from experiments.claims.types import PROFILES, Region
from experiments.report.tables import markdown_table
from experiments.runs.data import load_dataset, normalize
from experiments.runs.provenance import provenance, provenance_line
from experiments.runs.store import load_run
from experiments.runs.sweep import SweepSpec, paired_differences, run_sweep
from experiments.runs.sweep_config import expand

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

__all__ = ["CHECKS", "BlockClaim", "BlockAuditResult", "load_spec", "audit_block"]

# check -> (what it measures, unit of its effect)
CHECKS = {
    "accuracy": ("final test accuracy, block - baseline", "pts"),
    "params": ("trainable parameters, block / baseline", "x"),
    "flops": ("forward FLOPs per image, block / baseline", "x"),
    "throughput": ("training images/s at initialisation, block / baseline", "x"),
    "fp16_headroom": ("float16 headroom (65504 / peak activation) at the trained weights, block / baseline", "x"),
    "grad_spread": ("max / min per-block gradient norm at initialisation, block / baseline", "x"),
    "hessian_top": ("largest Hessian eigenvalue of the test loss at the trained weights, block / baseline", "x"),
    "hessian_trace": ("Hessian trace of the test loss at the trained weights, block / baseline", "x"),
    "sharpness": ("loss increase at +-0.25 along a filter-normalised direction, block / baseline", "x"),
    "linear_capacity": ("test accuracy without activations, block - baseline (an affine map)", "pts"),
}
TRAINED_CHECKS = {"accuracy": ("block", "baseline"), "linear_capacity": ("block_linear", "baseline_linear")}
CURVATURE_IMAGES = 128  # test images of the Hessian and landscape probes: the same for block and baseline
SHARPNESS_STEP = 0.25
SPEC_KEYS = ("claims",)
CLAIM_KEYS = ("id", "statement", "check", "region")


@dataclass(frozen=True)
class BlockClaim:
    """A user's claim about their block: a generic check and the region of effects that agree with it."""

    id: str
    statement: str
    check: str
    region: Region


def _bound(value, where: str) -> float:
    if isinstance(value, str) and value.strip().lstrip("+-") in ("inf", "infinity"):
        return -math.inf if value.strip().startswith("-") else math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{where}: a region bound must be a number or \"inf\" / \"-inf\"; got {value!r}")


def _unknown(where: str, keys, valid) -> None:
    bad = sorted(set(keys) - set(valid))
    if bad:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, bad))}; valid keys: {', '.join(valid)}")


def load_spec(path: Path | str) -> list[BlockClaim]:
    """The claims of a TOML spec file (module docstring); unknown keys and checks are named with the valid ones."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec file {str(path)!r} not found (tried {path.resolve()})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None
    _unknown(str(path), data, SPEC_KEYS)
    claims, seen = [], set()
    for i, entry in enumerate(data.get("claims", [])):
        where = f"{path}: claims[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a [[claims]] table; got {entry!r}")
        _unknown(where, entry, CLAIM_KEYS)
        missing = [k for k in ("id", "check", "region") if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        if entry["check"] not in CHECKS:
            raise ValueError(f"{where}: unknown check {entry['check']!r}; valid checks: {', '.join(CHECKS)}")
        region = entry["region"]
        if not isinstance(region, list) or len(region) != 2:
            raise ValueError(f"{where}: region must be [lo, hi]; got {region!r}")
        if entry["id"] in seen:
            raise ValueError(f"{where}: claim id {entry['id']!r} is used twice")
        seen.add(entry["id"])
        claims.append(BlockClaim(str(entry["id"]), str(entry.get("statement", "")), entry["check"],
                                 Region(_bound(region[0], where), _bound(region[1], where))))
    return claims


@dataclass
class BlockAuditResult:
    """One row per check (and per claim on it): values, effect, interval, verdict; ``to_pandas()``."""

    rows: list[dict]
    meta: dict = field(default_factory=dict)
    curves: pd.DataFrame | None = None  # the sweep's results table (label, seed, epoch, test_acc, ...)

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def markdown(self) -> str:
        frame = self.to_pandas()
        shown = frame.assign(
            effect=[_fmt(e, u) for e, u in zip(frame.effect, frame.unit)],
            interval=[f"[{_fmt(lo, u)}, {_fmt(hi, u)}]" for lo, hi, u in zip(frame.ci_low, frame.ci_high, frame.unit)],
            block=[f"{v:.4g}" for v in frame.block], baseline=[f"{v:.4g}" for v in frame.baseline],
        )[["check", "what", "block", "baseline", "effect", "interval", "n", "claim", "region", "verdict"]]
        m = self.meta
        return "\n".join([
            f"# Block audit: {m['block']} vs {m['baseline']}", "",
            f"Profile `{m['profile']}`: {m['setting']}. Made on {m['provenance_line']}.", "",
            markdown_table(shown), "", "![block and baseline](block_audit.png)", "",
            "- Effects are means over seeds with the two-sided 95% t interval (accuracy in percentage points, "
            "the rest as ratios block / baseline). A claim holds when its interval lies inside its region, fails "
            "when it lies wholly outside, and is inconclusive otherwise; `measured`: no claim names the check.",
            f"- Runs: {', '.join(m['runs'])} in `{m['store']}`.", ""])

    def write(self, out: Path | str) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = [out / "BLOCK_AUDIT.md", out / "block_audit.json", out / "block_audit.csv", out / "block_audit.png"]
        if self.curves is not None:
            save_figure(plot_block_audit(self.curves, self.to_pandas(),
                                         f"{self.meta['block']} vs {self.meta['baseline']}"), files[3])
        else:
            files.pop()
        files[0].write_text(self.markdown())
        files[1].write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=2, default=str))
        self.to_pandas().to_csv(files[2], index=False)
        return files


def _fmt(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.2f} pts" if unit == "pts" else f"{value:.3f}x"


def _sweep(block: str, baseline: str, profile: str, seeds: int, width: int, epochs: int, data) -> SweepSpec:
    options = block_options(block, baseline)
    stem = Path(block.rpartition(":")[0]).stem.replace("_", "-") + "-" + block.rpartition(":")[2].lower()
    if profile == "quick":
        base = {**QUICK_BASE, "epochs": epochs}
    else:
        base = {**FULL_BASE, "epochs": epochs, "device": "cuda", "dataset": "cifar10_jpeg",
                "dataset_options": {} if data is None else {"path": str(data)}}
    return SweepSpec.from_dict({
        "name": f"block-{profile}-{stem}-{options['block_sha256'][:8]}", "seeds": list(range(seeds)), "base": base,
        "models": [model("block", "block_resnet", **options, width=width), model("baseline", baseline, width=width),
                   model("block_linear", "block_resnet", **options, width=width, activations=False),
                   model("baseline_linear", baseline, width=width, activations=False)],
        "paper": "user"})


PROBES_FILE = "block_probes.json"  # a run's probe values, reused while PROBE_SETTINGS are unchanged
PROBE_SETTINGS = {"version": 1, "images": CURVATURE_IMAGES, "lobpcg_block": 4, "lobpcg_iterations": 4,
                  "hutchpp_products": 12, "sharpness_step": SHARPNESS_STEP, "throughput_batch": 64}


def _probe_run(run, store: Path, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The probe values of one run (``PROBES_FILE`` in its directory when already measured)."""
    path = store / "runs" / run.run_id / PROBES_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("settings") == PROBE_SETTINGS:
            return stored["values"]
    torch.manual_seed(run.seed)
    fresh = build_model(run.model, num_classes=10, **run.config.model_options)
    trained, _ = load_run(store / "runs" / run.run_id)
    x, y = images[:PROBE_SETTINGS["throughput_batch"]], labels[:PROBE_SETTINGS["throughput_batch"]]
    norms = block_gradient_norms(fresh, x, y)
    batch = (images[:CURVATURE_IMAGES], labels[:CURVATURE_IMAGES])
    # Products in blocks of 4 (vmapped forward-over-reverse): LOBPCG for the top eigenvalue rather
    # than Lanczos, whose one-vector steps cost as much as four-vector ones on the CPU.
    op = HessianOperator(trained.eval(), batch, bn="eval", hvp="forward_over_reverse")
    start = np.random.default_rng(run.seed).standard_normal((op.dim, PROBE_SETTINGS["lobpcg_block"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not reaching the requested tolerance": we cap iterations
        top = lobpcg(op.as_linear_operator(), start, largest=True, maxiter=PROBE_SETTINGS["lobpcg_iterations"],
                     tol=1e-3)[0]
    direction = random_directions(trained, 1, seed=run.seed)
    land = loss_landscape(trained, direction, [batch], [-SHARPNESS_STEP, 0.0, SHARPNESS_STEP], bn="eval")
    values = {
        "params": parameter_count(fresh),
        "flops": forward_flops(fresh, tuple(images.shape[1:])),
        "throughput": train_throughput(fresh, x, y, steps=3, warmup=1),
        "fp16_headroom": activation_peaks(trained, images)["headroom"],
        "grad_spread": max(norms) / max(min(norms), 1e-30),
        "hessian_top": float(np.max(top)),
        "hessian_trace": float(hutchpp_trace(op, PROBE_SETTINGS["hutchpp_products"], seed=run.seed).value),
        "sharpness": float((land.loss[0] + land.loss[2]) / 2 - land.loss[1]),
    }
    path.write_text(json.dumps({"settings": PROBE_SETTINGS, "values": values}, indent=2))
    return values


def _per_seed_probes(spec: SweepSpec, store: Path, images: torch.Tensor, labels: torch.Tensor,
                     progress: bool) -> dict:
    """check -> (block values, baseline values), one per seed."""
    values = {k: ([], []) for k in CHECKS if k not in TRAINED_CHECKS}
    runs = [r for r in expand(spec) if r.label in ("block", "baseline")]
    for run in tqdm(runs, desc="probes", unit="run", disable=not progress):
        measured = _probe_run(run, store, images, labels)
        for check, value in measured.items():
            values[check][0 if run.label == "block" else 1].append(value)
    return values


def audit_block(block: str, baseline: str = "resnet20", *, spec: Path | str | None = None, profile: str = "quick",
                seeds: int = 3, store: Path | str = "runs", out: Path | str | None = None, width: int = 8,
                epochs: int | None = None, data: Path | str | None = None, workers: int | None = None,
                executor: str | None = None, executor_options: dict | None = None,
                progress: bool = True) -> BlockAuditResult:
    """Train ``block`` (``FILE.py:NAME`` or ``module:NAME``) and ``baseline`` on paired seeds and judge (module docstring)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r} is not in the zoo of skeletons; valid baselines: "
                         f"{', '.join(BASELINES)}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    if not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"seeds must be an integer >= 2 (an interval needs two paired seeds); got {seeds!r}")
    claims = load_spec(spec) if spec is not None else []
    epochs = epochs or (6 if profile == "quick" else 10)
    build_model("block_resnet", **block_options(block, baseline), width=width)  # a block that does not fit fails now
    store = Path(store)
    sweep = _sweep(block, baseline, profile, seeds, width, epochs, data)
    workers = workers or (min(2, os.cpu_count() or 1) if profile == "quick" else 1)
    table = run_sweep(sweep, store, workers=workers, progress=progress, executor=executor,
                      executor_options=executor_options)

    base = sweep.base
    dataset = load_dataset(base["dataset"], **base.get("dataset_options", {}))
    images = normalize(dataset.test_images, dataset.mean, dataset.std)
    per_seed = _per_seed_probes(sweep, store, images, dataset.test_labels, progress)
    effects = {}
    for check, (block_label, baseline_label) in TRAINED_CHECKS.items():
        pairs = paired_differences(table, block_label, baseline_label)
        effects[check] = (pairs["block_value"].to_numpy(), pairs["baseline_value"].to_numpy(),
                          pairs["difference"].to_numpy())
    for check, (b, a) in per_seed.items():
        b, a = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
        effects[check] = (b, a, b / a)

    rows = []
    for check, (b, a, e) in effects.items():
        st = paired_stats(e)
        named = [c for c in claims if c.check == check] or [None]
        for claim in named:
            rows.append({
                "check": check, "what": CHECKS[check][0], "unit": CHECKS[check][1],
                "block": float(b.mean()), "baseline": float(a.mean()), "effect": st.mean,
                "ci_low": st.ci_low, "ci_high": st.ci_high, "n": st.n,
                "claim": claim.id if claim else "", "statement": claim.statement if claim else "",
                "region": claim.region.text().replace(" pts", "") if claim else "",
                "verdict": judge(st, claim.region) if claim else "measured"})
    prov = provenance()
    meta = {"block": block, "block_sha256": block_options(block, baseline)["block_sha256"], "baseline": baseline,
            "profile": profile, "seeds": seeds, "store": str(store), "sweep": sweep.name,
            "runs": sorted({r.run_id for r in expand(sweep)}),
            "setting": (f"{base['dataset']} {base.get('dataset_options', {})}, width {width}, {epochs} epochs, "
                        f"{seeds} seeds, batch {base['batch_size']}, SGD lr {base['lr']} {base['schedule']}"),
            "provenance": prov, "provenance_line": provenance_line(prov),
            "spec": str(spec) if spec is not None else None}
    result = BlockAuditResult(rows, meta, table)
    if out is not None:
        result.write(out)
    return result
