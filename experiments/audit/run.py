"""``blockaudit audit``: run every check the profile covers and give each claim a verdict.

Verdicts are computed, never written by hand:

- theory claims: ``theory_checks`` runs in-process under pytest; a collector plugin records each
  test's ``claim`` marker, role and outcome, and ``theory_verdict`` folds them into a verdict;
- numeric claims: the reproduction named by the claim runs and returns its own verdict;
- empirical claims: ``experiments.audit.empirical`` trains (or reuses from the store) the block and its
  baseline over paired seeds and judges the CI of the difference against the claim's region: a CPU
  analogue on digits in the ``quick`` profile, CIFAR-10 on a GPU in the ``full`` profile (runs
  missing from the store without a GPU make the claim ``not run``, with the reason).

The audit writes ``AUDIT.md``, ``audit.json`` and ``audit.csv`` into the output folder; for
empirical claims they also carry the profile, the effect and its CI, the number of seeds, the
tolerance (region) and the schedule.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from experiments.claims import CLAIMS, CLAIMS_BY_ID, PAPERS, VERDICTS, Claim, Verdict
from experiments.report.tables import markdown_table

PROFILES = ("quick", "full")
ROLES = ("conclusion", "assumption", "refutes")


@dataclass
class CheckOutcome:
    """One theory-check test as the audit saw it."""

    nodeid: str
    claim_ids: tuple[str, ...]
    role: str
    summary: str
    outcome: str = "not run"  # passed | failed | skipped | error | not run
    message: str = ""
    evidence: str = ""
    duration: float = 0.0


@dataclass
class TheoryRun:
    outcomes: list[CheckOutcome] = field(default_factory=list)
    collection_errors: list[str] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0


def _first_line(text: str | None) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ClaimCollector:
    """pytest plugin: records claim markers at collection and outcomes at run time."""

    def __init__(self, select: set[str] | None = None) -> None:
        self.by_nodeid: dict[str, CheckOutcome] = {}
        self.collection_errors: list[str] = []
        self.select = select

    def pytest_collection_modifyitems(self, config, items):
        kept, dropped = [], []
        for item in items:
            markers = list(item.iter_markers(name="claim"))
            ids_here = {i for m in markers for i in m.args}
            if self.select is not None and not (ids_here & self.select):
                dropped.append(item)
                continue
            kept.append(item)
            if not markers:
                continue
            ids: list[str] = []
            role = "conclusion"
            for m in markers:
                ids.extend(m.args)
                role = m.kwargs.get("role", role)
            func = getattr(item, "function", None)
            self.by_nodeid[item.nodeid] = CheckOutcome(
                nodeid=item.nodeid, claim_ids=tuple(dict.fromkeys(ids)), role=role,
                summary=_first_line(getattr(func, "__doc__", "")) or item.name,
            )
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(f"{report.nodeid or 'theory_checks'}: {_short(report.longreprtext, 500)}")

    def pytest_runtest_logreport(self, report):
        rec = self.by_nodeid.get(report.nodeid)
        if rec is None:
            return
        rec.duration += report.duration
        props = [str(v) for k, v in report.user_properties if k == "evidence"]
        if props:
            rec.evidence = "; ".join(props)
        if report.when == "call":
            if report.passed:
                rec.outcome = "passed"
            elif report.skipped:
                rec.outcome = "skipped"
                rec.message = _short(_skip_reason(report))
            else:
                rec.outcome = "failed"
                rec.message = _short(_crash_message(report))
        elif report.failed:  # setup or teardown broke: the check itself did not run properly
            rec.outcome = "error"
            rec.message = _short(_crash_message(report))
        elif report.skipped and report.when == "setup":
            rec.outcome = "skipped"
            rec.message = _short(_skip_reason(report))


def _crash_message(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else report.longreprtext


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def theory_checks_dir() -> Path:
    import theory_checks

    return Path(theory_checks.__file__).resolve().parent


def run_theory_checks(hypothesis_profile: str = "ci", select: list[str] | None = None,
                      quiet: bool = False, path: Path | None = None,
                      extra_args: tuple[str, ...] = ()) -> TheoryRun:
    """Run ``theory_checks`` (or the test folder ``path``) in-process; return each claim-marked test's outcome."""
    import pytest

    path = Path(path) if path is not None else theory_checks_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"theory_checks folder not found at {path}")
    collector = _ClaimCollector(set(select) if select else None)
    args = [str(path), "-p", "no:cacheprovider", "--hypothesis-profile", hypothesis_profile,
            "-q" if not quiet else "-qq", "--no-header", *extra_args]
    start = time.perf_counter()
    exit_code = pytest.main(args, plugins=[collector])
    return TheoryRun(outcomes=list(collector.by_nodeid.values()),
                     collection_errors=collector.collection_errors,
                     exit_code=int(exit_code), seconds=time.perf_counter() - start)


def collect_claim_tests(path: Path | None = None) -> dict[str, list[str]]:
    """Map each claim id to the theory-check tests marked with it (collection only, nothing runs)."""
    run = run_theory_checks(quiet=True, path=path, extra_args=("--collect-only",))
    if run.collection_errors:
        raise RuntimeError("theory_checks could not be collected: " + "; ".join(run.collection_errors))
    found: dict[str, list[str]] = {}
    for o in run.outcomes:
        for cid in o.claim_ids:
            found.setdefault(cid, []).append(o.nodeid)
    return found


def theory_verdict(claim: Claim, outcomes: list[CheckOutcome], collection_errors: list[str] = ()) -> Verdict:
    """Fold the outcomes of the tests marked with ``claim.id`` into one verdict.

    - a failing ``conclusion`` test, or a passing ``refutes`` test: ``fails``;
    - a broken test (error) or a failing ``assumption`` test, and no failure: ``inconclusive``;
    - every test skipped or none found: ``not run`` (with the reason);
    - otherwise every conclusion test passed: ``holds``.
    """
    mine = [o for o in outcomes if claim.id in o.claim_ids]
    check = "pytest " + ", ".join(o.nodeid for o in mine) if mine else "pytest theory_checks"
    if not mine:
        if collection_errors:
            return Verdict(claim.id, "inconclusive",
                           "theory_checks could not be collected: " + _short("; ".join(collection_errors)), check)
        return Verdict(claim.id, "not run", "no test in theory_checks is marked with this claim id", check)
    for o in mine:
        if o.role not in ROLES:
            return Verdict(claim.id, "inconclusive", f"{o.nodeid} has unknown role {o.role!r}", check)

    def line(o: CheckOutcome) -> str:
        extra = f" [{o.evidence}]" if o.evidence else ""
        return f"{o.summary}{extra}"

    failed = [o for o in mine if o.role == "conclusion" and o.outcome == "failed"]
    refuting = [o for o in mine if o.role == "refutes" and o.outcome == "passed"]
    if failed or refuting:
        parts = [f"counterexample: {line(o)}" for o in refuting]
        parts += [f"{o.nodeid.split('::')[-1]} failed: {o.message}" for o in failed]
        passed = [o for o in mine if o.role == "conclusion" and o.outcome == "passed"]
        if passed:
            parts.append(f"{len(passed)} other check(s) passed: " + "; ".join(o.summary for o in passed))
        return Verdict(claim.id, "fails", "; ".join(parts), check)
    broken = [o for o in mine if o.outcome == "error"]
    weak = [o for o in mine if o.role == "assumption" and o.outcome == "failed"]
    if broken or weak:
        parts = [f"{o.nodeid.split('::')[-1]} errored: {o.message}" for o in broken]
        parts += [f"the counterexample without the assumption was not found ({o.nodeid.split('::')[-1]}): "
                  f"{o.message}" for o in weak]
        return Verdict(claim.id, "inconclusive", "; ".join(parts), check)
    ran = [o for o in mine if o.outcome == "passed"]
    conclusions = [o for o in ran if o.role == "conclusion"]
    if not conclusions:
        reasons = {o.message for o in mine if o.outcome == "skipped"} or {"no conclusion test ran"}
        return Verdict(claim.id, "not run", "skipped: " + "; ".join(sorted(reasons)), check)
    parts = [line(o) for o in conclusions]
    needed = [line(o) for o in ran if o.role == "assumption"]
    if needed:
        parts.append("assumption needed: " + "; ".join(needed))
    evidence = f"{len(conclusions)} check(s) passed: " + "; ".join(parts)
    return Verdict(claim.id, "holds", evidence, check)


@dataclass
class EmpiricalOptions:
    """How the audit runs the empirical checks (``experiments.audit.empirical``).

    ``store``: the results store (runs are reused, never retrained); ``device``: where training
    runs (the full profile trains only on CUDA); ``data``: the full profile's CIFAR-10 (``--data``);
    ``max_minutes``: no new model's runs start after that many minutes of the audit; ``workers``:
    runs trained at once (None: one per CPU core in the quick profile, whose runs each take one
    thread, so the numbers do not depend on it; 1 in the full profile); ``train``: False judges
    from the store only.
    """

    store: Path = Path("runs")
    device: str | None = None
    data: Path | None = None
    max_minutes: float | None = None
    workers: int | None = None
    train: bool = True

    def workers_for(self, profile: str) -> int:
        if self.workers is not None:
            return self.workers
        return _cpu_count() if profile == "quick" else 1


def empirical_verdict(claim: Claim, profile: str, options: EmpiricalOptions, *, deadline: float | None = None,
                      progress: bool = True, data_cache: dict | None = None, log=print) -> Verdict:
    """Run (or reuse) the claim's training comparison and turn its outcome into a ``Verdict``."""
    from experiments.audit.empirical import get_check, run_empirical

    name = claim.settled_by.split(":", 1)[1]
    try:
        check = get_check(name)
    except KeyError as exc:
        return Verdict(claim.id, "not run", str(exc.args[0]), claim.settled_by)
    try:
        out = run_empirical(check, profile, options.store, device=options.device, data_path=options.data,
                            workers=options.workers_for(profile), deadline=deadline, train=options.train,
                            progress=progress, data_cache=data_cache, log=log)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        # A missing dataset or a store holding other configs: reported on the claim, the audit goes on.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return Verdict(claim.id, "not run", f"{type(exc).__name__}: {_short(str(msg), 600)}",
                       f"empirical:{name} ({profile} profile)")
    return Verdict(claim.id, out.status, out.evidence, out.check, tuple(out.runs), dict(out.details))


def run_reproduction(name: str, profile: str, out_dir: Path, progress: bool) -> tuple[list[Verdict], list[str]]:
    """Run one reproduction at the profile's size; return its verdicts and the files it wrote."""
    from experiments.reproduce import get_reproduction

    rep = get_reproduction(name)
    if profile == "quick":
        config = rep.quick_config()
    elif rep.full_config is not None:
        config = rep.full_config()
    else:
        raise ValueError(f"reproduction {name!r} defines no paper-scale config for the full profile")
    result = rep.execute(config, out_dir / name, progress=progress)
    files = [str(f) for f in result.files]
    verdicts = [Verdict(v.claim_id, v.status, v.evidence, f"blockaudit reproduce {name} ({profile} profile)",
                        tuple(files)) for v in result.verdicts]
    return verdicts, files


def _reproduction_verdicts(name: str, claims: list[Claim], run) -> dict[str, Verdict]:
    """``run()``'s verdicts for the selected claims; a crash becomes an inconclusive verdict that says so."""
    try:
        got, _ = run()
    except Exception as exc:  # noqa: BLE001 - a crashed reproduction is reported per claim, not hidden
        got = [Verdict(c.id, "inconclusive", f"reproduction {name} crashed: {type(exc).__name__}: {exc}",
                       f"blockaudit reproduce {name}") for c in claims if c.settled_by == f"reproduce:{name}"]
    wanted = {c.id for c in claims}
    return {v.claim_id: v for v in got if v.claim_id in wanted}


def _one_thread() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _start_reproductions(names: list[str], profile: str, out_dir: Path) -> dict:
    """Run each reproduction in one spawned single-thread process; ``(pool, {name: future})``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_thread)
    futures = {name: pool.submit(run_reproduction, name, profile, out_dir, False) for name in names}
    pool.shutdown(wait=False)  # the futures still complete; nothing new is submitted
    return pool, futures


def _stop(pool) -> None:
    """End a background pool's processes now (Ctrl-C, a failed audit): they hold nothing to keep."""
    if pool is None:
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()


@dataclass
class AuditResult:
    verdicts: list[Verdict]
    meta: dict
    theory: TheoryRun | None

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for v in self.verdicts:
            c = CLAIMS_BY_ID[v.claim_id]
            d = v.details or {}
            ci = d.get("ci") or [None, None]
            rows.append({"claim": v.claim_id, "paper": c.paper, "kind": c.kind, "verdict": v.status,
                         "evidence": v.evidence, "check": v.check, "runs": ";".join(v.runs),
                         "profile": d.get("profile", self.meta.get("profile", "")),
                         "effect": d.get("effect"), "ci_low": ci[0], "ci_high": ci[1],
                         "n_seeds": d.get("n_seeds"), "tolerance": d.get("tolerance", ""),
                         "schedule": d.get("schedule", ""),
                         "made_on": "; ".join(d.get("made_on") or [self.meta.get("machine", "")]),
                         "commit": self.meta.get("commit", "")})
        return pd.DataFrame(rows)

    def counts(self) -> dict[str, int]:
        return {s: sum(v.status == s for v in self.verdicts) for s in VERDICTS}


def run_audit(profile: str = "quick", out_dir: Path | str = "reports", claim_ids: list[str] | None = None,
              hypothesis_profile: str = "ci", progress: bool = True, reproductions: bool = True,
              log=print, empirical: EmpiricalOptions | None = None, train_only: bool = False) -> AuditResult:
    """Check every claim (or ``claim_ids``) and write AUDIT.md, audit.json and audit.csv to ``out_dir``.

    ``empirical`` configures the training comparisons (default: ``EmpiricalOptions()``, store
    ``runs/``). ``train_only`` keeps only the empirical claims (no pytest, no reproductions): for
    GPU calls that fill the store.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    out_dir = Path(out_dir)
    empirical = empirical if empirical is not None else EmpiricalOptions()
    if not isinstance(empirical, EmpiricalOptions):
        raise TypeError(f"empirical must be an EmpiricalOptions; got {type(empirical).__name__}")
    if empirical.max_minutes is not None and not empirical.max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0 (minutes after which no new runs start); got {empirical.max_minutes}")
    if claim_ids:
        unknown = [c for c in claim_ids if c not in CLAIMS_BY_ID]
        if unknown:
            raise ValueError(f"unknown claim id(s) {', '.join(unknown)}; known ids: {', '.join(CLAIMS_BY_ID)}")
    claims = [c for c in CLAIMS if not claim_ids or c.id in claim_ids]
    if train_only:
        claims = [c for c in claims if c.settled_by.startswith("empirical:")]
        if not claims:
            raise ValueError("--train-only keeps only empirical claims, and none was selected; empirical ids: "
                             + ", ".join(c.id for c in CLAIMS if c.settled_by.startswith("empirical:")))
    if profile == "full" and empirical.data is not None:
        from experiments.audit.empirical import full_dataset

        full_dataset(empirical.data)  # a wrong --data fails here, naming the path, before anything runs
    start = time.perf_counter()
    deadline = time.monotonic() + 60 * empirical.max_minutes if empirical.max_minutes is not None else None
    verdicts: dict[str, Verdict] = {}

    theory_claims = [c for c in claims if c.settled_by == "theory"]
    theory = None
    if theory_claims:
        log(f"[1/3] theory checks: pytest theory_checks (hypothesis profile {hypothesis_profile!r})")
        theory = run_theory_checks(hypothesis_profile,
                                   select=None if not claim_ids else [c.id for c in theory_claims],
                                   quiet=not progress)
        for c in theory_claims:
            verdicts[c.id] = theory_verdict(c, theory.outcomes, theory.collection_errors)

    repro_names = sorted({c.settled_by.split(":", 1)[1] for c in claims if c.settled_by.startswith("reproduce:")})
    empirical_claims = [c for c in claims if c.settled_by.startswith("empirical:")]
    # The quick profile's training runs take one core each; the reproductions then run beside them
    # in a process of their own (one thread, so their numbers do not depend on the machine's cores)
    # instead of before them: on 2 cores that saves their whole time.
    background = profile == "quick" and reproductions and repro_names and empirical_claims and empirical.train
    pool, pending = _start_reproductions(repro_names, profile, out_dir) if background else (None, {})
    for i, name in enumerate(repro_names):
        if not reproductions:
            for c in claims:
                if c.settled_by == f"reproduce:{name}":
                    verdicts[c.id] = Verdict(c.id, "not run", "reproductions were skipped (--no-reproductions)",
                                             c.settled_by)
            continue
        if background:
            log(f"[2/3] reproduction {i + 1}/{len(repro_names)}: {name} ({profile} profile), in the background")
            continue
        log(f"[2/3] reproduction {i + 1}/{len(repro_names)}: {name} ({profile} profile)")
        verdicts.update(_reproduction_verdicts(name, claims, lambda: run_reproduction(name, profile, out_dir,
                                                                                      progress)))

    log(f"[3/3] empirical claims: {len(empirical_claims)} ({profile} profile, store {empirical.store})")
    data_cache: dict = {}
    empirical_start = time.perf_counter()
    if profile == "quick" and empirical.train and empirical_claims:
        from experiments.audit.empirical import get_check, train_checks

        try:
            train_checks([get_check(c.settled_by.split(":", 1)[1]) for c in empirical_claims], profile,
                         empirical.store, workers=empirical.workers_for(profile), progress=progress,
                         data_cache=data_cache, log=log)
        except BaseException:
            _stop(pool)
            raise
    if pending:
        if not all(f.done() for f in pending.values()):
            log("  waiting for the reproductions")
        for name, future in pending.items():
            verdicts.update(_reproduction_verdicts(name, claims, future.result))
    for i, c in enumerate(empirical_claims):
        log(f"  [{i + 1}/{len(empirical_claims)}] {c.id} ({c.settled_by})")
        verdicts[c.id] = empirical_verdict(c, profile, empirical, deadline=deadline, progress=progress,
                                           data_cache=data_cache, log=log)
    empirical_seconds = time.perf_counter() - empirical_start
    for c in claims:
        if c.id not in verdicts:
            verdicts[c.id] = Verdict(c.id, "not run", f"its check {c.settled_by!r} produced no verdict", c.settled_by)

    import torch

    from experiments.runs.provenance import provenance, provenance_line

    prov = provenance(empirical.device or "cpu")
    meta = {
        "profile": profile,
        "hypothesis_profile": hypothesis_profile,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.system()}, {prov['machine']['cpu']}, {_cpu_count()} CPU cores "
                   f"({prov['machine']['cpu_capability']}), python {platform.python_version()}, torch "
                   f"{torch.__version__}, "
                   f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        "provenance": prov,
        "provenance_line": provenance_line(prov),
        "seconds": round(time.perf_counter() - start, 1),
        "theory_seconds": round(theory.seconds, 1) if theory else None,
        "empirical_seconds": round(empirical_seconds, 1),
        "store": str(empirical.store),
        "device": empirical.device,
        "data": str(empirical.data) if empirical.data is not None else None,
        "train_only": train_only,
        "theory_collection_errors": theory.collection_errors if theory else [],
    }
    result = AuditResult([verdicts[c.id] for c in claims], meta, theory)
    write_audit(result, out_dir)
    return result


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_audit(result: AuditResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = result.to_frame()
    frame.to_csv(out_dir / "audit.csv", index=False)
    payload = {"meta": result.meta, "counts": result.counts(),
               "verdicts": [v.to_dict() | {"statement": CLAIMS_BY_ID[v.claim_id].statement}
                            for v in result.verdicts]}
    (out_dir / "audit.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / "AUDIT.md").write_text(render_markdown(result))
    return [out_dir / "AUDIT.md", out_dir / "audit.json", out_dir / "audit.csv"]


_BADGE = {"holds": "holds", "fails": "**fails**", "inconclusive": "*inconclusive*", "not run": "not run"}


def _empirical_table(result: AuditResult) -> pd.DataFrame:
    rows = []
    for v in result.verdicts:
        d = v.details or {}
        for c in d.get("comparisons", []):
            def fmt(x):
                return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:+.2f}"
            lo, hi = c["region"]
            rows.append({"claim": v.claim_id, "profile": d.get("profile", ""),
                         "comparison": c["block"] + (f" - {c['baseline']}" if c["baseline"] else ""),
                         "effect": fmt(c["mean"]), "95% CI": f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]",
                         "n": c["n"], "region": f"({lo:+g}, {hi:+g})", "result": c["status"], "paper": c["paper"],
                         "stability": _stability_cell(c.get("stability")),
                         "made on": "; ".join(d.get("made_on") or []), "schedule": d.get("schedule", "")})
    return pd.DataFrame(rows)


def _stability_cell(stab: dict | None) -> str:
    if not stab:
        return "not probed"
    word = "stable" if stab["stable"] else "**unstable**"
    return f"{word} (+-{stab['shift']:.2f})"


def render_markdown(result: AuditResult) -> str:
    m = result.meta
    counts = result.counts()
    lines = [
        "# blockaudit: audit of the papers' claims",
        "",
        f"Profile `{m['profile']}` (hypothesis profile `{m['hypothesis_profile']}`), run {m['date']} on "
        f"{m['machine']}; took {m['seconds']} s.",
        "",
        f"Made by `{m.get('provenance', {}).get('command', 'blockaudit audit')}` at "
        + (f"{m['provenance_line']}." if m.get("provenance_line") else "an unrecorded commit."),
        "The theory checks and the reproductions ran on that machine during this audit; each empirical "
        "verdict names the machines that trained its runs (column `made on`; a store's runs keep the "
        "machine and commit that made them).",
        "",
        "Verdicts: " + ", ".join(f"{counts[s]} {s}" for s in VERDICTS) + ".",
        "",
        "Every verdict below was computed by the check named in its row during this run: a theory check "
        "(pytest + hypothesis, `theory_checks/`), a numeric reproduction (`blockaudit reproduce NAME`), or "
        "a training comparison. `holds` means every check of the claim passed; `fails` gives the "
        "counterexample or the measured gap; `inconclusive` means the check could not decide; `not run` "
        "says why nothing ran.",
        "",
    ]
    if m.get("theory_collection_errors"):
        lines += ["**theory_checks had collection errors:**", ""]
        lines += [f"- {e}" for e in m["theory_collection_errors"]] + [""]
    frame = result.to_frame()
    emp = _empirical_table(result)
    if not emp.empty:
        lines += ["## Empirical comparisons (paired seeds)", "",
                  "Effect = mean over seeds of block - baseline final test accuracy (percentage points; for a "
                  "claim without a baseline, the accuracy itself), with the two-sided 95% t interval. A comparison "
                  "holds when the whole CI lies inside its region, fails when it lies wholly outside, and is "
                  "inconclusive otherwise (`experiments/empirical.py`). Stability: the CI shifted by twice the "
                  "float-noise standard error measured by each check's twin runs (initial weights moved by one "
                  "float32 ulp); a status that the shift changes is reported as inconclusive (unstable). Quick-profile rows are CPU analogues on "
                  "digits, not the papers' CIFAR setting.", "", markdown_table(emp), ""]
    for paper, title in PAPERS.items():
        part = frame[frame.paper == paper]
        if part.empty:
            continue
        lines += [f"## {paper}: {title}", ""]
        table = pd.DataFrame({
            "claim": part.claim,
            "kind": part.kind,
            "verdict": [_BADGE[v] for v in part.verdict],
            "evidence": [_short(e, 600) for e in part.evidence],
            "check": [_short(c, 200) for c in part.check],
        })
        lines += [markdown_table(table), ""]
    return "\n".join(lines)
