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
``risk_gap``              where both models are ResNEst-shaped (their blocks return their residual
                          features: ``block_probes.resnest_shaped``), the risk gap eps = R - A*
                          of RN Prop. 2 on the training set (cross-entropy), block - baseline, nats
========================  ======================================================================

Each is a mean over seeds with the two-sided 95% t interval, judged by the papers' rule
(``experiments.audit.stats.judge_values``), float-noise twins included: the first seed of block and
baseline (and their linear variants) is trained again from weights moved by one rounding step
(``+ulp``), every check is measured on the twins too, and a verdict that the CI shifted by the
twins' spread would change is ``inconclusive``. The checks are the papers' generic checks
(``experiments.claims.types.GENERIC_CHECKS``): a paper's comparison is one of them with a region. A
spec file (TOML) attaches claims to checks::

    [[claims]]
    id = "SE-acc"
    statement = "the SE block costs at most 1 point of accuracy"
    check = "accuracy"
    region = [-1.0, "inf"]     # the effects that agree with the claim: lo < effect < hi

A claim holds when the whole interval lies inside its region, fails when it lies wholly outside,
and is inconclusive otherwise; a check no claim names is reported as ``measured``; a claim on a check that
does not apply to the model (``risk_gap`` of a block without features) is ``not run``, with the reason. ``executor="slurm"``
trains the runs as submitit jobs on a cluster (``"local"``: submitit's local executor); the probes
then run here, on the stored runs. Every run's probe
values are kept in its run directory (``block_probes.json``), so a second call measures nothing again.
``executor="torchrun"`` trains each run data-parallel on this machine's GPUs (``torchrun --nproc-per-node``,
one large run at a time). The result is written as BLOCK_AUDIT.md, block_audit.json / .csv / .png and an
executed notebook (``block_audit.ipynb`` + HTML, ``experiments.report.block_notebook``);
``BlockAuditResult.read(folder)`` reloads it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.models import build_model
from analysis.models.skeleton import BASELINES, block_options, factory_kind, load_block
from analysis.plotting.block_compare import plot_block_audit
from analysis.plotting.landscape import save_figure
from experiments.audit.block_probes import probe_run, resnest_shaped
from experiments.audit.datasets import full_dataset
from experiments.audit.empirical import twin_models
from experiments.audit.stats import PROBE_SUFFIX, judge_values
from experiments.claims.profiles import FULL_BASE, QUICK_BASE, model
from experiments.claims.types import GENERIC_CHECKS, PROFILES, TRAINED_CHECKS, Region
from experiments.report.tables import markdown_table
from experiments.runs.data import load_dataset, normalize
from experiments.runs.provenance import provenance, provenance_line
from experiments.runs.sweep import SweepSpec, paired_differences, run_sweep
from experiments.runs.sweep_config import expand

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

__all__ = ["CHECKS", "BlockClaim", "BlockAuditResult", "load_spec", "audit_block"]

# check -> (what it measures, unit of its effect, how): the papers' generic checks
CHECKS = GENERIC_CHECKS
# the sweep labels a trained check compares
TRAINED_LABELS = {"accuracy": ("block", "baseline"), "linear_capacity": ("block_linear", "baseline_linear")}
assert set(TRAINED_LABELS) == set(TRAINED_CHECKS)
SPEC_KEYS = ("claims",)
CLAIM_KEYS = ("id", "statement", "check", "region")
RESULT_FILES = ("BLOCK_AUDIT.md", "block_audit.json", "block_audit.csv", "block_audit_curves.csv",
                "block_audit.png")


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
    """One row per check (and per claim on it): values, effect, interval, verdict; ``to_pandas()``.

    ``read(folder)`` reloads a written result (``write``); ``curves`` is the sweep's results table.
    """

    rows: list[dict]
    meta: dict = field(default_factory=dict)
    curves: pd.DataFrame | None = None  # the sweep's results table (label, seed, epoch, test_acc, ...)

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def verdicts(self) -> dict[str, str]:
        """claim id -> verdict, for the rows with a claim."""
        return {r["claim"]: r["verdict"] for r in self.rows if r["claim"]}

    def markdown(self) -> str:
        frame = self.to_pandas()
        shown = frame.assign(
            effect=[_fmt(e, u) for e, u in zip(frame.effect, frame.unit)],
            interval=[f"[{_fmt(lo, u)}, {_fmt(hi, u)}]" for lo, hi, u in zip(frame.ci_low, frame.ci_high, frame.unit)],
            block=[_num(v) for v in frame.block], baseline=[_num(v) for v in frame.baseline],
            verdict=[f"**{v}**" if v in ("holds", "fails") else v for v in frame.verdict],
        )[["check", "what", "block", "baseline", "effect", "interval", "n", "claim", "region", "verdict"]]
        m = self.meta
        skipped = [f"- `{c}` not measured: {why}." for c, why in m.get("not_applicable", {}).items()]
        unstable = [f"- `{r['claim'] or r['check']}`: {r['stability']}." for r in self.rows
                    if r.get("stability", "").startswith("unstable")]
        kind = ("" if m.get("kind", "block") == "block" else
                " The block is a whole-model factory: it replaces the skeleton, so cost ratios are the model's.")
        return "\n".join([
            f"# Block audit: {m['block']} vs {m['baseline']}", "",
            f"Profile `{m['profile']}`: {m['setting']}. Made on {m['provenance_line']}.{kind}", "",
            markdown_table(shown), "", "![block and baseline](block_audit.png)", "",
            "- Effects are means over seeds with the two-sided 95% t interval (accuracy in percentage points, "
            "the risk gap in nats, the rest as ratios block / baseline). A claim holds when its interval lies inside "
            "its region, fails when it lies wholly outside, and is inconclusive otherwise; `measured`: no claim "
            "names the check. A verdict that the interval shifted by the float-noise twins' spread would change is "
            "inconclusive (the papers' rule).",
            *unstable, *skipped,
            f"- Notebook: `block_audit.ipynb` (executed; `block_audit.html`). Reload: "
            f"`BlockAuditResult.read(\"{m.get('out', '.')}\")`.",
            f"- Runs: {', '.join(m['runs'])} in `{m['store']}`.", ""])

    def write(self, out: Path | str) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = [out / name for name in RESULT_FILES]
        files[0].write_text(self.markdown())
        files[1].write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=2, default=_json_default))
        self.to_pandas().drop(columns=["block_values", "baseline_values", "values"], errors="ignore").to_csv(
            files[2], index=False)
        if self.curves is not None:
            self.curves.to_csv(files[3], index=False)
            save_figure(plot_block_audit(self.curves, self.to_pandas(),
                                         f"{self.meta['block']} vs {self.meta['baseline']}"), files[4])
        return [f for f in files if f.exists()]

    @classmethod
    def read(cls, folder: Path | str) -> "BlockAuditResult":
        """A result ``write`` wrote to ``folder`` (its JSON and, when present, its curves)."""
        folder = Path(folder)
        path = folder / RESULT_FILES[1]
        if not path.is_file():
            raise FileNotFoundError(f"no block audit in {folder}: {path} is missing (write one with "
                                    "`blockaudit audit-block ... --out DIR`)")
        data = json.loads(path.read_text())
        curves_path = folder / RESULT_FILES[3]
        curves = pd.read_csv(curves_path) if curves_path.is_file() else None
        return cls(data["rows"], data["meta"], curves)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _num(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _fmt(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return {"pts": f"{value:+.2f} pts", "x": f"{value:.3f}x"}.get(unit, f"{value:+.4f} {unit}")


def _stem(block: str) -> str:
    where, _, name = block.rpartition(":")
    return Path(where).stem.replace("_", "-").replace(".", "-") + "-" + name.lower()


def _sweep(block: str, baseline: str, profile: str, seeds: int, width: int, epochs: int, data,
           device: str | None = None) -> SweepSpec:
    options = block_options(block, baseline)
    if profile == "quick":
        base = {**QUICK_BASE, "epochs": epochs}
    else:
        dataset, data_options, _ = full_dataset(data)  # the JPEG zip/tree or torchvision's cifar-10-batches-py
        base = {**FULL_BASE, "epochs": epochs, "device": "cuda", "dataset": dataset, "dataset_options": data_options}
    if device is not None and device != base.get("device", "cpu"):  # the default device stays out of the run ids
        base["device"] = device
    models = [model("block", "block_resnet", **options, width=width), model("baseline", baseline, width=width),
              model("block_linear", "block_resnet", **options, width=width, activations=False),
              model("baseline_linear", baseline, width=width, activations=False)]
    return SweepSpec.from_dict({
        "name": f"block-{profile}-{_stem(block)}-{options['block_sha256'][:8]}", "seeds": list(range(seeds)),
        "base": base, "models": models + twin_models(models, [0]), "paper": "user"})


def _probe_values(spec: SweepSpec, store: Path, test, train, num_classes: int, progress: bool) -> dict:
    """label -> {seed: probe values} for the block and baseline runs and their twins."""
    labels = ("block", "baseline", "block" + PROBE_SUFFIX, "baseline" + PROBE_SUFFIX)
    runs = [r for r in expand(spec) if r.label in labels]
    out: dict[str, dict[int, dict]] = {label: {} for label in labels}
    for run in tqdm(runs, desc="probes", unit="run", disable=not progress):
        out[run.label][run.seed] = probe_run(run, store, test, train, num_classes)
    return out


def _trained_effects(table: pd.DataFrame, check: str, n_test: int):
    """(block values, baseline values, effects, float-noise spread) of a trained check, in points."""
    block_label, baseline_label = TRAINED_LABELS[check]
    pairs = paired_differences(table, block_label, baseline_label).set_index("seed")
    twin = paired_differences(table, block_label + PROBE_SUFFIX, baseline_label + PROBE_SUFFIX).set_index("seed")
    changes = [abs(float(v) - float(pairs["difference"][s])) for s, v in twin["difference"].items()
               if s in pairs.index]
    # floored at one test image: no finer change of an accuracy exists (as the papers' comparisons)
    spread = max(changes + [100.0 / n_test])
    return (pairs["block_value"].to_numpy(float), pairs["baseline_value"].to_numpy(float),
            pairs["difference"].to_numpy(float), spread)


def _probe_effects(values: dict, check: str):
    """(block values, baseline values, effects, spread) of a probe check; None when it does not apply."""
    seeds = sorted(values["block"])
    b = np.array([values["block"][s][check] for s in seeds], dtype=object)
    a = np.array([values["baseline"][s][check] for s in seeds], dtype=object)
    if any(v is None for v in (*b, *a)):
        return None
    b, a = b.astype(float), a.astype(float)
    diff = CHECKS[check][1] not in ("x",)
    effect = (b - a) if diff else b / a
    twin_b = values["block" + PROBE_SUFFIX].get(seeds[0], {}).get(check)
    twin_a = values["baseline" + PROBE_SUFFIX].get(seeds[0], {}).get(check)
    spread = None
    if twin_b is not None and twin_a is not None:
        spread = abs(((twin_b - twin_a) if diff else twin_b / twin_a) - effect[0])
    return b, a, effect, spread


def audit_block(block: str, baseline: str = "resnet20", *, spec: Path | str | None = None, profile: str = "quick",
                seeds: int = 3, store: Path | str = "runs", out: Path | str | None = None, width: int | None = None,
                epochs: int | None = None, data: Path | str | None = None, workers: int | None = None,
                executor: str | None = None, executor_options: dict | None = None, notebook: bool = True,
                progress: bool = True, device: str | None = None) -> BlockAuditResult:
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
    width = width or (8 if profile == "quick" else 16)  # full: the baselines' own width (ResNet-20: 16/32/64)
    kind = factory_kind(load_block(block).factory)
    probe_model = build_model("block_resnet", **block_options(block, baseline), width=width)  # misfits fail now
    store = Path(store)
    sweep = _sweep(block, baseline, profile, seeds, width, epochs, data, device)
    workers = workers or (min(2, os.cpu_count() or 1) if profile == "quick" else 1)
    table = run_sweep(sweep, store, workers=workers, progress=progress, executor=executor,
                      executor_options=executor_options)

    base = sweep.base
    dataset = load_dataset(base["dataset"], **base.get("dataset_options", {}))
    test = (normalize(dataset.test_images, dataset.mean, dataset.std), dataset.test_labels)
    train = (normalize(dataset.train_images, dataset.mean, dataset.std), dataset.train_labels)
    num_classes = int(dataset.num_classes)
    values = _probe_values(sweep, store, test, train, num_classes, progress)

    not_applicable = {}
    shaped, why = resnest_shaped(probe_model)
    if not shaped:
        not_applicable["risk_gap"] = why
    effects = {}
    for check in CHECKS:
        if check in TRAINED_LABELS:
            effects[check] = _trained_effects(table, check, int(test[0].shape[0]))
        elif check not in not_applicable:
            measured = _probe_effects(values, check)
            if measured is None:
                not_applicable[check] = "the baseline or the block gives no value (not ResNEst-shaped)"
            else:
                effects[check] = measured

    rows = []
    for check in CHECKS:
        named = [c for c in claims if c.check == check]
        if check not in effects:
            rows += [_row(check, None, c, "not run", not_applicable.get(check, "")) for c in named]
            continue
        for claim in named or [None]:
            rows.append(_row(check, effects[check], claim))
    prov = provenance()
    meta = {"block": block, "kind": kind, "block_sha256": block_options(block, baseline)["block_sha256"],
            "baseline": baseline, "profile": profile, "seeds": seeds, "store": str(store), "sweep": sweep.name,
            "runs": sorted({r.run_id for r in expand(sweep)}), "not_applicable": not_applicable,
            "setting": (f"{base['dataset']} {base.get('dataset_options', {})}, width {width}, {epochs} epochs, "
                        f"{seeds} seeds (+ float-noise twins of seed 0), batch {base['batch_size']}, "
                        f"SGD lr {base['lr']} {base['schedule']}"),
            "provenance": prov, "provenance_line": provenance_line(prov),
            "spec": str(spec) if spec is not None else None, "out": str(out) if out is not None else None}
    result = BlockAuditResult(rows, meta, table)
    if out is not None:
        result.write(out)
        if notebook:
            from experiments.report.block_notebook import build_block_notebook

            build_block_notebook(out, store=store)
    return result


def _row(check: str, measured, claim: BlockClaim | None, verdict: str | None = None, reason: str = "") -> dict:
    what, unit, _ = CHECKS[check]
    row = {"check": check, "what": what, "unit": unit, "claim": claim.id if claim else "",
           "statement": claim.statement if claim else "",
           "region": claim.region.text().replace(" pts", "") if claim else ""}
    if measured is None:
        nan = float("nan")
        return {**row, "block": nan, "baseline": nan, "effect": nan, "ci_low": nan, "ci_high": nan, "n": 0,
                "spread": nan, "stability": reason, "verdict": verdict, "block_values": [], "baseline_values": [],
                "values": []}
    b, a, e, spread = measured
    judged = judge_values(e, claim.region if claim else Region(), spread)
    st = judged.stats
    return {**row, "block": float(b.mean()), "baseline": float(a.mean()), "effect": st.mean, "ci_low": st.ci_low,
            "ci_high": st.ci_high, "n": st.n, "spread": float("nan") if spread is None else float(spread),
            "stability": judged.stability.text() if (claim and judged.stability) else "",
            "verdict": judged.status if claim else "measured",
            "block_values": b.tolist(), "baseline_values": a.tolist(), "values": e.tolist()}
