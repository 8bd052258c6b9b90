"""Artefacts of a training check, made from the runs' checkpoints right after training (reused when present):
loss landscapes (NRL-contour), ResNEst risk gaps (RN-cifar), float16 peaks (NRL-fp16), and their summaries."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from analysis.plotting.landscape import plot_side_by_side, save_figure
from analysis.probes.fp16_peaks import second_order_peaks
from analysis.probes.landscape import LandscapeResult
from experiments.audit.datasets import dataset_for
from experiments.audit.stats import PROBE_SUFFIX
from experiments.claims.types import ProfileSpec
from experiments.runs.data import load_dataset, normalize, subsample
from experiments.runs.probes import LandscapeConfig, RiskGapConfig, run_landscape, run_risk_gap
from experiments.runs.store import RunDir, load_run
from experiments.runs.sweep import SweepSpec, expand


def artefact_runs(spec, store: Path, kind: str) -> list[tuple[str, str, Path]]:
    """(label, run_id, run dir) of the runs an artefact is made for: landscape seed 0 only, risk gap all."""
    out = []
    for r in expand(spec):
        if r.label.endswith(PROBE_SUFFIX) or (kind == "landscape" and r.seed != min(spec.seeds)):
            continue
        out.append((r.label, r.run_id, store / "runs" / r.run_id))
    return out


def landscape_config(run_dir: Path, profile: str, device: str):
    if profile == "quick":
        return LandscapeConfig(run_dir=run_dir, points=11, range=1.0, samples=256, device=device)
    return LandscapeConfig(run_dir=run_dir, points=21, range=1.0, samples=1024, device=device)


def make_artefacts(spec: SweepSpec, ps: ProfileSpec, profile: str, store: Path, device: str = "cpu",
                   log: Callable = print, data_cache: dict | None = None) -> list[str]:
    """Compute the missing artefacts ``ps.artefacts`` of sweep ``spec``'s runs from their checkpoints;
    return notes on what could not be made.

    ``data_cache``: the audit's dataset cache (``experiments.audit.datasets.dataset_for``), so a
    dataset loaded for training is not loaded again for the float16 peaks.
    """
    if not ps.artefacts or ps.sweep is None:
        return []
    notes = []
    data_cache = data_cache if data_cache is not None else {}  # one load for all runs of this check
    for kind in ps.artefacts:
        for label, run_id, rd in artefact_runs(spec, store, kind):
            target = rd / ARTEFACT_FILES[kind]
            if target.exists():
                continue
            if not (rd / "checkpoint.pt").exists():
                notes.append(f"{kind} of {run_id} missing and its checkpoint is gone")
                continue
            log(f"  {kind}: {run_id}")
            if kind == "landscape":
                run_landscape(landscape_config(rd, profile, device))
            elif kind == "fp16_peaks":
                write_fp16_peaks(rd, device, max_samples=None if profile == "quick" else 5000,
                                 data=dataset_for(spec, data_cache))
            else:
                # 5,000 of CIFAR's 50,000 images keep a model's report to seconds on the GPU box's CPU.
                run_risk_gap(RiskGapConfig(run_dir=rd, max_samples=None if profile == "quick" else 5000))
    if "landscape" in ps.artefacts:
        side_by_side_contours(spec, store)
    return notes


ARTEFACT_FILES = {"landscape": "landscape.npz", "risk_gap": "risk_gap.json", "fp16_peaks": "fp16_peaks.json"}


def write_fp16_peaks(run_dir: Path, device: str = "cpu", max_samples: int | None = None,
                     data=None) -> Path:
    """``RUN_DIR/fp16_peaks.json``: ``analysis.probes.fp16_peaks.second_order_peaks`` of the run's last checkpoint.

    Measured on the training images (the first ``max_samples`` of a seeded permutation when set),
    in float32 and eval mode; for a run stopped at a non-finite loss the checkpoint is the last
    good epoch's, so the peaks say how large the term was just before. ``data``: the run's dataset
    if already loaded (otherwise it is loaded from the run's config).
    """
    run_dir = Path(run_dir)
    model, config = load_run(run_dir, map_location=device)
    if data is None:
        data = load_dataset(config.dataset, **config.dataset_options)
    images, _ = subsample(data.train_images, data.train_labels, max_samples, seed=0)
    x = normalize(images.to(device), data.mean, data.std)
    peaks = second_order_peaks(model, x)
    metrics = RunDir(run_dir).read_metrics()  # a checkpoint is written with every epoch's metrics row
    peaks["checkpoint_epoch"] = int(metrics[-1]["epoch"]) if metrics else 0
    out = run_dir / "fp16_peaks.json"
    out.write_text(json.dumps(peaks, indent=2, default=lambda v: None))
    return out


def load_landscapes(spec, store: Path) -> dict:
    out = {}
    for label, run_id, rd in artefact_runs(spec, store, "landscape"):
        if (rd / "landscape.npz").exists():
            out[label] = (run_id, LandscapeResult.load(rd / "landscape"))
    return out


def landscape_proxy(result) -> dict:
    """Sharpness proxy of a 2-D landscape: mean loss on the grid's edge minus the loss at its centre.

    With filter-normalised directions the edge is a perturbation as large as the weights, so the
    rise is comparable across models: a smaller rise means a wider basin around the minimum.
    """
    loss = np.asarray(result.loss, dtype=float)
    i, j = loss.shape[0] // 2, loss.shape[1] // 2
    edge = np.concatenate([loss[0], loss[-1], loss[1:-1, 0], loss[1:-1, -1]])
    return {"centre_loss": float(loss[i, j]), "edge_mean_loss": float(np.nanmean(edge)),
            "edge_rise": float(np.nanmean(edge) - loss[i, j])}


def landscape_summary(spec, store: Path) -> tuple[str, dict]:
    found = load_landscapes(spec, store)
    if len(found) < len([m for m in spec.models if not m.label.endswith(PROBE_SUFFIX)]):  # twins get none
        return "Landscape artefacts missing.", {}
    proxy = {label: landscape_proxy(res) | {"run_id": rid} for label, (rid, res) in found.items()}
    labels = list(proxy)
    rises = ", ".join(f"{lab} {proxy[lab]['edge_rise']:.3g}" for lab in labels)
    ratio = proxy[labels[1]]["edge_rise"] / proxy[labels[0]]["edge_rise"] if proxy[labels[0]]["edge_rise"] else math.nan
    proxy["ratio"] = ratio
    return (f"Landscape proxy (mean loss on the grid edge minus the centre's, filter-normalised 2-D slice, seed-0 "
            f"runs): {rises}; ratio {labels[1]}/{labels[0]} = {ratio:.3g} (contours: "
            f"{Path('sweeps') / spec.name / 'contours.png'} in the store).", proxy)


def side_by_side_contours(spec, store: Path) -> Path | None:
    found = load_landscapes(spec, store)
    if len(found) < 2:
        return None
    out = store / "sweeps" / spec.name / "contours.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_side_by_side({lab: res for lab, (_, res) in found.items()},
                            log=any(float(np.nanmax(r.loss)) > 100 * float(np.nanmin(r.loss)) for _, r in found.values()))
    return save_figure(fig, out)


def risk_gap_summary(spec, store: Path) -> str:
    gaps: dict[str, list[float]] = {}
    for label, run_id, rd in artefact_runs(spec, store, "risk_gap"):
        f = rd / "risk_gap.json"
        if f.exists():
            data = json.loads(f.read_text())
            eps = data.get("eps_train", data.get("summary", {}).get("eps_train"))
            if isinstance(eps, (int, float)):
                gaps.setdefault(label, []).append(float(eps))
    if not gaps:
        return "Risk-gap reports missing."
    text = ", ".join(f"{lab} {np.mean(v):.3g} (n = {len(v)})" for lab, v in gaps.items())
    return f"Risk gap eps = R - A* on the training set (RN Prop. 2, mean over seeds): {text}."
