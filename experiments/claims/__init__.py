"""The claims registry: every row of ../shared/CLAIMS.md, with the check that settles it.

One module per paper (``nrl``, ``nd``, ``oai``, ``rn``, ``im``) defines ``PAPER`` (a ``Paper``) and
``CLAIMS`` (a tuple of ``Claim``), each claim holding its check as a typed value
(``experiments.claims.types``: ``TheoryCheck``, ``Reproduction``, ``EmpiricalCheck``). A claim's
verdict is never stored here: ``experiments.audit`` computes it from a check that ran.

To add a paper: write its module here (``PAPER`` + ``CLAIMS``), its theory checks and its models;
nothing else. Every module of this package other than ``types`` and ``profiles`` is a paper module
(``PAPER_MODULES``: the five papers in CLAIMS.md's order, then any others by name). A paper kept
outside the package (a user's own, a test's toy paper) is loaded at run time with
``default_registry().with_module(module)``.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType

from experiments.claims.types import (
    CHECK_TYPES,
    KINDS,
    PROFILES,
    VERDICTS,
    Check,
    Claim,
    Comparison,
    EmpiricalCheck,
    Paper,
    ProfileSpec,
    Region,
    Reproduction,
    TheoryCheck,
    Verdict,
)

__all__ = ["CHECK_TYPES", "KINDS", "PROFILES", "VERDICTS", "Check", "Claim", "Comparison", "EmpiricalCheck", "Paper",
           "ProfileSpec", "Region", "Reproduction", "TheoryCheck", "Verdict", "ClaimRegistry", "PAPER_MODULES",
           "default_registry", "CLAIMS", "CLAIMS_BY_ID", "PAPERS", "get_claim", "check_names", "paper_of_check"]

# Modules of this package that hold no paper; the five papers come first, in CLAIMS.md's order.
_SUPPORT_MODULES = frozenset({"types", "profiles"})
_CLAIMS_MD_ORDER = ("nrl", "nd", "oai", "rn", "im")


def _paper_modules() -> tuple[str, ...]:
    names = {m.name for m in pkgutil.iter_modules(__path__)
             if m.name not in _SUPPORT_MODULES and not m.name.startswith("_")}
    ordered = [n for n in _CLAIMS_MD_ORDER if n in names] + sorted(names - set(_CLAIMS_MD_ORDER))
    return tuple(f"{__name__}.{n}" for n in ordered)


PAPER_MODULES: tuple[str, ...] = _paper_modules()


@dataclass(frozen=True)
class ClaimRegistry:
    """Papers and their claims, in order; built from paper modules (each with ``PAPER`` and ``CLAIMS``)."""

    papers: tuple[Paper, ...]
    claims: tuple[Claim, ...]

    def __post_init__(self):
        seen: set[str] = set()
        paper_ids = {p.id for p in self.papers}
        for c in self.claims:
            if c.id in seen:
                raise ValueError(f"claim id {c.id!r} is registered twice")
            seen.add(c.id)
            if c.paper not in paper_ids:
                raise ValueError(f"claim {c.id}: its paper {c.paper!r} is not registered (papers: "
                                 f"{', '.join(sorted(paper_ids))})")

    @classmethod
    def from_modules(cls, modules) -> "ClaimRegistry":
        papers, claims = [], []
        for mod in modules:
            mod = importlib.import_module(mod) if isinstance(mod, str) else mod
            paper, mine = _paper_and_claims(mod)
            papers.append(paper)
            claims.extend(mine)
        return cls(tuple(papers), tuple(claims))

    def with_module(self, module: ModuleType | str) -> "ClaimRegistry":
        """This registry plus the paper defined by ``module`` (a module object or an importable name)."""
        mod = importlib.import_module(module) if isinstance(module, str) else module
        paper, mine = _paper_and_claims(mod)
        if paper.id in self.paper_titles:
            raise ValueError(f"paper {paper.id!r} is already registered (from {getattr(mod, '__name__', mod)})")
        return ClaimRegistry(self.papers + (paper,), self.claims + tuple(mine))

    @property
    def paper_titles(self) -> dict[str, str]:
        return {p.id: p.title for p in self.papers}

    @property
    def by_id(self) -> dict[str, Claim]:
        return {c.id: c for c in self.claims}

    def get(self, claim_id: str) -> Claim:
        try:
            return self.by_id[claim_id]
        except KeyError:
            raise KeyError(f"unknown claim id {claim_id!r}; known ids: {', '.join(self.by_id)}") from None

    def of_type(self, check_type: type) -> list[Claim]:
        return [c for c in self.claims if isinstance(c.check, check_type)]

    def check_names(self, paper: str) -> set[str]:
        """Names of the training checks (and their sweeps) that settle ``paper``'s empirical claims."""
        return {c.check.name for c in self.of_type(EmpiricalCheck) if c.paper == paper}

    def paper_of_check(self, name: str) -> str | None:
        """The paper whose training check is ``name`` or ``<prefix>-name`` (the audit's sweeps are
        ``audit-<profile>-<check>``); None if no registered check has that name."""
        low = name.lower()
        for c in self.of_type(EmpiricalCheck):
            for sweep_name in {c.check.name} | {ps.sweep["name"] for ps in (c.check.quick, c.check.full) if ps.sweep}:
                if low == sweep_name or low.endswith("-" + c.check.name):
                    return c.paper
        return None


def _paper_and_claims(mod: ModuleType) -> tuple[Paper, tuple[Claim, ...]]:
    name = getattr(mod, "__name__", repr(mod))
    paper, claims = getattr(mod, "PAPER", None), getattr(mod, "CLAIMS", None)
    if not isinstance(paper, Paper):
        raise TypeError(f"paper module {name} must define PAPER = Paper(id, title); got {type(paper).__name__}")
    if not isinstance(claims, (tuple, list)) or not all(isinstance(c, Claim) for c in claims):
        raise TypeError(f"paper module {name} must define CLAIMS as a tuple of Claim")
    wrong = [c.id for c in claims if c.paper != paper.id]
    if wrong:
        raise ValueError(f"paper module {name}: claim ids {', '.join(wrong)} do not start with '{paper.id}-'")
    return paper, tuple(claims)


_DEFAULT: list[ClaimRegistry] = []


def default_registry() -> ClaimRegistry:
    """The five papers of ../shared/CLAIMS.md (built once)."""
    if not _DEFAULT:
        _DEFAULT.append(ClaimRegistry.from_modules(PAPER_MODULES))
    return _DEFAULT[0]


CLAIMS: tuple[Claim, ...] = default_registry().claims
CLAIMS_BY_ID: dict[str, Claim] = default_registry().by_id
PAPERS: dict[str, str] = default_registry().paper_titles


def get_claim(claim_id: str) -> Claim:
    return default_registry().get(claim_id)


def check_names(paper: str) -> set[str]:
    """Names of the training checks that settle ``paper``'s empirical claims (default registry)."""
    return default_registry().check_names(paper)


def paper_of_check(name: str) -> str | None:
    """The paper whose training check (or the audit's sweep of it) is called ``name``; None if none."""
    return default_registry().paper_of_check(name)
