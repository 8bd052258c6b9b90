"""Theory claims: run the tests marked ``@pytest.mark.claim(ID)`` in-process and fold their outcomes
into verdicts.

A collector plugin records each test's ``claim`` marker, role and outcome, and the evidence the test
recorded (``record_property("evidence", ...)``, through ``theory_checks.evidence``);
``theory_verdict`` folds them into one verdict per claim. A claim's ``TheoryCheck.tests`` names
the folder of its tests (default: the project's ``theory_checks/``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import theory_checks
from experiments.claims.types import Claim, Verdict
from theory_checks.profiles import register_profiles

ROLES = ("conclusion", "assumption", "refutes")
CLAIM_MARKER = ("claim(*ids, role='conclusion'): the CLAIMS.md ids this test checks; role is 'conclusion' "
                "(asserts the claim) or 'assumption' (shows a counterexample once an assumption is dropped)")


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

    def merged(self, other: "TheoryRun") -> "TheoryRun":
        """This run and ``other`` (another test folder's) as one."""
        return TheoryRun(self.outcomes + other.outcomes, self.collection_errors + other.collection_errors,
                         max(self.exit_code, other.exit_code), self.seconds + other.seconds)


def first_line(text: str | None) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
class ClaimCollector:
    """pytest plugin: records claim markers at collection and outcomes at run time."""

    def __init__(self, select: set[str] | None = None) -> None:
        self.by_nodeid: dict[str, CheckOutcome] = {}
        self.collection_errors: list[str] = []
        self.select = select

    def pytest_configure(self, config):
        # Registered here too, so that a paper's own tests outside theory_checks/ (no conftest) can
        # use the marker and the hypothesis profiles the audit asks for.
        config.addinivalue_line("markers", CLAIM_MARKER)
        register_profiles()

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
                summary=first_line(getattr(func, "__doc__", "")) or item.name,
            )
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(f"{report.nodeid or 'theory_checks'}: {shorten(report.longreprtext, 500)}")

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
                rec.message = shorten(_skip_reason(report))
            else:
                rec.outcome = "failed"
                rec.message = shorten(_crash_message(report))
        elif report.failed:  # setup or teardown broke: the check itself did not run properly
            rec.outcome = "error"
            rec.message = shorten(_crash_message(report))
        elif report.skipped and report.when == "setup":
            rec.outcome = "skipped"
            rec.message = shorten(_skip_reason(report))


def _crash_message(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else report.longreprtext


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def theory_checks_dir() -> Path:
    return Path(theory_checks.__file__).resolve().parent


def run_theory_checks(hypothesis_profile: str = "ci", select: list[str] | None = None,
                      quiet: bool = False, path: Path | None = None,
                      extra_args: tuple[str, ...] = ()) -> TheoryRun:
    """Run ``theory_checks`` (or the test folder ``path``) in-process; return each claim-marked test's outcome."""
    path = Path(path) if path is not None else theory_checks_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"theory_checks folder not found at {path}")
    collector = ClaimCollector(set(select) if select else None)
    # theory_checks.evidence as a plugin: a test folder outside theory_checks (a user's paper) gets the
    # same ``evidence`` fixture; inside it, theory_checks/conftest.py's import of it takes precedence.
    args = [str(path), "-p", "no:cacheprovider", "-p", "theory_checks.evidence",
            "--hypothesis-profile", hypothesis_profile,
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
                           "theory_checks could not be collected: " + shorten("; ".join(collection_errors)), check)
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
