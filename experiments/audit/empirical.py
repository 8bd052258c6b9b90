"""Empirical claims: block-vs-baseline training comparisons, judged on paired seeds.

A claim whose check is an ``EmpiricalCheck`` (``experiments.claims``) is settled here; the check has
two profiles:

- ``quick``: a CPU *analogue* (scikit-learn digits at their native 8x8, ``load_digits(size=8)``,
  small widths, a few epochs, 5 seeds). It compares the same block with the same baseline as the
  paper, but it is not the paper's setting, and every verdict says so;
- ``full``: CIFAR-10 (``--data PATH``: ``cifar10-jpeg.zip`` / an extracted JPEG tree -> dataset
  ``cifar10_jpeg``, the torchvision ``cifar-10-batches-py`` folder -> ``cifar10``), a GPU, bf16
  autocast and channels_last, augmentation, short one-cycle schedules (stated in the verdict).

Training goes through ``experiments.runs.sweep`` (one sweep per check, runs in ``STORE/runs/<run_id>``);
finished runs are reused and never retrained, so a verdict can be recomputed from a store whose
runs lack ``checkpoint.pt`` (``config.json``, ``metrics.csv``, ``result.json`` suffice).

The statistics and the verdict rule are ``experiments.audit.stats``'s; the claims' checks
(``EmpiricalCheck``) are in the papers' modules of ``experiments.claims``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from analysis.validation import check_int
from experiments.audit.artefacts import landscape_summary, make_artefacts, risk_gap_summary
from experiments.audit.datasets import cifar100_dataset, data_key, dataset_for, full_dataset, load_data
from experiments.audit.stats import PROBE_SUFFIX, combine_statuses, judge_values
from experiments.claims.types import Claim, Comparison, EmpiricalCheck, ProfileSpec
from experiments.runs.store import RunDir, TrainConfig
from experiments.runs.sweep import (
    SweepFailed,
    SweepSpec,
    expand,
    paired_differences,
    results_table,
    run_status,
    run_sweep,
    train_runs,
)
from experiments.runs.train import cpu_threads


def twin_models(models: list[dict], probe_seeds) -> list[dict]:
    """Each model again as ``<label>+ulp``, on ``probe_seeds`` only, with ``perturb_ulps = 1``."""
    return [{**m, "label": m["label"] + PROBE_SUFFIX, "base": {**m.get("base", {}), "perturb_ulps": 1},
             "seeds": list(probe_seeds)} for m in models]


def _train_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def build_sweep(check: EmpiricalCheck, profile: str, data_path=None, claim: Claim | None = None):
    """The ``SweepSpec`` of ``check``'s ``profile`` (the full profile's dataset from ``data_path``).

    ``claim``: the claim the runs are trained for; its id and paper are recorded with each run
    (``claim.json``) and in the sweep's results, never in the run id.
    """
    ps = check.spec(profile)
    if ps.sweep is None:
        raise ValueError(f"check {check.name!r} runs nothing in profile {profile!r}: {ps.reason}")
    d = {**ps.sweep, "base": dict(ps.sweep["base"]), "models": [dict(m) for m in ps.sweep["models"]]}
    if claim is not None:
        d.update(claim=claim.id, paper=claim.paper)
    if ps.probe_seeds:
        d["models"] += twin_models(d["models"], ps.probe_seeds)
    if profile == "full":
        dataset, options, _ = (cifar100_dataset if check.full_data == "cifar100" else full_dataset)(data_path)
        # On the GPU: CPU-only id fields (threads) stay out, so the committed GPU stores keep their ids.
        d["base"].update(dataset=dataset, dataset_options=options, device="cuda")
    # Speed fields another version of TrainConfig may lack are dropped rather than failing.
    known = _train_fields()
    d["base"] = {k: v for k, v in d["base"].items() if k in known}
    return SweepSpec.from_dict(d, source=f"empirical check {check.name} ({profile})")


def schedule_text(spec) -> str:
    b = spec.base
    parts = [f"{b.get('epochs')} epochs", f"batch {b.get('batch_size', 128)}",
             f"SGD Nesterov lr {b.get('lr', 0.1):g} {b.get('schedule', 'step')}", f"wd {b.get('weight_decay', 5e-4):g}",
             "crop+flip" if b.get("augment") else "no augmentation"]
    if b.get("precision", "fp32") != "fp32":
        parts.append(b["precision"])
    own = []  # per-model overrides of the base: "resnest lr 0.005", "newton_plain_b1024 lr 0.4 batch 1024"
    for m in spec.models:
        bits = ([f"lr {m.base['lr']:g}"] if "lr" in m.base else []) + \
               ([f"batch {m.base['batch_size']}"] if "batch_size" in m.base else [])
        if bits:
            own.append(f"{m.label} " + " ".join(bits))
    return ", ".join(parts + own)


# --- running a check and judging it ------------------------------------------------------------

@dataclass
class EmpiricalOutcome:
    """A check's verdict and what backs it (the audit turns it into a ``Verdict``)."""

    claim_id: str
    status: str
    evidence: str
    check: str
    runs: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)


def _missing(spec, store: Path) -> list[str]:
    st = run_status(spec, store)
    return st.loc[st["status"] != "done", "run_id"].tolist()


def _run_ids(spec, store: Path, finished_only: bool = True) -> list[str]:
    st = run_status(spec, store)
    return st.loc[st["status"] == "done", "run_id"].tolist() if finished_only else st["run_id"].tolist()


def _check_label(check: EmpiricalCheck, profile: str) -> str:
    return f"empirical:{check.name} ({profile} profile)"


def verdict_from_store(claim: Claim, profile: str, store: Path | str, data_path=None,
                       artefact_notes: list[str] | None = None, data_cache: dict | None = None) -> EmpiricalOutcome:
    """Judge ``check`` from the finished runs in ``store`` (trains nothing; needs no checkpoint).

    ``data_cache``: the audit's dataset cache (``dataset_for``); the float-noise probe reads the
    test-set size from it instead of loading the dataset again.
    """
    store = Path(store)
    check = claim.check
    ps = check.spec(profile)
    label = _check_label(check, profile)
    if ps.sweep is None:
        return EmpiricalOutcome(claim.id, "not run", f"{profile} profile: {ps.reason}", label,
                                details={"profile": profile, "reason": ps.reason})
    spec = build_sweep(check, profile, data_path)
    missing = _missing(spec, store)
    n_runs = len(_run_ids(spec, store, finished_only=False))
    if missing:
        return EmpiricalOutcome(claim.id, "not run",
                                f"{len(missing)} runs of {n_runs} missing from {store}", label,
                                details={"profile": profile, "missing_runs": missing})
    dataset = dataset_text(spec, profile)
    setting = ps.setting.format(dataset=dataset)
    schedule = schedule_text(spec)
    table = results_table(spec, store)
    runs = tuple(_run_ids(spec, store))
    details = {"profile": profile, "setting": setting, "schedule": schedule, "dataset": dataset,
               "sweep": spec.name, "comparisons": []}
    parts, statuses = [], []
    if check.judge_fn is not None:
        status, text, extra_details = check.judge_fn(spec, store)
        statuses.append(status)
        parts.append(text)
        details.update(extra_details)
    spread = _probe_spread(spec, ps, table, data_cache) if ps.probe_seeds and ps.comparisons else None
    if ps.comparisons and spread is None:
        extra_notes = ["No float-noise probe ran for this profile: the verdicts are not checked for stability."]
    else:
        extra_notes = []
    for cmp in ps.comparisons:
        values = _comparison_values(table, cmp).to_numpy(dtype=float)
        what = f"{cmp.block} test accuracy" if cmp.baseline is None else f"{cmp.block} - {cmp.baseline}"
        verdict = judge_values(values, cmp.region, spread)
        st, status, stab = verdict.stats, verdict.status, verdict.stability
        statuses.append(status)
        stat_text = st.text() if cmp.baseline is not None else st.text().replace(" pts", "%").replace("+", "")
        stab_text = f"; {stab.text()}" if stab is not None else ""
        parts.append(f"{what}: {stat_text} vs region {cmp.region.text()} ({cmp.meaning}) -> {status}{stab_text}; "
                     f"paper {cmp.paper}")
        details["comparisons"].append({
            "block": cmp.block, "baseline": cmp.baseline, "check": cmp.check, "n": st.n, "mean": st.mean, "std": st.std,
            "ci_low": st.ci_low, "ci_high": st.ci_high, "confidence": st.confidence,
            "region": [cmp.region.lo, cmp.region.hi], "status": status, "paper": cmp.paper,
            "values": values.tolist(),
            "stability": dataclasses.asdict(stab) if stab is not None else None})
    extra = list(artefact_notes or []) + extra_notes
    if "landscape" in ps.artefacts:
        note, proxy = landscape_summary(spec, store)
        extra.append(note)
        details["landscape"] = proxy
    if "risk_gap" in ps.artefacts:
        extra.append(risk_gap_summary(spec, store))
    if check.qualitative:
        status = "inconclusive" if "landscape" not in details or details["landscape"] else "not run"
        lead = ("qualitative claim: the paper's contours show no measurable threshold, so the verdict stays "
                "inconclusive; proxy reported")
        if status == "not run":
            lead = "the landscape artefacts are missing (they need the runs' checkpoints)"
        parts.insert(0, lead)
    else:
        status = combine_statuses(statuses)
    if details["comparisons"]:
        first = details["comparisons"][0]
        details.update(effect=first["mean"], ci=[first["ci_low"], first["ci_high"]], n_seeds=first["n"],
                       tolerance="; ".join(f"{c.name} in {c.region.text()}" for c in ps.comparisons))
    details["made_on"] = runs_made_on(store, runs)
    evidence = f"{setting}; {schedule}. " + "; ".join(parts) + (". " + " ".join(extra) if extra else "")
    return EmpiricalOutcome(claim.id, status, evidence.strip(), label, runs, details)


def runs_made_on(store: Path, run_ids) -> list[str]:
    """Where the runs behind a verdict were trained: ``"<GPU or CPU (kernels, threads)>, commit <c> (n runs)"``.

    From each run's ``result.json`` provenance (the call that finished it); runs finished before
    provenance was recorded fall back to ``environment.json`` and say that their commit is unknown.
    """
    counts: dict[str, int] = {}
    for rid in run_ids:
        rd = RunDir(Path(store) / "runs" / rid)
        prov = (rd.read_result() or {}).get("provenance")
        if prov:
            where = prov["device"].get("gpu") or f"{prov['machine']['cpu']} ({prov['numeric_environment']})"
            text = f"{where}, torch {prov['versions']['torch']}, commit {str(prov['commit'])[:7]}" + \
                   (" (dirty tree)" if prov.get("dirty") else "")
        elif rd.environment_path.exists():
            env = json.loads(rd.environment_path.read_text())
            text = f"{env.get('cuda_device') or env.get('platform', 'unknown machine')}, torch {env.get('torch')}, " \
                   "commit not recorded"
        else:
            text = "machine not recorded"
        counts[text] = counts.get(text, 0) + 1
    return [f"{text} ({n} runs)" for text, n in counts.items()]


def _comparison_values(table, cmp: Comparison, suffix: str = ""):
    """Per-seed values of ``cmp`` in points, a Series by seed: block - baseline paired by seed, or the
    block's accuracy in %.

    ``suffix``: the same for the labels with it (``PROBE_SUFFIX``: the float-noise twins).
    """
    if cmp.baseline is None:
        final = table.sort_values("epoch").groupby("run_id").tail(1)
        return 100.0 * final.loc[final["label"] == cmp.block + suffix].set_index("seed")["test_acc"]
    pairs = paired_differences(table, cmp.block + suffix, cmp.baseline + suffix, "test_acc")  # in points
    return pairs.set_index("seed")["difference"]


def _probe_spread(spec, ps: ProfileSpec, table, data_cache: dict | None = None) -> float:
    """delta of the module docstring: the largest change a twin shows in a comparison's value, in points.

    Floored at one test image (100 / test-set size): no finer change of an accuracy exists, and a
    twin that happened to land on the same count does not prove the result immune to rounding.
    """
    changes = []
    for cmp in ps.comparisons:
        twin, mine = _comparison_values(table, cmp, PROBE_SUFFIX), _comparison_values(table, cmp)
        changes += [abs(float(v) - float(mine[seed])) for seed, v in twin.items() if seed in mine.index]
    n_test = int(dataset_for(spec, data_cache).test_images.shape[0])
    return max(changes + [100.0 / n_test])


def dataset_text(spec, profile: str) -> str:
    if profile == "quick":
        return "scikit-learn digits 8x8"
    return {"cifar10_jpeg": "JPEG CIFAR-10 (quality ~75)", "cifar100": "CIFAR-100 (original pickles)"}.get(
        spec.base.get("dataset"), "CIFAR-10 (original pickles)")


def run_empirical(claim: Claim, profile: str, store: Path | str, *, device: str | None = None,
                  data_path=None, workers: int = 1, deadline: float | None = None, train: bool = True,
                  progress: bool = True, data_cache: dict | None = None, log: Callable = print) -> EmpiricalOutcome:
    """Train what ``check`` still lacks in ``store`` (when allowed), make its artefacts, then judge it.

    Training happens in the quick profile (CPU) and in the full profile only on a CUDA device;
    otherwise missing runs make the claim ``not run`` with the reason. ``deadline`` (a
    ``time.monotonic()`` value) stops starting new models' runs after it; the store keeps what
    finished, and the next call resumes.
    """
    store = Path(store)
    check = claim.check
    ps = check.spec(profile)
    label = _check_label(check, profile)
    if ps.sweep is None:
        return verdict_from_store(claim, profile, store, data_path, data_cache=data_cache)
    workers = check_int("workers", workers, min_value=1)
    spec = build_sweep(check, profile, data_path, claim=claim)
    missing = _missing(spec, store)
    dev = device or ("cpu" if profile == "quick" else None)
    if missing:
        why = _cannot_train(profile, dev, train)
        if why:
            return EmpiricalOutcome(claim.id, "not run",
                                    f"{why}: {len(missing)} runs of {len(_run_ids(spec, store, False))} missing "
                                    f"from {store}; run with --profile {profile} --device cuda",
                                    label, details={"profile": profile, "missing_runs": missing})
        data = dataset_for(spec, data_cache)
        failures = {}
        # Without a deadline one call trains every label (one worker pool); with one, a call per label
        # lets the deadline stop between them.
        groups = [None] if deadline is None else [[m.label] for m in spec.models]
        with _quick_threads(profile):
            for only in groups:
                if only is not None and not _missing_of_label(spec, store, only[0]):
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    left = _missing(spec, store)
                    return EmpiricalOutcome(claim.id, "not run",
                                            f"stopped by --max-minutes before training {len(left)} runs of "
                                            f"{len(_run_ids(spec, store, False))}; re-run to resume from {store}",
                                            label, details={"profile": profile, "missing_runs": left})
                log(f"  train {spec.name}: {', '.join(only or spec.labels)}, seeds {list(spec.seeds)}")
                try:
                    run_sweep(spec, store, device=dev, workers=workers, progress=progress, data=data, only=only)
                except SweepFailed as exc:
                    failures.update(exc.failures)
        if failures:
            errs = "; ".join(f"{k}: {v}" for k, v in failures.items())
            return EmpiricalOutcome(claim.id, "inconclusive", f"training failed: {errs}", label,
                                    details={"profile": profile, "failures": failures})
    notes = []
    # Artefacts are made even past the deadline: they need the checkpoints, which a GPU machine loses
    # when it is given back, and they take seconds there (a risk gap, one 21 x 21 landscape).
    if ps.artefacts:
        with _quick_threads(profile):
            notes = make_artefacts(spec, ps, profile, store, device=dev or "cpu",
                                   log=log, data_cache=data_cache)
    return verdict_from_store(claim, profile, store, data_path, notes, data_cache)


def train_checks(claims, profile: str, store: Path | str, *, workers: int = 1, progress: bool = True,
                 data_cache: dict | None = None, log: Callable = print) -> dict[str, str]:
    """Train every run that the checks of ``claims`` lack in ``store``, all in one pool of ``workers`` processes.

    For the quick profile (CPU), where every run trains on one thread (``sweep.CPU_THREADS``): the
    runs of all checks share one pool, so the cores stay busy across checks, and the numbers do not
    depend on ``workers``. Returns ``{run_id: error}`` of runs that failed; ``run_empirical`` then
    finds every run present and only judges.
    """
    runs = []
    for claim in claims:
        if claim.check.spec(profile).sweep is not None:
            runs += expand(build_sweep(claim.check, profile, claim=claim))
    if not runs:
        return {}
    datasets = {data_key(r.config.dataset, r.config.dataset_options) for r in runs}
    # One dataset for all (the quick profile's digits): loaded once here, shared with the workers.
    data = load_data(runs[0].config.dataset, runs[0].config.dataset_options, data_cache) if len(datasets) == 1 else None
    log(f"  train {len(runs)} runs of {len(claims)} checks ({workers} at once, one thread each)")
    return train_runs(runs, store, workers=workers, progress=progress, data=data, desc="audit runs")


def _quick_threads(profile: str):
    """One torch thread for the quick profile's tiny CPU models (a context manager; others: untouched).

    At 8x8 and width <= 8 a step is dominated by per-op overhead, where a second thread only adds
    synchronisation (5x slower per step on a loaded 2-core machine, measured); one thread also makes
    the numbers independent of the machine's core count.
    """
    return cpu_threads(1 if profile == "quick" else None)


def _missing_of_label(spec, store: Path, label: str) -> list[str]:
    st = run_status(spec, store)
    return st.loc[(st["label"] == label) & (st["status"] != "done"), "run_id"].tolist()


def _cannot_train(profile: str, device: str | None, train: bool) -> str:
    """Why this call may not train (empty string: it may)."""
    if not train:
        return "training disabled"
    if profile == "quick":
        return ""
    if device is None or not str(device).startswith("cuda"):
        return f"needs a GPU (device {device or 'not given'})"
    if not torch.cuda.is_available():
        return f"needs a GPU: --device {device} given but torch.cuda.is_available() is False"
    return ""
