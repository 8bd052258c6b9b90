"""The one statistics module of the audit: paired seeds, the t interval, the verdict rule, stability.

Used by the training comparisons (``experiments.audit.empirical``), by a user's block audit
(``experiments.audit.block``: the same ``judge_values``) and by the reproductions
(``experiments.reproduce.oai_table2``), so a "holds" means the same everywhere.

**Verdict rule.** For a comparison of ``block`` with ``baseline``, take the final test accuracy of
each finished seed of both (same seeds, same sweep) and the paired differences
``d_s = acc_block(s) - acc_baseline(s)`` in percentage points. Report their mean, sample std and
the two-sided 95% t interval ``mean +- t_{0.975, n-1} std / sqrt(n)`` (``scipy.stats.t``). Each
comparison has a *region* of effects that agree with the claim (``Region``), e.g. ``[-1, +inf)``
for "matches with fewer parameters" (the claim is parameter efficiency: a block that is better
also agrees), ``(10, +inf)`` for "ahead by more than 10 points", ``(-inf, 0)`` for "below". Then:

- ``holds``        the whole CI lies inside the region;
- ``fails``        the whole CI lies outside it;
- ``inconclusive`` the CI straddles a boundary (noise larger than the margin), or n < 2 pairs.

**Stability under float noise.** A verdict that another machine could flip is no verdict. CPU
kernels, thread counts and summation orders change a run's rounding, and training amplifies it
(two runs of one config, 1 vs 2 threads: 42% vs 20% test accuracy in one probe). So the quick
profile trains a *twin* of each model's first seed (label ``<label>+ulp``) whose initial weights
differ by a rounding-size change (``TrainConfig.perturb_ulps = 1``: each scaled by 1 +- 2^-23). The largest change the twins show in a comparison's value (the paired difference, or
the accuracy), floored at one test image, is the per-seed *float-noise spread* ``delta``. If the
seeds' values each moved by about ``delta`` independently, their mean would move by about
``delta / sqrt(n)``; the comparison is re-judged with the CI shifted by ``+-2 delta / sqrt(n)``
(two such standard errors), and a status that either shift changes becomes ``inconclusive``
(unstable), with the reason. Profiles without twins (the GPU's full profile) are judged as they
are, and their evidence says that no noise probe ran.

A claim with several comparisons holds when all hold, fails when any fails, and is inconclusive
otherwise. A one-sample comparison (``baseline=None``, IM-cifar's "trains well") judges the CI of
the block's own accuracy the same way. With 2 seeds ``t_{0.975, 1} = 12.7``: only large effects
(NRL-linear's ~49 points) can be decided; that is the honest consequence of a 10-minute budget.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from analysis.validation import check_real
from experiments.claims.types import Region

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedStats:
    """Mean, sample std and two-sided t confidence interval of paired differences (see the module docstring)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE

    def text(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} pts (n = {self.n}: no CI)"
        return (f"{self.mean:+.2f} pts, {100 * self.confidence:g}% CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}] "
                f"(sd {self.std:.2f}, n = {self.n} seeds)")


def paired_stats(differences, confidence: float = CONFIDENCE) -> PairedStats:
    """Statistics of paired differences ``block - baseline`` (one per seed), module docstring."""
    confidence = check_real("confidence", confidence, min_value=0.0, max_value=1.0, include_min=False,
                            include_max=False)
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if d.size == 0:
        raise ValueError("differences is empty; need one paired difference per seed")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"differences must be finite; got {d.tolist()}")
    mean = float(d.mean())
    if d.size < 2:
        return PairedStats(1, mean, math.nan, math.nan, math.nan, confidence)
    std = float(d.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, d.size - 1)) * std / math.sqrt(d.size)
    return PairedStats(int(d.size), mean, std, mean - half, mean + half, confidence)


def judge(st: PairedStats, region: Region) -> str:
    """``holds`` / ``fails`` / ``inconclusive`` for a CI against the claim's region (see the module docstring)."""
    if st.n < 2:
        return "inconclusive"
    if region.lo < st.ci_low and st.ci_high < region.hi:
        return "holds"
    if st.ci_high <= region.lo or st.ci_low >= region.hi:
        return "fails"
    return "inconclusive"


def combine_statuses(statuses) -> str:
    """All hold: holds; any fails: fails; otherwise inconclusive."""
    statuses = list(statuses)
    if not statuses:
        raise ValueError("no comparison statuses to combine")
    if "fails" in statuses:
        return "fails"
    return "holds" if all(s == "holds" for s in statuses) else "inconclusive"


PROBE_SUFFIX = "+ulp"  # label of a float-noise twin: "<label>+ulp"
# The CI is shifted by this many standard errors of the mean's float noise (delta / sqrt(n)) each
# way: two, as for a 95% band of a mean of independent per-seed errors of size delta.
STABILITY_SE = 2.0


@dataclass(frozen=True)
class Stability:
    """A comparison re-judged with its CI shifted by ``+-shift`` (module docstring, "Stability")."""

    spread: float  # delta: the float-noise spread of one seed's value (pts)
    shift: float  # STABILITY_SE * delta / sqrt(n)
    status_down: str  # the status with the CI shifted down by ``shift``
    status_up: str
    stable: bool

    def text(self) -> str:
        if self.stable:
            return (f"stable under float noise (twin spread {self.spread:.2f} pts; CI shifted by "
                    f"+-{self.shift:.2f} keeps the status)")
        return (f"unstable under float noise: twin spread {self.spread:.2f} pts per seed, and a CI shifted by "
                f"-{self.shift:.2f} / +{self.shift:.2f} pts gives {self.status_down} / {self.status_up}")


def judge_stability(st: PairedStats, region: Region, spread: float) -> Stability:
    """Re-judge ``st`` with its CI moved by ``+-STABILITY_SE * spread / sqrt(n)`` (see the module docstring)."""
    spread = check_real("spread", spread, min_value=0.0)
    status = judge(st, region)
    if st.n < 2:
        return Stability(spread, math.nan, status, status, True)
    shift = STABILITY_SE * spread / math.sqrt(st.n)
    moved = [judge(dataclasses.replace(st, mean=st.mean + d, ci_low=st.ci_low + d, ci_high=st.ci_high + d), region)
             for d in (-shift, shift)]
    return Stability(spread, shift, moved[0], moved[1], moved[0] == moved[1] == status)


@dataclass(frozen=True)
class Judgement:
    """One comparison judged: its statistics, status (after the stability rule) and stability (or None)."""

    stats: PairedStats
    status: str
    stability: Stability | None


def judge_values(values, region: Region, spread: float | None = None) -> Judgement:
    """The verdict rule of every comparison, a paper's or a user's block's (module docstring).

    ``values``: the per-seed effects (paired differences, ratios or one model's accuracy);
    ``spread``: their float-noise spread from the twins (``None``: no twin ran, judged as it is).
    A status that the CI shifted by ``+-STABILITY_SE * spread / sqrt(n)`` would change is ``inconclusive``.
    """
    st = paired_stats(values)
    status = judge(st, region)
    stab = judge_stability(st, region, spread) if spread is not None else None
    if stab is not None and not stab.stable:
        status = "inconclusive"
    return Judgement(st, status, stab)
