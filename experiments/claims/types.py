"""The types that wire a claim to the check that settles it.

A ``Claim`` holds its check as a typed value, never as a string to parse:

- ``TheoryCheck``: the pytest tests marked ``@pytest.mark.claim(ID)`` (in ``theory_checks/``, or in
  the folder ``tests`` names: a user's own paper brings its own tests);
- ``Reproduction``: a numeric reproduction of a paper's table (``experiments.reproduce``, by name);
- ``EmpiricalCheck``: block-vs-baseline training over paired seeds, one ``ProfileSpec`` per profile,
  each with its ``Comparison``s and the ``Region`` of effects that agree with the claim.

A ``Comparison`` names one of the *generic checks* (``GENERIC_CHECKS``): the same catalogue a user's
spec file uses for their own block (``experiments.audit.block``), so a paper's "BN-ResNEst at most
0.5 pt below ResNet" and a user's ``check = "accuracy", region = [-0.5, "inf"]`` are one claim
said one way, judged by one rule (``experiments.audit.stats.judge_values``).

The audit (``experiments.audit``) dispatches on these types; the statistics and the verdict rule
live in ``experiments.audit.stats``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Union

from analysis.validation import check_choice

VERDICTS = ("holds", "fails", "inconclusive", "not run")
KINDS = ("theorem", "structural", "numeric", "empirical", "structural + theorem", "empirical (numerics)",
         "empirical (landscape)", "theorem (counterexample)", "theorem (construction on small n)",
         "theorem (numeric check on quadratics)")
# Audit profiles: "quick" (CPU analogues, minutes, reduced reproductions) and "full" (paper scale, GPU).
PROFILES = ("quick", "full")


@dataclass(frozen=True)
class Paper:
    """A source paper: its short id (the claim ids' prefix) and its citation."""

    id: str
    title: str


@dataclass(frozen=True)
class TheoryCheck:
    """Settled by the tests marked ``@pytest.mark.claim(<claim id>)``.

    ``tests``: the folder (or file) holding them; ``None`` is the project's ``theory_checks/``.
    """

    tests: Path | str | None = None

    def label(self) -> str:
        return "theory" if self.tests is None else f"theory ({self.tests})"


@dataclass(frozen=True)
class Reproduction:
    """Settled by ``blockaudit reproduce NAME`` (``experiments.reproduce.get_reproduction(name)``)."""

    name: str

    def label(self) -> str:
        return f"reproduce:{self.name}"


# The generic checks: name -> (what it measures, unit of its effect, how it is measured). "trained":
# from the runs' final test accuracy (any sweep: a paper's or a user's block audit); "probe": measured
# on the trained (or initial) weights of a block audit's runs (``experiments.audit.block``).
GENERIC_CHECKS = {
    "accuracy": ("final test accuracy, block - baseline", "pts", "trained"),
    "linear_capacity": ("test accuracy without activations, block - baseline (an affine map)", "pts", "trained"),
    "params": ("trainable parameters, block / baseline", "x", "probe"),
    "flops": ("forward FLOPs per image, block / baseline", "x", "probe"),
    "throughput": ("training images/s at initialisation, block / baseline", "x", "probe"),
    "fp16_headroom": ("float16 headroom (65504 / peak activation) at the trained weights, block / baseline", "x",
                      "probe"),
    "grad_spread": ("max / min per-block gradient norm at initialisation, block / baseline", "x", "probe"),
    "hessian_top": ("largest Hessian eigenvalue of the test loss at the trained weights, block / baseline", "x",
                    "probe"),
    "hessian_trace": ("Hessian trace of the test loss at the trained weights, block / baseline", "x", "probe"),
    "sharpness": ("loss increase at +-0.25 along a filter-normalised direction, block / baseline", "x", "probe"),
    "risk_gap": ("ResNEst risk gap eps = R - A* (train, cross-entropy), block - baseline", "nats", "probe"),
}
TRAINED_CHECKS = tuple(k for k, v in GENERIC_CHECKS.items() if v[2] == "trained")


@dataclass(frozen=True)
class Region:
    """The effects (percentage points) that agree with a claim: ``lo < d < hi`` (inf for open ends)."""

    lo: float = -math.inf
    hi: float = math.inf

    def __post_init__(self):
        if not self.lo < self.hi:
            raise ValueError(f"region needs lo < hi; got [{self.lo}, {self.hi}]")

    def text(self) -> str:
        f = lambda v: ("+inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:+g}"  # noqa: E731
        return f"({f(self.lo)}, {f(self.hi)}) pts"


@dataclass(frozen=True)
class Comparison:
    """``block`` vs ``baseline`` (sweep labels; ``baseline=None``: the block's own accuracy in %) on a
    generic check (``GENERIC_CHECKS``; a paper's sweep gives the "trained" ones)."""

    block: str
    baseline: str | None
    region: Region
    paper: str  # the paper's number beside ours, e.g. "+0.0 pts (0.945 vs 0.945, Table 1)"
    meaning: str  # what the region says, e.g. "Newton-ResNet no more than 1 pt below ResNet18"
    check: str = "accuracy"

    def __post_init__(self):
        check_choice("check", self.check, TRAINED_CHECKS)

    @property
    def name(self) -> str:
        return self.block if self.baseline is None else f"{self.block} - {self.baseline}"


@dataclass(frozen=True)
class ProfileSpec:
    """What one profile of a check runs: a sweep (``SweepSpec.from_dict`` form) and its comparisons.

    ``sweep`` is None when the profile runs nothing; ``reason`` then says why and what it needs.
    ``setting`` labels the run in the verdict ("analogue on digits ..."). ``artefacts``: extra
    reports made from trained checkpoints (``"risk_gap"``, ``"landscape"``, ``"fp16_peaks"``).
    """

    sweep: dict | None
    comparisons: tuple[Comparison, ...] = ()
    setting: str = ""
    reason: str = ""
    artefacts: tuple[str, ...] = ()
    workers_hint: int = 1
    # Seeds whose runs get a float-noise twin (experiments.audit.stats, "Stability"); () for none.
    probe_seeds: tuple[int, ...] = ()

    def __post_init__(self):
        if self.sweep is None and not self.reason:
            raise ValueError("a profile that runs nothing must give a reason")


@dataclass(frozen=True)
class EmpiricalCheck:
    """A training comparison of block vs baseline over paired seeds (``experiments.audit.empirical``)."""

    name: str
    quick: ProfileSpec
    full: ProfileSpec
    qualitative: bool = False  # the verdict stays "inconclusive": the claim has no measurable threshold
    # A check whose outcome is not an accuracy comparison (NRL-fp16: did a run overflow?): called as
    # judge_fn(spec, store) -> (status, text, details) in place of the comparisons.
    judge_fn: Callable | None = None
    # The full profile's dataset: "cifar10" (from --data) or "cifar100" (torchvision's
    # cifar-100-python found beside --data or in the data folders).
    full_data: str = "cifar10"

    def spec(self, profile: str) -> ProfileSpec:
        check_choice("profile", profile, PROFILES)
        return self.quick if profile == "quick" else self.full

    def label(self) -> str:
        return f"empirical:{self.name}"


Check = Union[TheoryCheck, Reproduction, EmpiricalCheck]
CHECK_TYPES = (TheoryCheck, Reproduction, EmpiricalCheck)


@dataclass(frozen=True)
class Claim:
    id: str
    where: str
    statement: str
    kind: str
    check: Check
    tolerance: str = ""
    paper_figure: str = "-"

    def __post_init__(self):
        if not isinstance(self.check, CHECK_TYPES):
            raise TypeError(f"claim {self.id}: check must be a TheoryCheck, Reproduction or EmpiricalCheck; "
                            f"got {type(self.check).__name__}")
        if "-" not in self.id:
            raise ValueError(f"claim id {self.id!r} must be '<paper>-<name>' (e.g. 'RN-T1')")

    @property
    def paper(self) -> str:
        return self.id.split("-", 1)[0]

    @property
    def check_label(self) -> str:
        """What settles the claim, for tables ("theory", "reproduce:nd-table2", "empirical:nrl-params")."""
        return self.check.label()


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one claim: status, the evidence, and the check that produced it."""

    claim_id: str
    status: str
    evidence: str
    check: str
    runs: tuple[str, ...] = field(default_factory=tuple)
    # Empirical checks: profile, setting, schedule, per-comparison statistics (effect, CI, n, region).
    details: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.status not in VERDICTS:
            raise ValueError(f"verdict status must be one of {VERDICTS}; got {self.status!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["runs"] = list(self.runs)
        if not d["details"]:
            del d["details"]
        return d
