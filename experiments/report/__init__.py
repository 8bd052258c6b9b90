"""``blockaudit report``: one executed notebook per paper (``.ipynb`` with outputs, plus HTML) from stored results.

The notebooks are generated from plain-text sources kept in the repository,
``experiments/notebooks/<paper>.py`` in jupytext's "percent" format, so their diffs are readable.
``build_notebook`` reads a source, injects a parameters cell (``PAPER``, ``STORE``, ``AUDIT_JSON``,
``REPORTS`` as Python literals, after the cell tagged ``parameters``), executes it in a fresh
``ipykernel`` of the current interpreter with the output folder as working directory, and writes
``<paper>.ipynb`` (outputs, PNG figures) and ``<paper>.html`` (figures embedded). A cell that raises
makes the build fail with that cell's error; nothing is written then.

The sources stay short: the work is done here, by functions a notebook calls section by section.

- ``claims_table(paper, audit)``: the paper's claims with the verdicts of ``blockaudit audit``
  (``audit.json``; fields other than the basic ones are read defensively and shown as columns).
- ``scan_store(store)``: what a results store holds. ``STORE/runs/<run_id>/`` run directories
  (``config.json``, ``metrics.csv``), ``STORE/sweeps/<name>/results.csv`` (tidy: sweep, run_id, label,
  model, seed, epoch, metrics), and, found by file name anywhere below ``STORE``, landscapes
  (``landscape.npz`` + ``.json``), risk gaps (``risk_gap.json``) and curvature summaries
  (``curvature.json``). Files that cannot be read are listed, not fatal.
- ``training_curves`` / ``plot_training_curves`` / ``final_epoch_table``: mean +- std over seeds.
- ``plot_landscapes``: 2-D contours side by side on shared levels (1-D landscapes as curves).
- ``plot_risk_gaps`` / ``risk_gap_table``: the per-block curve A(H_0..H_i) of RN Prop. 2.
- ``plot_curvature`` / ``curvature_table``: Hessian spectral densities and extreme eigenvalues.
- ``fp16_table`` / ``plot_fp16_peaks``: float16 Newton-ResNet runs, whether they overflowed, and
  the peaks of the second-order term against float16's largest value (NRL-fp16).
- ``show_*``: the same as notebook sections, each saying ``not run: ...`` when its input is absent.

A result belongs to a paper by, in this order: a ``paper`` field in its metadata, the sweep it lies
in (a sweep named after one of the paper's empirical claims, e.g. ``rn-cifar``, or prefixed with the
paper id), and the paper its model is registered under (``analysis.models.model_info``).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.claims import CLAIMS, PAPERS

__all__ = [
    "NOTEBOOK_SOURCES", "NotebookExecutionError", "ReportContext", "StoreIndex", "Artefact",
    "notebook_source", "load_audit", "claims_table", "comparisons_table", "scan_store", "training_curves", "final_epoch_table",
    "plot_training_curves", "plot_landscapes", "landscape_table", "plot_risk_gaps", "risk_gap_table",
    "plot_curvature", "curvature_table", "fp16_table", "plot_fp16_peaks", "show_fp16", "setup_notebook",
    "build_notebook", "build_reports", "add_subcommand",
]

NOTEBOOK_SOURCES = Path(__file__).resolve().parent / "notebooks"
PARAMETER_NAMES = ("PAPER", "STORE", "AUDIT_JSON", "REPORTS")
# Metrics drawn as training curves, in panel order; others in the store stay in the tables only.
CURVE_METRICS = ("test_acc", "test_loss", "loss")
_ID_COLUMNS = ("sweep", "source", "run_id", "label", "model", "seed", "epoch", "dataset", "paper", "finished")
_BASIC_VERDICT_KEYS = {"claim_id", "status", "evidence", "check", "runs", "statement"}
_FIG_DPI = 90  # inline PNGs: legible in a browser, ~30-60 KB each, so a notebook stays well under 1 MB
_MAX_PANELS = 4


class NotebookExecutionError(RuntimeError):
    """A cell of a report notebook raised; the message names the paper, the cell and the error."""


def _paper_id(paper: str) -> str:
    from analysis.validation import check_choice

    if isinstance(paper, str) and paper.upper() in PAPERS:
        return paper.upper()
    return check_choice("--paper", paper, PAPERS)


def notebook_source(paper: str, sources: Path | str | None = None) -> Path:
    """The jupytext source of ``paper``'s notebook (``<sources>/<paper lower-case>.py``)."""
    paper = _paper_id(paper)
    folder = Path(sources) if sources is not None else NOTEBOOK_SOURCES
    path = folder / f"{paper.lower()}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no notebook source for {paper} at {path}; expected one jupytext percent-format "
                                f".py file per paper ({', '.join(p.lower() + '.py' for p in PAPERS)}) in {folder}")
    return path


# ----------------------------------------------------------------------------------------------
# claims
# ----------------------------------------------------------------------------------------------

def load_audit(path: Path | str) -> dict:
    """The payload of ``audit.json`` written by ``blockaudit audit``; a missing or malformed file is named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audit results not found at {path}; make them with `blockaudit audit` (writes "
                                "reports/audit.json) or pass --audit PATH")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); regenerate it with `blockaudit audit`") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("verdicts"), list):
        raise ValueError(f"{path} has no 'verdicts' list; expected the audit.json written by `blockaudit audit` "
                         "({'meta': ..., 'counts': ..., 'verdicts': [{'claim_id', 'status', 'evidence', ...}]})")
    for i, v in enumerate(payload["verdicts"]):
        if not isinstance(v, dict) or "claim_id" not in v or "status" not in v:
            raise ValueError(f"{path}: verdicts[{i}] lacks 'claim_id' or 'status'; regenerate it with "
                             "`blockaudit audit`")
    return payload


def _cell_value(value):
    """A JSON value as one table cell: scalars as they are, short lists joined, long lists counted."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        if all(isinstance(x, (str, int, float, bool)) for x in value) and len(value) <= 4:
            return "; ".join(map(str, value))
        return f"{len(value)} items"
    return json.dumps(value, sort_keys=True)


def _format_ci(ci) -> str | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:+.3g}, {ci[1]:+.3g}]"
    return None if ci is None else str(ci)


def _format_region(region) -> str | None:
    if isinstance(region, (list, tuple)) and len(region) == 2 and all(isinstance(x, (int, float)) for x in region):
        return f"({region[0]:+g}, {region[1]:+g})"  # open: the claim needs the whole CI strictly inside
    return None if region is None else str(region)


def _extra_columns(verdict: dict) -> dict:
    """Columns from the fields a verdict may carry beyond the basic ones (read defensively).

    ``details`` (training comparisons, experiments.audit.run) gives the headline effect, its CI and the
    seed count; its per-comparison statistics go to ``comparisons_table`` and the rest of it is
    already in the evidence text. Any other extra field is shown as it is, one nesting level flattened.
    """
    extra = {}
    details = verdict.get("details")
    if isinstance(details, dict):
        if isinstance(details.get("effect"), (int, float)):
            extra["effect"] = details["effect"]
        if details.get("ci") is not None:
            extra["CI"] = _format_ci(details["ci"])
        if isinstance(details.get("n_seeds"), int):
            extra["seeds"] = details["n_seeds"]
    for key, value in verdict.items():
        if key in _BASIC_VERDICT_KEYS or key == "details":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                extra[f"{key}.{sub}"] = _cell_value(v)
        else:
            extra[key] = _cell_value(value)
    return extra


def comparisons_table(paper: str, audit: dict | Path | str) -> pd.DataFrame:
    """The paired block-vs-baseline comparisons behind ``paper``'s empirical verdicts, one row each.

    Read from ``details.comparisons`` of the audit's verdicts (effect = mean paired difference over
    seeds with its confidence interval, the region the claim needs, the result); empty if none.
    """
    paper = _paper_id(paper)
    payload = audit if isinstance(audit, dict) else load_audit(audit)
    rows = []
    for v in payload.get("verdicts", []):
        details = v.get("details")
        if not str(v.get("claim_id", "")).startswith(paper + "-") or not isinstance(details, dict):
            continue
        for c in details.get("comparisons") or []:
            if not isinstance(c, dict):
                continue
            name = str(c.get("block", "?")) + (f" - {c['baseline']}" if c.get("baseline") else "")
            conf = c.get("confidence")
            rows.append({"claim": v["claim_id"], "comparison": name, "effect": c.get("mean"),
                         (f"{100 * conf:g}% CI" if isinstance(conf, (int, float)) else "CI"):
                             _format_ci([c.get("ci_low"), c.get("ci_high")]),
                         "n": c.get("n"), "region": _format_region(c.get("region")), "result": c.get("status"),
                         "paper": c.get("paper")})
    return pd.DataFrame(rows)


def claims_table(paper: str, audit: dict | Path | str) -> pd.DataFrame:
    """One row per registered claim of ``paper``: claim, kind, verdict, statement, evidence, extras, check.

    ``audit`` is the payload of ``load_audit`` or the path of ``audit.json``. A registered claim
    missing from the audit gets the verdict ``not run`` and says so; extra fields of a verdict
    (e.g. run ids, effects, CIs) become columns, ``runs`` becomes a count.
    """
    paper = _paper_id(paper)
    payload = audit if isinstance(audit, dict) else load_audit(audit)
    by_id = {v["claim_id"]: v for v in payload.get("verdicts", [])}
    rows = []
    for claim in CLAIMS:
        if claim.paper != paper:
            continue
        v = by_id.get(claim.id)
        if v is None:
            row = {"claim": claim.id, "kind": claim.kind, "verdict": "not run", "statement": claim.statement,
                   "evidence": "not in this audit.json (it was run for other claims); run `blockaudit audit`",
                   "check": claim.settled_by}
        else:
            row = {"claim": claim.id, "kind": claim.kind, "verdict": str(v["status"]),
                   "statement": str(v.get("statement") or claim.statement), "evidence": str(v.get("evidence", "")),
                   "check": str(v.get("check", claim.settled_by))}
            runs = v.get("runs")
            if isinstance(runs, (list, tuple)) and runs:
                row["runs"] = len(runs)
            row.update(_extra_columns(v))
        rows.append(row)
    frame = pd.DataFrame(rows)
    front = ["claim", "kind", "verdict", "statement", "evidence"]
    extras = [c for c in frame.columns if c not in front + ["check"]]
    frame = frame[front + extras + ["check"]]
    for col in ("runs", "seeds"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Int64")  # counts, not 6.0 because other rows are empty
    # Columns only the other papers' verdicts fill are noise here.
    return frame.dropna(axis=1, how="all")


# ----------------------------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------------------------

@dataclass
class Artefact:
    """One analysis result found in the store: ``kind`` is landscape, risk_gap or curvature."""

    kind: str
    path: Path
    data: object
    model: str | None
    paper: str | None
    run: str | None = None
    where: str = ""  # the path relative to the store, shown in tables


@dataclass
class StoreIndex:
    """Everything ``scan_store`` found below ``root`` (``problems``: files it could not read, with why)."""

    root: Path
    exists: bool
    sweeps: dict = field(default_factory=dict)  # name -> DataFrame (results.csv as stored)
    runs: dict = field(default_factory=dict)  # run_id -> {"config": dict, "metrics": DataFrame, "path": Path}
    artefacts: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def artefacts_of(self, kind: str, paper: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind and a.paper == paper]

    def unattributed(self, kind: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind and a.paper is None]


def _registry_paper(model) -> str | None:
    if not isinstance(model, str) or not model:
        return None
    from analysis.models import model_info

    try:
        return model_info(model).paper.split()[0]
    except KeyError:
        return None


def _empirical_names(paper: str) -> set[str]:
    return {c.settled_by.split(":", 1)[1] for c in CLAIMS if c.paper == paper and c.settled_by.startswith("empirical:")}


def _paper_of_name(name: str) -> str | None:
    """The paper a sweep or folder name refers to: one of its empirical claims' names or ``<paper>-...``."""
    low = name.lower()
    for paper in PAPERS:
        names = _empirical_names(paper)
        # "<prefix>-<claim's sweep>" too: e.g. the audit's own "audit-quick-nrl-linear".
        if low in names or any(low.endswith("-" + n) for n in names):
            return paper
        if low.startswith(paper.lower() + "-") or low.startswith(paper.lower() + "_"):
            return paper
    return None


def _explicit_paper(meta: dict) -> str | None:
    p = meta.get("paper") if isinstance(meta, dict) else None
    return p.upper() if isinstance(p, str) and p.upper() in PAPERS else None


def _read_sweep(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if "epoch" not in frame.columns:
        raise ValueError(f"no 'epoch' column (columns: {', '.join(map(str, frame.columns))})")
    return frame


def _read_run(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    metrics = pd.read_csv(path / "metrics.csv")
    if "epoch" not in metrics.columns:
        raise ValueError(f"no 'epoch' column (columns: {', '.join(map(str, metrics.columns))})")
    return {"config": config, "metrics": metrics, "path": path}


def _artefact_files(root: Path, name_glob: str) -> list[Path]:
    return sorted(p for p in root.rglob(name_glob) if p.is_file())


def scan_store(store: Path | str) -> StoreIndex:
    """Index a results store (module docstring); a store that does not exist gives an empty index."""
    root = Path(store)
    index = StoreIndex(root=root, exists=root.is_dir())
    if not index.exists:
        return index
    for path in sorted((root / "sweeps").glob("*/results.csv")):
        try:
            index.sweeps[path.parent.name] = _read_sweep(path)
        except Exception as exc:  # one unreadable file must not hide the rest of the store
            index.problems.append(f"{path}: {type(exc).__name__}: {exc}")
    for path in sorted((root / "runs").glob("*/metrics.csv")):
        try:
            index.runs[path.parent.name] = _read_run(path.parent)
        except Exception as exc:
            index.problems.append(f"{path.parent}: {type(exc).__name__}: {exc}")

    loaders = {"landscape": ("*landscape*.json", _load_landscape),
               "risk_gap": ("*risk_gap*.json", _load_risk_gap),
               "curvature": ("*curvature*.json", _load_curvature)}
    for kind, (pattern, load) in loaders.items():
        for path in _artefact_files(root, pattern):
            try:
                data, meta = load(path)
            except _NotThisKind:
                continue
            except Exception as exc:
                index.problems.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            index.artefacts.append(_attribute(index, kind, path, data, meta))
    return index


class _NotThisKind(Exception):
    """A JSON file whose name matched a pattern but that is some other file (e.g. a config)."""


def _load_landscape(path: Path):
    if not path.with_suffix(".npz").is_file():
        raise _NotThisKind
    from analysis.probes.landscape import LandscapeResult

    result = LandscapeResult.load(path)
    return result, result.meta


def _load_risk_gap(path: Path):
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or "curve_train" not in payload:
        raise _NotThisKind
    from analysis.probes.risk_gap import RiskGapResult

    result = RiskGapResult.load(path)
    return result, result.meta


def _load_curvature(path: Path):
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or "density" not in payload or "top_eigenvalues" not in payload:
        raise _NotThisKind
    for key in ("nodes", "weights"):
        if key not in payload["density"]:
            raise ValueError(f"density has no {key!r}")
    return payload, payload


def _attribute(index: StoreIndex, kind: str, path: Path, data, meta: dict) -> Artefact:
    rel = path.relative_to(index.root)
    run = None
    if len(rel.parts) >= 3 and rel.parts[0] == "runs":
        run = rel.parts[1]
    model = meta.get("model") if isinstance(meta, dict) else None
    if model is None and run in index.runs:
        model = index.runs[run]["config"].get("model")
    paper = _explicit_paper(meta)
    if paper is None:
        for part in rel.parts[:-1]:
            paper = _paper_of_name(part) or paper
            if part in index.sweeps and paper is None:
                paper = _sweep_paper(part, index.sweeps[part])
    if paper is None:
        paper = _registry_paper(model)
    return Artefact(kind, path, data, model, paper, run, rel.as_posix())


def _sweep_paper(name: str, frame: pd.DataFrame) -> str | None:
    if "paper" in frame.columns:
        papers = {str(p).upper() for p in frame["paper"].dropna()}
        if len(papers) == 1 and next(iter(papers)) in PAPERS:
            return next(iter(papers))
    paper = _paper_of_name(name)
    if paper is None and "model" in frame.columns:
        votes = pd.Series([_registry_paper(m) for m in frame["model"].dropna().unique()]).dropna()
        paper = votes.mode().iloc[0] if not votes.empty else None
    return paper


# ----------------------------------------------------------------------------------------------
# training curves
# ----------------------------------------------------------------------------------------------

def _as_index(store) -> StoreIndex:
    return store if isinstance(store, StoreIndex) else scan_store(store)


def _numeric_metrics(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in _ID_COLUMNS and not str(c).startswith("grid.")
            and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]


def _with_grid_labels(frame: pd.DataFrame) -> pd.Series:
    """Labels extended by the ``grid.<key>`` values that vary within a label (experiments.runs.sweep), so
    two grid points of one model are never averaged together as if they were seeds."""
    grid = [c for c in frame.columns if str(c).startswith("grid.")]
    varying = [c for c in grid if frame.groupby("label")[c].nunique(dropna=False).max() > 1]
    if not varying:
        return frame["label"].astype(str)
    extra = frame[varying].astype(str).apply(
        lambda row: ", ".join(f"{c.removeprefix('grid.')}={v}" for c, v in row.items()), axis=1)
    return frame["label"].astype(str) + " (" + extra + ")"


def _run_labels(runs: dict) -> dict[str, str]:
    """``model / dataset``, plus the settings in which runs with that name differ (never the seed)."""
    ignore = {"seed", "device"}
    groups: dict[tuple, list[str]] = {}
    for rid, r in runs.items():
        c = r["config"]
        groups.setdefault((c.get("model", "?"), c.get("dataset", "?")), []).append(rid)
    labels = {}
    for (model, dataset), rids in groups.items():
        configs = {rid: runs[rid]["config"] for rid in rids}
        keys = sorted({k for c in configs.values() for k in c} - ignore - {"model", "dataset"})
        differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
        for rid, c in configs.items():
            extra = ", ".join(f"{k}={json.dumps(c.get(k), sort_keys=True)}" for k in differing)
            labels[rid] = f"{model} / {dataset}" + (f" ({extra})" if extra else "")
    return labels


def training_curves(store, paper: str) -> pd.DataFrame:
    """Tidy per-epoch metrics of ``paper``'s sweeps and of its runs that no sweep lists.

    Columns: ``source`` (sweep name, or ``runs on DATASET``), ``label``, ``seed``, ``run_id``,
    ``epoch`` and the numeric metrics. Empty (with those columns) when the store has none.
    """
    paper = _paper_id(paper)
    index = _as_index(store)
    parts = []
    in_sweeps = set()
    for name, frame in index.sweeps.items():
        if "run_id" in frame.columns:
            in_sweeps |= set(map(str, frame["run_id"].dropna()))
        if _sweep_paper(name, frame) != paper:
            continue
        f = frame.copy()
        f["source"] = name
        if "label" not in f.columns:
            f["label"] = f["model"] if "model" in f.columns else name
        if "run_id" not in f.columns:
            f["run_id"] = f["seed"].astype(str) if "seed" in f.columns else "?"
        if "seed" not in f.columns:
            f["seed"] = f["run_id"]
        f["label"] = _with_grid_labels(f)
        parts.append(f)
    mine = {rid: r for rid, r in index.runs.items()
            if rid not in in_sweeps and _registry_paper(r["config"].get("model")) == paper}
    labels = _run_labels(mine)
    for rid, r in mine.items():
        f = r["metrics"].copy()
        f["source"] = f"runs on {r['config'].get('dataset', '?')}"
        f["label"] = labels[rid]
        f["run_id"] = rid
        f["seed"] = r["config"].get("seed", rid)
        parts.append(f)
    if not parts:
        return pd.DataFrame(columns=["source", "label", "seed", "run_id", "epoch"])
    frame = pd.concat(parts, ignore_index=True)
    metrics = [m for m in dict.fromkeys(c for p in parts for c in _numeric_metrics(p))]
    frame = frame[["source", "label", "seed", "run_id", "epoch", *metrics]]
    return frame.sort_values(["source", "label", "run_id", "epoch"], kind="stable").reset_index(drop=True)


def final_epoch_table(curves: pd.DataFrame, metrics=CURVE_METRICS) -> pd.DataFrame:
    """Per (source, label): seeds, the final epoch(s), and mean and std over seeds of each metric there."""
    metrics = [m for m in metrics if m in curves.columns]
    last = curves.sort_values("epoch", kind="stable").groupby(["source", "label", "run_id"], sort=False).tail(1)
    rows = []
    for (source, label), g in last.groupby(["source", "label"], sort=True):
        lo, hi = int(g["epoch"].min()), int(g["epoch"].max())
        row = {"source": source, "label": label, "seeds": int(g["seed"].nunique()),
               "final epoch": str(lo) if lo == hi else f"{lo}-{hi}"}
        for m in metrics:
            values = g[m].dropna()
            row[f"{m} mean"] = float(values.mean()) if len(values) else math.nan
            # ddof=1 (sample std) as the bands in the figure; one seed has no spread to report.
            row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _log_axis(values: np.ndarray, ratio: float = 20.0) -> bool:
    """A log axis for positive values spanning more than ``ratio`` (losses falling by decades)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return bool(values.size and np.all(values > 0) and values.max() / values.min() > ratio)


def _geometric_mean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=np.float64)))))


def _geometric_band(values) -> tuple[float, float]:
    """exp(mean(log v) -+ std(log v)): the band of a log axis (the seeds' spread as a factor)."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    m = logs.mean()
    sd = logs.std(ddof=1) if logs.size > 1 else 0.0
    return float(np.exp(m - sd)), float(np.exp(m + sd))


_METRIC_NAMES = {"test_acc": "test accuracy", "test_loss": "test loss", "loss": "training loss",
                 "acc": "training accuracy"}


def plot_training_curves(curves: pd.DataFrame, metrics=CURVE_METRICS, title: str | None = None):
    """Mean +- std over seeds per label and epoch, one panel per metric; returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator, NullFormatter

    metrics = [m for m in metrics if m in curves.columns and curves[m].notna().any()]
    if curves.empty or not metrics:
        raise ValueError(f"nothing to plot: the curves hold none of the metrics {', '.join(CURVE_METRICS)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    any_log = False
    for i, (ax, m) in enumerate(zip(axes[0], metrics)):
        log = _log_axis(curves[m].dropna().to_numpy())
        any_log |= log
        # Mean +- one sample std over seeds at each epoch (no bootstrap, so the same store always
        # draws the same figure); on a log axis both in log space, as an arithmetic band whose
        # lower edge goes below 0 would fill the axis to its bottom.
        estimator, errorbar = (_geometric_mean, _geometric_band) if log else ("mean", "sd")
        sns.lineplot(data=curves, x="epoch", y=m, hue="label", estimator=estimator, errorbar=errorbar, ax=ax,
                     legend=i == 0, linewidth=1.2)
        ax.set_ylabel(_METRIC_NAMES.get(m, m))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks crowd a short log axis
    if axes[0][0].get_legend() is not None:
        axes[0][0].legend(fontsize=7, title=None)
    n = curves.groupby("label")["seed"].nunique()
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    note = "; log axes: geometric mean ×/÷ geometric std" if any_log else ""
    fig.suptitle(f"{title or 'mean ± std over seeds'} ({seeds} seed(s) per label{note})", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# landscapes
# ----------------------------------------------------------------------------------------------

def _artefact_labels(artefacts: list[Artefact]) -> list[str]:
    base = [a.model or a.path.parent.name for a in artefacts]
    counts = pd.Series(base).value_counts()
    return [b if counts[b] == 1 else f"{b} ({a.run or a.path.parent.name})" for b, a in zip(base, artefacts)]


def _landscape_group_key(r) -> tuple:
    m = r.meta
    return (r.ndim, r.shape, m.get("dataset"), m.get("range"), r.directions.get("normalization"), r.bn, r.loss_name)


def landscape_table(artefacts: list[Artefact]) -> pd.DataFrame:
    rows = []
    for label, a in zip(_artefact_labels(artefacts), artefacts):
        r = a.data
        loss = r.loss[np.isfinite(r.loss)]
        rows.append({"landscape": label, "dataset": r.meta.get("dataset"), "grid": " x ".join(map(str, r.shape)),
                     "normalisation": r.directions.get("normalization"), "BatchNorm": r.bn,
                     "images": r.num_samples, "centre loss": r.meta.get("centre_loss", math.nan),
                     "min loss": float(loss.min()) if loss.size else math.nan,
                     "max loss": float(loss.max()) if loss.size else math.nan,
                     "file in store": a.where})
    return pd.DataFrame(rows)


def _shared_levels(results, log: bool, n: int = 20) -> np.ndarray:
    finite = np.concatenate([r.loss[np.isfinite(r.loss)].ravel() for r in results])
    if finite.size == 0:
        raise ValueError("nothing to plot: every grid value is NaN (an unfinished landscape?)")
    lo, hi = float(finite.min()), float(finite.max())
    hi = hi if hi > lo else lo + 1e-12 + abs(lo) * 1e-6
    return np.geomspace(max(lo, 1e-12), hi, n) if log and lo > 0 else np.linspace(lo, hi, n)


def plot_landscapes(artefacts: list[Artefact]) -> list:
    """Figures of landscapes: comparable 2-D ones (same grid, data, normalisation, BatchNorm) side by
    side on SHARED contour levels, at most four panels a row; 1-D ones as overlaid curves."""
    import matplotlib.pyplot as plt

    from analysis.probes.landscape import plot_side_by_side

    labels = _artefact_labels(artefacts)
    groups: dict[tuple, list] = {}
    for label, a in zip(labels, artefacts):
        groups.setdefault(_landscape_group_key(a.data), []).append((label, a.data))
    figures = []
    for key, members in groups.items():
        results = [r for _, r in members]
        if key[0] == 2:
            # Levels over the whole group, so panels split over several rows still share them; log
            # levels as `blockaudit landscape` chose them (loss spanning > 2 decades).
            log = any(r.meta.get("log_levels") for r in results)
            levels = _shared_levels(results, log)
            for start in range(0, len(members), _MAX_PANELS):
                chunk = dict(members[start:start + _MAX_PANELS])
                fig = plot_side_by_side(chunk, levels=levels, log=log)
                for ax in fig.axes[1:len(chunk)]:
                    ax.set_ylabel("")  # beside the first panel it would overlap its neighbour's ticks
                if log:
                    # A log colour bar labels only whole decades, often one or none: label levels.
                    ticks = levels[::3]
                    fig.axes[-1].set_yticks(ticks, [f"{t:.3g}" for t in ticks])
                    fig.axes[-1].minorticks_off()
                fig.suptitle(f"{key[2]}, {key[4]}-normalised directions, bn={key[5]}: shared "
                             f"{'log' if log else 'linear'} levels", fontsize=9, y=1.02)
                figures.append(fig)
        else:
            fig, ax = plt.subplots(figsize=(5.0, 3.3))
            for label, r in members:
                ax.plot(r.alphas, r.loss, label=label, linewidth=1.2)
            ax.set_xlabel(r"$\alpha$ (direction 1)")
            ax.set_ylabel(key[6])
            finite = np.concatenate([r.loss[np.isfinite(r.loss)] for r in results])
            if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
                ax.set_yscale("log")
            ax.legend(fontsize=7)
            ax.set_title(f"1-D landscapes on {key[2]} ({key[4]}-normalised, bn={key[5]})", fontsize=9)
            figures.append(fig)
    return figures


# ----------------------------------------------------------------------------------------------
# risk gap
# ----------------------------------------------------------------------------------------------

def risk_gap_table(artefacts: list[Artefact]) -> pd.DataFrame:
    """R, A*, eps = R - A* (RN eq. (8)) and the solver certificates of each risk-gap result."""
    rows = []
    for label, a in zip(_artefact_labels(artefacts), artefacts):
        r = a.data
        rows.append({"model": label, "dataset": r.meta.get("dataset"), "loss": r.loss, "blocks": len(r.curve_train) - 1,
                     "n train": r.n_train, "n test": r.n_test, "R train": r.model_risk_train,
                     "A* train": r.a_star_train, "eps train": r.eps_train,
                     "eps test": math.nan if r.eps_test is None else r.eps_test,
                     "A(H_0) train": r.input_baseline_train,
                     "fits converged": f"{sum(c.converged for c in r.certificates)}/{len(r.certificates)}",
                     "file in store": a.where})
    return pd.DataFrame(rows)


def plot_risk_gaps(artefacts: list[Artefact]) -> list:
    """Per-block curves A(H_0..H_i), train and test panels: per model the mean over its runs (seeds)
    with a +- one-std band, and its mean R dashed; one figure per loss (cross-entropy and squared
    risks are not on one scale)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups: dict[str, dict[tuple, list]] = {}
    for a in artefacts:
        r = a.data
        # Runs of one model average only over curves of one length (same number of blocks).
        groups.setdefault(r.loss, {}).setdefault((a.model or a.path.parent.name, len(r.curve_train)), []).append(r)
    figures = []
    for loss, by_model in groups.items():
        has_test = any(r.curve_test is not None for rs in by_model.values() for r in rs)
        fig, axes = plt.subplots(1, 2 if has_test else 1, figsize=(10.0 if has_test else 5.2, 3.6), squeeze=False)
        for ax, split in zip(axes[0], ("train", "test")):
            data = []
            for (model, _), rs in by_model.items():
                curves = [r.curve_train if split == "train" else r.curve_test for r in rs]
                risks = [r.model_risk_train if split == "train" else r.model_risk_test for r in rs]
                data.append((model, np.array([c for c in curves if c is not None], dtype=np.float64),
                             np.array([x for x in risks if x is not None], dtype=np.float64)))
            # Separable training features push A towards 0 by decades: a log axis, and the runs'
            # spread as a factor (log-space mean +- std), as an arithmetic band would cross 0.
            log = _log_axis(np.concatenate([np.concatenate([c.ravel(), r]) for _, c, r in data]), ratio=50.0)
            for i, (model, curves, risks) in enumerate(data):
                if curves.size == 0:
                    continue
                color = f"C{i % 10}"
                x = np.arange(curves.shape[1])
                if log:
                    logs = np.log(curves)
                    centre = np.exp(logs.mean(axis=0))
                    sd = logs.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
                    lo, hi = centre / np.exp(sd), centre * np.exp(sd)
                else:
                    centre = curves.mean(axis=0)
                    sd = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
                    lo, hi = centre - sd, centre + sd
                ax.plot(x, centre, "-o", color=color, markersize=3, linewidth=1.2, label=f"{model} (n={len(curves)})")
                if len(curves) > 1:
                    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
                if risks.size:
                    ax.axhline(_geometric_mean(risks) if log else risks.mean(), color=color, linestyle="--",
                               linewidth=0.9)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("last block i included (0 = pooled input only)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"A(H_0..H_i), {split}")
            band = "geometric mean ×/÷ std" if log else "mean ± std"
            ax.set_title(f"{split}: solid A(H_0..H_i) ({band} over runs), dashed R", fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"risk gap per block ({loss.replace('_', '-')} loss)", fontsize=10)
        fig.tight_layout()
        figures.append(fig)
    return figures


# ----------------------------------------------------------------------------------------------
# float16 headroom (NRL-fp16)
# ----------------------------------------------------------------------------------------------

def fp16_table(store) -> pd.DataFrame:
    """One row per float16 run of a Newton model in the store: whether it overflowed and its peaks.

    Reads each run's ``result.json`` (``nonfinite``: the step and layer where a loss turned
    non-finite) and ``fp16_peaks.json`` (``analysis.probes.fp16_peaks.second_order_peaks``); a run lacking
    the peaks file shows NaN there.
    """
    from analysis.probes.fp16_peaks import FP16_MAX
    from experiments.runs.store import RunDir

    index = _as_index(store)
    rows = []
    for run_id, run in sorted(index.runs.items()):
        config = run["config"]
        if config.get("precision") != "fp16" or not str(config.get("model", "")).startswith("newton_resnet"):
            continue
        path = Path(run["path"])
        result = RunDir(path).read_result() or {}
        peaks = json.loads((path / "fp16_peaks.json").read_text()) if (path / "fp16_peaks.json").is_file() else {}
        bad = result.get("nonfinite") or {}
        peak = peaks.get("peak") or {}
        label = run_id.split("-s")[0]
        rows.append({"run": run_id, "label": label, "seed": config.get("seed"),
                     "tanh": bool(config.get("model_options", {}).get("second_order_tanh", False)),
                     "overflowed": bool(bad), "at step": bad.get("step"), "where": bad.get("where", ""),
                     "epochs done": result.get("epochs_completed"),
                     "peak |N1(s)*f|": peak.get("product", math.nan), "peak |N2(.)|": peak.get("term", math.nan),
                     "peak |block out|": peak.get("output", math.nan),
                     "headroom (65504 / peak product)":
                         (FP16_MAX / peak["product"]) if peak.get("product") else math.nan})
    return pd.DataFrame(rows)


def plot_fp16_peaks(table: pd.DataFrame):
    """Peak |N1(s)*f| and |N2(.)| per run on a log axis against float16's largest value (65504);
    runs that hit a non-finite loss are drawn as red crosses."""
    import matplotlib.pyplot as plt

    from analysis.probes.fp16_peaks import FP16_MAX

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2), sharey=True)
    labels = list(dict.fromkeys(table["label"]))
    for ax, column in zip(axes, ("peak |N1(s)*f|", "peak |N2(.)|")):
        for i, label in enumerate(labels):
            part = table[table["label"] == label]
            x = i + np.linspace(-0.15, 0.15, len(part)) if len(part) > 1 else np.full(len(part), float(i))
            ok = ~part["overflowed"].to_numpy(dtype=bool)
            values = part[column].to_numpy(dtype=float)
            ax.scatter(x[ok], values[ok], color="C0", s=22, label="finite run" if i == 0 else None)
            if (~ok).any():
                # An overflowed run's peaks are those of its last good checkpoint (float32 forward).
                ax.scatter(x[~ok], values[~ok], color="C3", marker="x", s=30, label="overflowed")
        ax.axhline(FP16_MAX, color="k", linestyle="--", linewidth=0.9, label="float16 max 65504")
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(column, fontsize=9)
    axes[0].set_ylabel("largest |value| on training images")
    axes[0].legend(fontsize=7)
    fig.suptitle("float16 headroom of the second-order term (NRL-fp16)", fontsize=10)
    fig.tight_layout()
    return fig


def show_fp16(ctx: ReportContext) -> None:
    absent = ctx.store_absent()
    if absent:
        return not_run(absent)
    table = fp16_table(ctx.index)
    if table.empty:
        return not_run(f"no float16 Newton-ResNet runs in `{ctx.store}` "
                       "(`blockaudit audit --claims NRL-fp16` makes them)")
    if table["peak |N1(s)*f|"].notna().any():
        show_figure(plot_fp16_peaks(table))
    _display(table)


# ----------------------------------------------------------------------------------------------
# curvature
# ----------------------------------------------------------------------------------------------

def curvature_table(artefacts: list[Artefact]) -> pd.DataFrame:
    """Extreme Hessian eigenvalues (with their Lanczos error bounds) and the Hutch++ trace of each result."""
    rows = []
    for label, a in zip(_artefact_labels(artefacts), artefacts):
        s = a.data
        top, bounds = s.get("top_eigenvalues") or [math.nan], s.get("top_error_bounds") or [math.nan]
        trace = s.get("trace") or {}
        rows.append({"model": label, "module": s.get("module") or "(all)", "parameters": s.get("dim"),
                     "images": s.get("num_samples"), "BatchNorm": s.get("bn"), "loss": s.get("loss"),
                     "lambda_max": top[0], "lambda_max bound": bounds[0],
                     "lambda_min": s.get("min_eigenvalue", math.nan),
                     "lambda_min bound": s.get("min_error_bound", math.nan),
                     "trace": trace.get("value", math.nan), "trace std err": trace.get("std_error", math.nan),
                     "file in store": a.where})
    return pd.DataFrame(rows)


def plot_curvature(artefacts: list[Artefact]):
    """Smoothed Hessian spectral densities (SLQ, log scale), one panel per result; returns the Figure."""
    import matplotlib.pyplot as plt

    from analysis.probes.curvature import SpectralDensity, plot_spectral_density

    labels = _artefact_labels(artefacts)
    ncols = min(len(artefacts), _MAX_PANELS)
    nrows = math.ceil(len(artefacts) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows), squeeze=False)
    for ax, label, a in zip(axes.ravel(), labels, artefacts):
        d = a.data["density"]
        density = SpectralDensity(np.asarray(d["nodes"], dtype=np.float64), np.asarray(d["weights"], dtype=np.float64),
                                  int(d.get("num_matvecs", 0)))
        where = f" / {a.data['module']}" if a.data.get("module") else ""
        plot_spectral_density(density, title=f"{label}{where}", ax=ax)
    for ax in axes.ravel()[len(artefacts):]:
        ax.set_visible(False)
    fig.suptitle("Hessian spectral density (stochastic Lanczos quadrature)", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# notebook sections
# ----------------------------------------------------------------------------------------------

def setup_notebook() -> None:
    """Inline PNG figures at a modest dpi and untruncated table cells; call once at a notebook's top."""
    import matplotlib

    shell = _shell()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")
        shell.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    else:
        matplotlib.use("Agg")
    # After %matplotlib inline, which resets the rcParams it manages.
    matplotlib.rcParams.update({"figure.dpi": _FIG_DPI, "savefig.dpi": _FIG_DPI})
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 250)
    pd.set_option("display.precision", 4)


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _display(obj) -> None:
    if _shell() is None:  # run as a script or called from a test: plain text
        print(obj)
        return
    from IPython.display import display

    display(obj)


def markdown(text: str) -> None:
    """Show ``text`` as markdown in a notebook (and as plain text anywhere else)."""
    if _shell() is None:
        print(text)
        return
    from IPython.display import display

    display({"text/markdown": text, "text/plain": text}, raw=True)


def not_run(reason: str) -> None:
    """Say that a section's result is absent, and why: the notebook never leaves a silent gap."""
    markdown(f"**not run:** {reason}")


def show_figure(fig) -> None:
    """Display ``fig`` once (closing it, so the inline backend does not draw it again at the cell's end)."""
    import matplotlib.pyplot as plt

    if _shell() is not None:
        _display(fig)
    plt.close(fig)


@dataclass
class ReportContext:
    """What a report notebook reads: the paper, the store, the audit and the reproductions folder."""

    paper: str
    store: Path
    audit_json: Path
    reports: Path
    _index: StoreIndex | None = field(default=None, repr=False)
    _audit: dict | None = field(default=None, repr=False)

    @classmethod
    def from_parameters(cls, paper: str, store, audit_json, reports) -> "ReportContext":
        return cls(_paper_id(paper), Path(store), Path(audit_json), Path(reports))

    @property
    def index(self) -> StoreIndex:
        if self._index is None:
            self._index = scan_store(self.store)
        return self._index

    @property
    def audit(self) -> dict:
        if self._audit is None:
            self._audit = load_audit(self.audit_json)
        return self._audit

    def store_absent(self) -> str | None:
        if not self.index.exists:
            return (f"the store {self.store} does not exist (pass `blockaudit report --store DIR`; runs go to "
                    "STORE/runs/<run_id>, sweeps to STORE/sweeps/<name>)")
        return None


def show_header(ctx: ReportContext) -> None:
    """Title, the audit's provenance and verdict counts for the paper, and what the store holds."""
    meta = ctx.audit.get("meta", {}) if isinstance(ctx.audit.get("meta"), dict) else {}
    table = claims_table(ctx.paper, ctx.audit)
    counts = table["verdict"].value_counts()
    index = ctx.index
    lines = [
        f"**{ctx.paper}**: {PAPERS[ctx.paper]}",
        "",
        f"- audit: `{ctx.audit_json}`, profile `{meta.get('profile', '?')}`, run {meta.get('date', '?')} on "
        f"{meta.get('machine', '?')}",
        f"- the audit's code and machine: {meta.get('provenance_line', 'not recorded (an audit older than provenance)')}",
        "- verdicts of this paper's claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()),
        f"- store: `{ctx.store}`" + ("" if index.exists else " (does not exist)")
        + f": {len(index.sweeps)} sweep(s), {len(index.runs)} run(s), {len(index.artefacts)} analysis file(s) in all",
    ]
    if index.problems:
        lines.append(f"- {len(index.problems)} file(s) in the store could not be read:")
        lines += [f"    - `{p}`" for p in index.problems]
    markdown("\n".join(lines))


def show_claims(ctx: ReportContext) -> None:
    """The claims table, then the paired comparisons behind the empirical verdicts (if the audit has any)."""
    _display(claims_table(ctx.paper, ctx.audit))
    comparisons = comparisons_table(ctx.paper, ctx.audit)
    if not comparisons.empty:
        markdown("Paired comparisons behind the empirical verdicts (block - baseline over seeds; the claim "
                 "holds when the CI lies inside the region):")
        _display(comparisons)


def show_training_curves(ctx: ReportContext) -> None:
    """Per sweep (or set of loose runs): the curves with mean +- std bands and the final-epoch table."""
    absent = ctx.store_absent()
    if absent:
        return not_run(absent)
    curves = training_curves(ctx.index, ctx.paper)
    if curves.empty:
        names = ", ".join(sorted(_empirical_names(ctx.paper))) or "none"
        return not_run(f"no training results for {ctx.paper} in `{ctx.store}` (looked for STORE/sweeps/*/results.csv "
                       f"and STORE/runs/*/metrics.csv of {ctx.paper} models; this paper's comparisons: {names})")
    for source, part in curves.groupby("source", sort=True):
        markdown(f"#### {source}")
        show_figure(plot_training_curves(part, title=f"{source}: mean ± std over seeds"))
        _display(final_epoch_table(part))


def _section(ctx: ReportContext, kind: str, what: str, how: str):
    absent = ctx.store_absent()
    if absent:
        not_run(absent)
        return None
    found = ctx.index.artefacts_of(kind, ctx.paper)
    if not found:
        others = len(ctx.index.artefacts) and sum(a.kind == kind for a in ctx.index.artefacts)
        not_run(f"no {what} of {ctx.paper} models in `{ctx.store}`"
                + (f" ({others} of other papers' models)" if others else "") + f"; make one with `{how}`")
        return None
    return found


def show_landscapes(ctx: ReportContext) -> None:
    found = _section(ctx, "landscape", "loss landscape", "blockaudit landscape RUN_DIR")
    if found:
        for fig in plot_landscapes(found):
            show_figure(fig)
        _display(landscape_table(found))


def show_risk_gaps(ctx: ReportContext) -> None:
    found = _section(ctx, "risk_gap", "risk-gap result", "blockaudit risk-gap RUN_DIR")
    if found:
        for fig in plot_risk_gaps(found):
            show_figure(fig)
        _display(risk_gap_table(found))


def show_curvature(ctx: ReportContext) -> None:
    found = _section(ctx, "curvature", "curvature result", "blockaudit curvature RUN_DIR")
    if found:
        show_figure(plot_curvature(found))
        _display(curvature_table(found))


def show_reproduction(ctx: ReportContext, name: str) -> None:
    """A committed reproduction (``REPORTS/<name>/``): its markdown report, and its figures as PNG."""
    folder = ctx.reports / name
    md = folder / f"{name.replace('-', '_')}.md"
    if not md.is_file():
        candidates = sorted(folder.glob("*.md")) if folder.is_dir() else []
        if not candidates:
            return not_run(f"no reproduction in `{folder}`; make it with `blockaudit reproduce {name}`")
        md = candidates[0]
    text = md.read_text()
    # The report's own title is a level-1 heading; inside a section it must not outrank the notebook's.
    markdown(re.sub(r"^# ", "#### ", text, count=1, flags=re.M))
    for png in sorted(folder.glob("*.png")):
        markdown(f"`{png.name}`:")
        if _shell() is not None:
            from IPython.display import Image

            _display(Image(filename=str(png)))
    csvs = ", ".join(f"`{p.name}`" for p in sorted(folder.glob("*.csv")))
    if csvs:
        markdown(f"Raw data beside it in `{folder}`: {csvs}.")


# ----------------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _relative(path: Path, start: Path) -> str:
    # Inside the working directory (the repository, usually) paths are written relative to the
    # notebook's folder, the kernel's working directory, so a committed notebook names no machine's
    # absolute paths and re-runs where it lies; anything else stays absolute rather than "../../..".
    path, start, cwd = Path(path).resolve(), Path(start).resolve(), Path.cwd().resolve()
    if path.is_relative_to(cwd) and start.is_relative_to(cwd):
        return os.path.relpath(path, start)
    return str(path)


def _inject_parameters(nb, params: dict) -> None:
    import nbformat

    source = "# Parameters injected by `blockaudit report`\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)


def _kernel_spec_dir(tmp: Path) -> Path:
    # A kernelspec of our own naming this interpreter: a "python3" spec installed elsewhere on the
    # machine may point at another Python without this package.
    kdir = tmp / "kernels" / "blockaudit-python3"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return tmp / "kernels"


def _execution_error(nb, exc, paper: str, source: Path) -> NotebookExecutionError:
    where = ""
    for i, cell in enumerate(nb.cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
            where = f" in cell {i} ({first.strip()[:80]!r})"
            break
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    tb = _ANSI.sub("", getattr(exc, "traceback", "") or str(exc)).strip()
    tail = "\n".join(tb.splitlines()[-15:])
    return NotebookExecutionError(f"the {paper} notebook ({source}) failed{where}: {ename}: {evalue}\n{tail}")


def _compact_png(data: str) -> str:
    """A base64 PNG quantised to a 256-colour palette (on white), if that is smaller.

    Filled contours antialiased in RGBA cost ~140 KB a figure; the palette version looks the same
    at ~1/4 of the size, which keeps a notebook with a dozen figures well under 1 MB.
    """
    import base64
    import io

    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it the figures stay as they are
        return data
    raw = base64.b64decode(data)
    image = Image.open(io.BytesIO(raw)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    small = Image.alpha_composite(white, image).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii") if buf.tell() < len(raw) else data


def _compact_outputs(nb) -> None:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if isinstance(png, str):
                output["data"]["image/png"] = _compact_png(png.replace("\n", ""))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_notebook(paper: str, *, audit_json: Path | str, store: Path | str, reports: Path | str,
                   out: Path | str, source: Path | str | None = None, html: bool = True,
                   timeout: int = 600) -> list[Path]:
    """Execute ``paper``'s notebook source on the given inputs; write ``<out>/<paper>.ipynb`` (+ ``.html``).

    ``source`` defaults to ``experiments/notebooks/<paper>.py``. Raises ``NotebookExecutionError``
    (the failing cell and its traceback) if a cell raises; then nothing is written.
    """
    import jupytext
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from analysis.validation import check_int

    paper = _paper_id(paper)
    source = Path(source) if source is not None else notebook_source(paper)
    if not source.is_file():
        raise FileNotFoundError(f"no notebook source at {source}")
    timeout = check_int("timeout", timeout, min_value=1)
    load_audit(audit_json)  # fail here, with the path and the fix, not inside the kernel
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata.pop("jupytext", None)  # its version and paths would churn every diff
    _inject_parameters(nb, {"PAPER": paper, "STORE": _relative(Path(store), out),
                            "AUDIT_JSON": _relative(Path(audit_json), out), "REPORTS": _relative(Path(reports), out)})
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # nbformat draws random ids; fixed ones keep a rebuild byte-identical
    repo_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    # The kernel imports this very checkout even where the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join([repo_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets ipykernel's debugger warning on stderr
    env.pop("MPLBACKEND", None)  # the notebook chooses the inline backend itself
    with tempfile.TemporaryDirectory(prefix="blockaudit-kernel-") as tmp:
        ksm = KernelSpecManager(kernel_dirs=[str(_kernel_spec_dir(Path(tmp)))])
        km = AsyncKernelManager(kernel_name="blockaudit-python3", kernel_spec_manager=ksm)
        client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False, allow_errors=False,
                                resources={"metadata": {"path": str(out.resolve())}})
        log_path = Path(tmp) / "kernel.log"
        # The kernel's own console output (transport warnings, shutdown notices) is kept out of the
        # user's terminal; it is shown only if the kernel dies.
        with open(log_path, "w") as log:
            try:
                client.execute(env=env, cwd=str(out.resolve()), stdout=log, stderr=log)
            except (CellExecutionError, CellTimeoutError) as exc:
                raise _execution_error(nb, exc, paper, source) from None
            except DeadKernelError as exc:
                log.flush()
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise NotebookExecutionError(f"the kernel running the {paper} notebook ({source}) died: {exc}\n"
                                             f"kernel output:\n{tail}") from None
    _compact_outputs(nb)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    from experiments.runs.provenance import provenance, provenance_line

    # What built this notebook: the command, commit and machine (the cells show the audit's own).
    prov = provenance("cpu")
    nb.metadata["blockaudit"] = {"built_by": prov}
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f"*Built by `{prov['command']}` at {provenance_line(prov)}, from `{_relative(Path(audit_json), out)}` and "
        f"the store `{_relative(Path(store), out)}`.*", id="cell-provenance"))

    ipynb = out / f"{paper.lower()}.ipynb"
    _write_atomic(ipynb, nbformat.writes(nb) + "\n")
    files = [ipynb]
    if html:
        from nbconvert import HTMLExporter

        # The "basic" template is the notebook's cells alone; the "lab" page adds ~280 kB of JupyterLab
        # styles and scripts to every file, which the committed reports cannot afford (the tree that
        # travels to the GPU machine is capped). A few lines of CSS keep tables and code readable.
        body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
        path = out / f"{paper.lower()}.html"
        _write_atomic(path, _html_page(f"blockaudit report: {paper}", body))
        files.append(path)
    return files


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
pre, code { font-family: ui-monospace, monospace; font-size: 0.9em; }
div.input pre, .highlight pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; }
.prompt { display: none; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; vertical-align: top; }
th { background: #f0f0f0; }
img { max-width: 100%; }
"""


def _html_page(title: str, body: str) -> str:
    import html

    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
            f"<title>{html.escape(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def build_reports(papers=None, *, audit_json="reports/audit.json", store="runs", reports="reports",
                  out="reports/notebooks", sources=None, html: bool = True, timeout: int = 600,
                  progress: bool = True) -> list[Path]:
    """``build_notebook`` for each of ``papers`` (default: all), with a progress bar; returns the files."""
    papers = list(PAPERS) if not papers else [_paper_id(p) for p in papers]
    load_audit(audit_json)
    sources_of = {p: notebook_source(p, sources) for p in papers}
    from tqdm.auto import tqdm

    files = []
    bar = tqdm(papers, desc="report", unit="notebook", disable=not progress)
    for paper in bar:
        bar.set_postfix_str(paper)
        files += build_notebook(paper, audit_json=audit_json, store=store, reports=reports, out=out,
                                source=sources_of[paper], html=html, timeout=timeout)
    return files


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one executed notebook per paper (.ipynb + HTML) from the audit and the results store",
        description="Build, from stored results, one executed notebook per paper: the claims table, training "
                    "curves (mean +- std), landscape contours on shared levels, risk-gap curves and curvature "
                    "figures. Sources: experiments/notebooks/<paper>.py (jupytext percent format).")
    p.add_argument("--paper", action="append", default=None, metavar="ID",
                   help=f"paper id ({', '.join(PAPERS)}); repeatable or comma-separated (default: all)")
    p.add_argument("--audit", type=Path, default=Path("reports") / "audit.json",
                   help="audit.json written by `blockaudit audit` (default: %(default)s)")
    p.add_argument("--store", type=Path, default=Path("runs"),
                   help="results store with runs/ and sweeps/ (default: %(default)s)")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="folder holding the reproductions, e.g. nd-table2/ (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("reports") / "notebooks",
                   help="output folder (default: %(default)s)")
    p.add_argument("--sources", type=Path, default=None,
                   help="folder of notebook sources <paper>.py (default: the ones in experiments/notebooks)")
    p.add_argument("--no-html", action="store_true", help="write only the .ipynb files")
    p.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    papers = [p.strip() for arg in (args.paper or []) for p in arg.split(",") if p.strip()]
    for p in papers:
        _paper_id(p)
    try:
        files = build_reports(papers or None, audit_json=args.audit, store=args.store, reports=args.reports,
                              out=args.out, sources=args.sources, html=not args.no_html, timeout=args.timeout,
                              progress=not args.no_progress)
    except NotebookExecutionError as exc:
        print(f"blockaudit report: error: {exc}", file=sys.stderr)
        return 1
    if not Path(args.store).is_dir():
        print(f"note: the store {args.store} does not exist; the notebooks say 'not run' for its sections")
    for f in files:
        print(f"wrote {f} ({f.stat().st_size / 1024:.0f} KiB)")
    return 0
