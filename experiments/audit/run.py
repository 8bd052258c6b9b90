"""``blockaudit audit``: run every check the profile covers and give each claim a verdict.

Verdicts are computed, never written by hand:

- ``TheoryCheck`` claims: their tests run in-process under pytest (``experiments.audit.theory``);
- ``Reproduction`` claims: the reproduction named by the claim runs and returns its own verdict;
- ``EmpiricalCheck`` claims: ``experiments.audit.empirical`` trains (or reuses from the store) the block and its
  baseline over paired seeds and judges the CI of the difference against the claim's region: a CPU
  analogue on digits in the ``quick`` profile, CIFAR-10 on a GPU in the ``full`` profile (runs
  missing from the store without a GPU make the claim ``not run``, with the reason).

The audit writes ``AUDIT.md``, ``audit.json`` and ``audit.csv`` into the output folder; for
empirical claims they also carry the profile, the effect and its CI, the number of seeds, the
tolerance (region) and the schedule.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from experiments.audit.datasets import full_dataset
from experiments.audit.empirical import run_empirical, train_checks
from experiments.audit.render import AuditResult, write_audit
from experiments.audit.theory import run_theory_checks, shorten, theory_verdict
from experiments.claims import ClaimRegistry, default_registry
from experiments.claims.types import PROFILES, Claim, EmpiricalCheck, Reproduction, TheoryCheck, Verdict
from experiments.reproduce import get_reproduction
from experiments.runs.provenance import provenance, provenance_line


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
    try:
        out = run_empirical(claim, profile, options.store, device=options.device, data_path=options.data,
                            workers=options.workers_for(profile), deadline=deadline, train=options.train,
                            progress=progress, data_cache=data_cache, log=log)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        # A missing dataset or a store holding other configs: reported on the claim, the audit goes on.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return Verdict(claim.id, "not run", f"{type(exc).__name__}: {shorten(str(msg), 600)}",
                       f"{claim.check_label} ({profile} profile)")
    return Verdict(claim.id, out.status, out.evidence, out.check, tuple(out.runs), dict(out.details))


def run_reproduction(name: str, profile: str, out_dir: Path, progress: bool) -> tuple[list[Verdict], list[str]]:
    """Run one reproduction at the profile's size; return its verdicts and the files it wrote."""
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
                       f"blockaudit reproduce {name}") for c in claims if c.check == Reproduction(name)]
    wanted = {c.id for c in claims}
    return {v.claim_id: v for v in got if v.claim_id in wanted}


def _one_thread() -> None:
    torch.set_num_threads(1)
    threadpool_limits(1)


def _start_reproductions(names: list[str], profile: str, out_dir: Path) -> dict:
    """Run each reproduction in one spawned single-thread process; ``(pool, {name: future})``."""
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


def run_audit(profile: str = "quick", out_dir: Path | str = "reports", claim_ids: list[str] | None = None,
              hypothesis_profile: str = "ci", progress: bool = True, reproductions: bool = True,
              log=print, empirical: EmpiricalOptions | None = None, train_only: bool = False,
              registry: ClaimRegistry | None = None) -> AuditResult:
    """Check every claim (or ``claim_ids``) and write AUDIT.md, audit.json and audit.csv to ``out_dir``.

    ``empirical`` configures the training comparisons (default: ``EmpiricalOptions()``, store
    ``runs/``). ``train_only`` keeps only the empirical claims (no pytest, no reproductions): for
    GPU calls that fill the store. ``registry``: the claims to check (default: the five papers of
    CLAIMS.md; ``default_registry().with_module(m)`` adds a paper of one's own).
    """
    registry = registry if registry is not None else default_registry()
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    out_dir = Path(out_dir)
    empirical = empirical if empirical is not None else EmpiricalOptions()
    if not isinstance(empirical, EmpiricalOptions):
        raise TypeError(f"empirical must be an EmpiricalOptions; got {type(empirical).__name__}")
    if empirical.max_minutes is not None and not empirical.max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0 (minutes after which no new runs start); got {empirical.max_minutes}")
    if claim_ids:
        unknown = [c for c in claim_ids if c not in registry.by_id]
        if unknown:
            raise ValueError(f"unknown claim id(s) {', '.join(unknown)}; known ids: {', '.join(registry.by_id)}")
    claims = [c for c in registry.claims if not claim_ids or c.id in claim_ids]
    if train_only:
        claims = [c for c in claims if isinstance(c.check, EmpiricalCheck)]
        if not claims:
            raise ValueError("--train-only keeps only empirical claims, and none was selected; empirical ids: "
                             + ", ".join(c.id for c in registry.of_type(EmpiricalCheck)))
    if profile == "full" and empirical.data is not None:
        full_dataset(empirical.data)  # a wrong --data fails here, naming the path, before anything runs
    start = time.perf_counter()
    deadline = time.monotonic() + 60 * empirical.max_minutes if empirical.max_minutes is not None else None
    verdicts: dict[str, Verdict] = {}

    theory_claims = [c for c in claims if isinstance(c.check, TheoryCheck)]
    theory = None
    # One pytest session per test folder: the project's theory_checks/ (``tests=None``), and the
    # folders that added papers bring their tests in.
    folders = list(dict.fromkeys(c.check.tests for c in theory_claims))
    for folder in folders:
        mine = [c for c in theory_claims if c.check.tests == folder]
        where = "theory_checks" if folder is None else str(folder)
        log(f"[1/3] theory checks: pytest {where} (hypothesis profile {hypothesis_profile!r})")
        select = None if not claim_ids and folder is None else [c.id for c in mine]
        run = run_theory_checks(hypothesis_profile, select=select, quiet=not progress,
                                path=None if folder is None else Path(folder))
        theory = run if theory is None else theory.merged(run)
        for c in mine:
            verdicts[c.id] = theory_verdict(c, run.outcomes, run.collection_errors)

    repro_names = sorted({c.check.name for c in claims if isinstance(c.check, Reproduction)})
    empirical_claims = [c for c in claims if isinstance(c.check, EmpiricalCheck)]
    # The quick profile's training runs take one core each; the reproductions then run beside them
    # in a process of their own (one thread, so their numbers do not depend on the machine's cores)
    # instead of before them: on 2 cores that saves their whole time.
    background = profile == "quick" and reproductions and repro_names and empirical_claims and empirical.train
    pool, pending = _start_reproductions(repro_names, profile, out_dir) if background else (None, {})
    for i, name in enumerate(repro_names):
        if not reproductions:
            for c in claims:
                if c.check == Reproduction(name):
                    verdicts[c.id] = Verdict(c.id, "not run", "reproductions were skipped (--no-reproductions)",
                                             c.check_label)
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
        try:
            train_checks(empirical_claims, profile,
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
        log(f"  [{i + 1}/{len(empirical_claims)}] {c.id} ({c.check_label})")
        verdicts[c.id] = empirical_verdict(c, profile, empirical, deadline=deadline, progress=progress,
                                           data_cache=data_cache, log=log)
    empirical_seconds = time.perf_counter() - empirical_start
    for c in claims:
        if c.id not in verdicts:
            verdicts[c.id] = Verdict(c.id, "not run", f"its check {c.check_label!r} produced no verdict", c.check_label)

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
    result = AuditResult([verdicts[c.id] for c in claims], meta, theory, registry)
    write_audit(result, out_dir)
    return result


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
