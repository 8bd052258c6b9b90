"""What a results store holds, and which paper each result in it belongs to.

``scan_store(store)`` indexes ``STORE/runs/<run_id>/`` run directories (``config.json``,
``metrics.csv``, and ``claim.json`` where the run recorded the claim it was trained for),
``STORE/sweeps/<name>/results.csv`` (tidy: sweep, run_id, label, model, seed, epoch, metrics), and,
found by file name anywhere below ``STORE``, landscapes (``landscape.npz`` + ``.json``), risk gaps
(``risk_gap.json``) and curvature summaries (``curvature.json``). Files that cannot be read are
listed, not fatal.

A result belongs to a paper by, in this order:

1. an explicit record: a ``paper`` field in its metadata, the ``paper`` of the ``claim.json`` of the
   run directory it lies in (``{"claims": ["NRL-params"], "paper": "NRL"}``), the ``paper`` column of
   the sweep it lies in;
2. for stores made before runs recorded their paper: the name of a sweep or folder it lies in
   (``paper_of_name``: the name of one of the paper's training checks, e.g. ``rn-cifar`` or the
   audit's ``audit-quick-nrl-linear``, or a name prefixed with the paper id), then the paper its
   model is registered under (``analysis.models.model_info``; for a sweep, the most frequent paper
   of its models).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.models import model_info
from analysis.probes.landscape import LandscapeResult
from analysis.probes.risk_gap import RiskGapResult
from analysis.validation import check_choice
from experiments.claims import PAPERS, paper_of_check
from experiments.runs.store import CLAIM_RECORD

__all__ = ["Artefact", "StoreIndex", "CLAIM_RECORD", "scan_store", "as_index", "paper_id", "explicit_paper",
           "registry_paper", "paper_of_name", "sweep_paper", "run_paper"]

# The file in which a run directory records the claims (and their paper) it was trained for.


def paper_id(paper: str) -> str:
    """The registered id of ``paper`` (case-insensitive: ``"rn"`` is ``"RN"``).

    Raises ``ValueError`` naming ``--paper`` and the valid ids for an unknown one.
    """
    if isinstance(paper, str) and paper.upper() in PAPERS:
        return paper.upper()
    return check_choice("--paper", paper, PAPERS)


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
    # run_id -> {"config": dict, "metrics": DataFrame, "path": Path, "claim": dict (claim.json) or None}
    runs: dict = field(default_factory=dict)
    artefacts: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def artefacts_of(self, kind: str, paper: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind and a.paper == paper]

    def unattributed(self, kind: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind and a.paper is None]


# ----------------------------------------------------------------------------------------------
# attribution
# ----------------------------------------------------------------------------------------------

def explicit_paper(record) -> str | None:
    """The ``paper`` a metadata dict or a ``claim.json`` record names, if it is a registered paper."""
    p = record.get("paper") if isinstance(record, dict) else None
    return p.upper() if isinstance(p, str) and p.upper() in PAPERS else None


def registry_paper(model) -> str | None:
    """The paper ``model`` is registered under in ``analysis.models`` (None for an unknown name)."""
    if not isinstance(model, str) or not model:
        return None
    try:
        return model_info(model).paper.split()[0]
    except KeyError:
        return None


def paper_of_name(name: str) -> str | None:
    """The paper a sweep or folder name refers to: the name of one of its training checks (also as
    ``<prefix>-<check>``, e.g. the audit's own ``audit-quick-nrl-linear``; see
    ``experiments.claims.paper_of_check``) or ``<paper>-...`` / ``<paper>_...``."""
    low = name.lower()
    by_check = paper_of_check(name)
    for paper in PAPERS:
        if paper == by_check or low.startswith(paper.lower() + "-") or low.startswith(paper.lower() + "_"):
            return paper
    return None


def _recorded_sweep_paper(frame: pd.DataFrame) -> str | None:
    if "paper" in frame.columns:
        papers = {str(p).upper() for p in frame["paper"].dropna()}
        if len(papers) == 1 and next(iter(papers)) in PAPERS:
            return next(iter(papers))
    return None


def sweep_paper(name: str, frame: pd.DataFrame) -> str | None:
    """The paper of the sweep ``name`` (its ``results.csv`` as ``frame``): the one its ``paper`` column
    records, else the one its name refers to, else the most frequent registry paper of its models."""
    paper = _recorded_sweep_paper(frame)
    if paper is None:
        paper = paper_of_name(name)
    if paper is None and "model" in frame.columns:
        votes = pd.Series([registry_paper(m) for m in frame["model"].dropna().unique()]).dropna()
        paper = votes.mode().iloc[0] if not votes.empty else None
    return paper


def run_paper(run: dict) -> str | None:
    """The paper of a run of ``StoreIndex.runs``: the one its ``claim.json`` records, else the one its
    model is registered under."""
    return explicit_paper(run.get("claim")) or registry_paper(run["config"].get("model"))


def _attribute(index: StoreIndex, kind: str, path: Path, data, meta: dict) -> Artefact:
    rel = path.relative_to(index.root)
    run = None
    if len(rel.parts) >= 3 and rel.parts[0] == "runs":
        run = rel.parts[1]
    model = meta.get("model") if isinstance(meta, dict) else None
    if model is None and run in index.runs:
        model = index.runs[run]["config"].get("model")
    folders = rel.parts[:-1]
    paper = explicit_paper(meta)
    if paper is None and run in index.runs:
        paper = explicit_paper(index.runs[run]["claim"])
    if paper is None:
        for part in folders:
            if part in index.sweeps:
                paper = _recorded_sweep_paper(index.sweeps[part]) or paper
    if paper is None:  # a store made before runs recorded their paper
        for part in folders:
            paper = paper_of_name(part) or paper
            if part in index.sweeps and paper is None:
                paper = sweep_paper(part, index.sweeps[part])
    if paper is None:
        paper = registry_paper(model)
    return Artefact(kind, path, data, model, paper, run, rel.as_posix())


# ----------------------------------------------------------------------------------------------
# reading the store
# ----------------------------------------------------------------------------------------------

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
    return {"config": config, "metrics": metrics, "path": path, "claim": None}


def _read_claim_record(path: Path) -> dict:
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError(f"expected an object like {{\"claims\": [\"NRL-params\"], \"paper\": \"NRL\"}}; "
                         f"got {type(record).__name__}")
    return record


def _artefact_files(root: Path, name_glob: str) -> list[Path]:
    return sorted(p for p in root.rglob(name_glob) if p.is_file())


class _NotThisKind(Exception):
    """A JSON file whose name matched a pattern but that is some other file (e.g. a config)."""


def _load_landscape(path: Path):
    if not path.with_suffix(".npz").is_file():
        raise _NotThisKind
    result = LandscapeResult.load(path)
    return result, result.meta


def _load_risk_gap(path: Path):
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or "curve_train" not in payload:
        raise _NotThisKind
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
            continue
        record = path.parent / CLAIM_RECORD
        if record.is_file():
            # An unreadable record loses only the attribution it would give, not the run's metrics.
            try:
                index.runs[path.parent.name]["claim"] = _read_claim_record(record)
            except Exception as exc:
                index.problems.append(f"{record}: {type(exc).__name__}: {exc}")

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


def as_index(store) -> StoreIndex:
    """``store`` itself if it is a ``StoreIndex``, else ``scan_store(store)``."""
    return store if isinstance(store, StoreIndex) else scan_store(store)
