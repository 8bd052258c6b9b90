"""Empirical claims: block-vs-baseline training comparisons, judged on paired seeds.

Every claim of ``experiments.claims`` settled by ``"empirical:NAME"`` has an ``EmpiricalCheck``
here with two profiles:

- ``quick``: a CPU *analogue* (scikit-learn digits at their native 8x8, ``load_digits(size=8)``,
  small widths, a few epochs, 5 seeds). It compares the same block with the same baseline as the
  paper, but it is not the paper's setting, and every verdict says so;
- ``full``: CIFAR-10 (``--data PATH``: ``cifar10-jpeg.zip`` / an extracted JPEG tree -> dataset
  ``cifar10_jpeg``, the torchvision ``cifar-10-batches-py`` folder -> ``cifar10``), a GPU, bf16
  autocast and channels_last, augmentation, short one-cycle schedules (stated in the verdict).

Training goes through ``experiments.runs.sweep`` (one sweep per check, runs in ``STORE/runs/<run_id>``);
finished runs are reused and never retrained, so a verdict can be recomputed from a store whose
runs lack ``checkpoint.pt`` (``config.json``, ``metrics.csv``, ``result.json`` suffice).

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from analysis.validation import check_choice, check_int, check_real

__all__ = ["PROFILES", "Region", "Comparison", "ProfileSpec", "EmpiricalCheck", "PairedStats", "CHECKS",
           "get_check", "paired_stats", "judge", "combine_statuses", "full_dataset", "cifar100_dataset",
           "build_sweep", "schedule_text", "runs_made_on", "train_checks", "judge_stability", "Stability",
           "make_artefacts", "landscape_proxy", "judge_fp16", "write_fp16_peaks",
           "EmpiricalOutcome", "run_empirical", "verdict_from_store", "QUICK_DATASET"]

PROFILES = ("quick", "full")
CONFIDENCE = 0.95
# Digits at their native 8x8: every pixel of the 32x32 copy is a 4x4 patch, so nothing is lost and
# a run costs 16x less (the CIFAR nets pool globally and accept any size >= 8).
QUICK_DATASET = {"dataset": "digits", "dataset_options": {"size": 8}}


# --- regions, statistics, rules -----------------------------------------------------------------

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
    """``block`` vs ``baseline`` (sweep labels; ``baseline=None``: the block's own accuracy in %)."""

    block: str
    baseline: str | None
    region: Region
    paper: str  # the paper's number beside ours, e.g. "+0.0 pts (0.945 vs 0.945, Table 1)"
    meaning: str  # what the region says, e.g. "Newton-ResNet no more than 1 pt below ResNet18"

    @property
    def name(self) -> str:
        return self.block if self.baseline is None else f"{self.block} - {self.baseline}"


@dataclass(frozen=True)
class ProfileSpec:
    """What one profile of a check runs: a sweep (``SweepSpec.from_dict`` form) and its comparisons.

    ``sweep`` is None when the profile runs nothing; ``reason`` then says why and what it needs.
    ``setting`` labels the run in the verdict ("analogue on digits ..."). ``artefacts``: extra
    reports made from trained checkpoints (``"risk_gap"``, ``"landscape"``).
    """

    sweep: dict | None
    comparisons: tuple[Comparison, ...] = ()
    setting: str = ""
    reason: str = ""
    artefacts: tuple[str, ...] = ()
    workers_hint: int = 1
    # Seeds whose runs get a float-noise twin (module docstring, "Stability"); () for none.
    probe_seeds: tuple[int, ...] = ()

    def __post_init__(self):
        if self.sweep is None and not self.reason:
            raise ValueError("a profile that runs nothing must give a reason")


@dataclass(frozen=True)
class EmpiricalCheck:
    name: str
    claim_id: str
    quick: ProfileSpec
    full: ProfileSpec
    qualitative: bool = False  # the verdict stays "inconclusive": the claim has no measurable threshold
    # A check whose outcome is not an accuracy comparison (NRL-fp16: did a run overflow?): called as
    # judge_fn(spec, store) -> (status, text, details) in place of the comparisons.
    judge_fn: Callable | None = None
    # The full profile's dataset: "cifar10" (from --data, ``full_dataset``) or "cifar100" (torchvision's
    # cifar-100-python found beside --data or in the data folders, ``cifar100_dataset``).
    full_data: str = "cifar10"

    def spec(self, profile: str) -> ProfileSpec:
        check_choice("profile", profile, PROFILES)
        return self.quick if profile == "quick" else self.full


@dataclass(frozen=True)
class PairedStats:
    """Mean, sample std and two-sided t confidence interval of paired differences (module docstring)."""

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
    from scipy import stats

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
    half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1)) * std / math.sqrt(d.size)
    return PairedStats(int(d.size), mean, std, mean - half, mean + half, confidence)


def judge(st: PairedStats, region: Region) -> str:
    """``holds`` / ``fails`` / ``inconclusive`` for a CI against the claim's region (module docstring)."""
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
    """Re-judge ``st`` with its CI moved by ``+-STABILITY_SE * spread / sqrt(n)`` (module docstring)."""
    spread = check_real("spread", spread, min_value=0.0)
    status = judge(st, region)
    if st.n < 2:
        return Stability(spread, math.nan, status, status, True)
    shift = STABILITY_SE * spread / math.sqrt(st.n)
    moved = [judge(dataclasses.replace(st, mean=st.mean + d, ci_low=st.ci_low + d, ci_high=st.ci_high + d), region)
             for d in (-shift, shift)]
    return Stability(spread, shift, moved[0], moved[1], moved[0] == moved[1] == status)


def twin_models(models: list[dict], probe_seeds) -> list[dict]:
    """Each model again as ``<label>+ulp``, on ``probe_seeds`` only, with ``perturb_ulps = 1``."""
    return [{**m, "label": m["label"] + PROBE_SUFFIX, "base": {**m.get("base", {}), "perturb_ulps": 1},
             "seeds": list(probe_seeds)} for m in models]


# --- the checks --------------------------------------------------------------------------------

_QUICK_BASE = {**QUICK_DATASET, "epochs": 6, "batch_size": 64, "lr": 0.05, "schedule": "onecycle",
               "weight_decay": 5e-4, "augment": False}
# Five seeds: with three, the t interval's half-width is 2.48 sd, which left most analogues
# undecided; five halve it (1.24 sd) for ~2 more CPU minutes of the quick audit.
_QUICK_SEEDS = [0, 1, 2, 3, 4]
_QUICK_SETTING = "analogue on digits (native 8x8), width {width}, {epochs} epochs, {seeds} seeds; not the paper's CIFAR setting"

# Full profile: CIFAR-10 with augmentation, batch 256 (lr 0.2: the papers' 0.1 at batch 128 scaled
# linearly), one-cycle schedule (linear warm-up over 20% of the steps, linear decay to 0: the usual
# short-schedule recipe), Nesterov SGD, wd 5e-4, bf16 autocast and channels_last on the GPU. The
# dataset is filled in by build_sweep from --data.
_FULL_BASE = {"batch_size": 256, "lr": 0.2, "schedule": "onecycle", "weight_decay": 5e-4, "augment": True,
              "precision": "bf16", "channels_last": True}


def _m(label: str, name: str, **options) -> dict:
    return {"label": label, "name": name, "options": options}


def _quick(name: str, models: list[dict], comparisons, width: int, seeds=_QUICK_SEEDS, epochs: int = 6,
           artefacts=(), **base) -> ProfileSpec:
    sweep = {"name": f"audit-quick-{name}", "seeds": list(seeds), "base": {**_QUICK_BASE, "epochs": epochs, **base},
             "models": models}
    setting = _QUICK_SETTING.format(width=width, epochs=epochs, seeds=len(seeds))
    return ProfileSpec(sweep, tuple(comparisons), setting, artefacts=tuple(artefacts), probe_seeds=(seeds[0],))


def _full(name: str, models: list[dict], comparisons, seeds, epochs: int, note: str = "", artefacts=(),
          workers_hint: int = 2, **base) -> ProfileSpec:
    sweep = {"name": f"audit-full-{name}", "seeds": list(seeds), "base": {**_FULL_BASE, "epochs": epochs, **base},
             "models": models}
    setting = f"{{dataset}}, {epochs} epochs (paper: 160-300), {len(seeds)} seeds" + (f"; {note}" if note else "")
    return ProfileSpec(sweep, tuple(comparisons), setting, artefacts=tuple(artefacts), workers_hint=workers_hint)


_PARAMS_CMP = Comparison("newton_2211", "resnet18", Region(-1.0), "+0.0 pts (0.945 vs 0.945; 6.0M vs 11.2M params, "
                         "Table 1)", "Newton-ResNet [2,2,1,1] at most 1 pt below ResNet18 (fewer parameters, same "
                         "accuracy; being better also agrees)")
_NRL_PARAMS_MODELS_Q = [_m("resnet18", "resnet18", width=8), _m("newton_2211", "newton_resnet_2211", width=8)]
_NRL_PARAMS_MODELS_F = [_m("resnet18", "resnet18"), _m("newton_2211", "newton_resnet_2211")]



# NRL-fp16: the same Newton-ResNet [2,2,1,1] with and without the tanh after N2, trained in float16
# autocast (GradScaler); a non-finite loss ends a run as finished (on_nonfinite="stop") with the step
# and the first layer whose output overflowed, which is the outcome being measured.
_FP16_BASE = {"precision": "fp16", "on_nonfinite": "stop"}
_FP16_MODELS_Q = [_m("newton_plain", "newton_resnet_2211", width=8),
                  _m("newton_tanh", "newton_resnet_2211", width=8, second_order_tanh=True)]
# The full profile adds the paper's own float16 setting (ImageNet: batch 1024, lr 0.4, where it saw
# the overflow) beside the batch-256 / lr-0.1 pair.
_PAPER_FP16 = {"batch_size": 1024, "lr": 0.4}
_FP16_MODELS_F = [_m("newton_plain", "newton_resnet_2211"),
                  _m("newton_tanh", "newton_resnet_2211", second_order_tanh=True),
                  {**_m("newton_plain_b1024", "newton_resnet_2211"), "base": dict(_PAPER_FP16)},
                  {**_m("newton_tanh_b1024", "newton_resnet_2211", second_order_tanh=True), "base": dict(_PAPER_FP16)}]


def _rn_models(lr: float, **width) -> list[dict]:
    # The plain ResNEst trains at a tenth of the others' learning rate (the authors' code: 0.01 vs 0.1).
    resnest = {**_m("resnest", "resnest20", **width), "base": {"lr": lr / 10}}
    return [_m("standard", "resnet20", **width), resnest, _m("bn_resnest", "bn_resnest20", **width),
            _m("a_resnest", "a_resnest20", **width)]


_RN_CMPS = (
    Comparison("resnest", "standard", Region(hi=0.0), "-1.58 pts (91.02 vs 92.60, ResNet-20)",
               "plain ResNEst below the standard ResNet"),
    Comparison("bn_resnest", "standard", Region(-0.5), "-0.04 pts (92.56 vs 92.60)",
               "BN-ResNEst at most 0.5 pt below the standard ResNet"),
    Comparison("a_resnest", "standard", Region(-0.5), "-0.13 pts (92.47 vs 92.60)",
               "A-ResNEst at most 0.5 pt below the standard ResNet"),
)
_ND_CMPS = (
    Comparison("cgnet_shallow", "resnet_shallow", Region(hi=0.0), "-0.30 pts (Newton-CGNet-16 7.29% vs ResNet-32 "
               "6.99% error, N3 = 3, Table 3)", "with few CG blocks (N3 <= 5) the Newton-CGNet is worse"),
    Comparison("cgnet_deep", "resnet_deep", Region(lo=0.0), "+0.38 pts (Newton-CGNet-56 5.35% vs ResNet-110 5.73% "
               "error, N3 = 9)", "with many CG blocks (N3 >= 9) the Newton-CGNet is better"),
)

CHECKS: tuple[EmpiricalCheck, ...] = (
    EmpiricalCheck(
        "nrl-params", "NRL-params",
        quick=_quick("nrl-params", _NRL_PARAMS_MODELS_Q, [_PARAMS_CMP], width=8),
        full=_full("nrl-params", _NRL_PARAMS_MODELS_F, [_PARAMS_CMP], seeds=[0, 1, 2], epochs=10,
                   note="only the [2,2,1,1] vs ResNet18 pair (not [3,3,2,2] vs ResNet34)"),
    ),
    EmpiricalCheck(
        "nrl-linear", "NRL-linear",
        quick=_quick("nrl-linear", [_m("resnet18_linear", "resnet18", width=8, activations=False),
                                    _m("newton_1111_linear", "newton_resnet_1111", width=8, activations=False)],
                     [Comparison("newton_1111_linear", "resnet18_linear", Region(lo=0.0),
                                 "+48.5 pts (0.876 vs 0.391, Table 2)",
                                 "on digits a linear classifier already reaches ~96%, so the analogue asks only "
                                 "that the linear Newton-ResNet be ahead (> 0), not by 10 pts")], width=8),
        full=_full("nrl-linear", [_m("resnet18_linear", "resnet18", activations=False),
                                  _m("newton_1111_linear", "newton_resnet_1111", activations=False)],
                   [Comparison("newton_1111_linear", "resnet18_linear", Region(lo=10.0),
                               "+48.5 pts (0.876 vs 0.391, Table 2)",
                               "linear Newton-ResNet [1,1,1,1] ahead of linear ResNet18 by more than 10 pts")],
                   seeds=[0, 1], epochs=8, note="every activation removed (activations=False); [1,1,1,1] only"),
    ),
    EmpiricalCheck(
        "nrl-c100", "NRL-c100",
        quick=ProfileSpec(None, reason="no CPU analogue: the claim is about CIFAR-100's 100 classes (digits has "
                                       "10); the NRL-params and NRL-linear analogues cover the same comparisons"),
        full=_full("nrl-c100", [_m("resnet34", "resnet34"), _m("newton_3432", "newton_resnet_3432"),
                                _m("resnet18_linear", "resnet18", activations=False),
                                _m("newton_1111_linear", "newton_resnet_1111", activations=False)],
                   [Comparison("newton_3432", "resnet34", Region(-1.0), "+0.0 pts (0.769 vs 0.769; 14.7M vs 21.3M "
                               "params, Table 4)", "Newton-ResNet [3,4,3,2] at most 1 pt below ResNet34 (fewer "
                               "parameters, same accuracy; being better also agrees)"),
                    Comparison("newton_1111_linear", "resnet18_linear", Region(lo=10.0),
                               "+45.2 pts (0.620 vs 0.168, Table 5)",
                               "linear Newton-ResNet [1,1,1,1] ahead of linear ResNet18 by more than 10 pts")],
                   seeds=[0, 1], epochs=10,
                   note="CIFAR-100 from torchvision's cifar-100-python; outside the 10-minute budget (ResNet34 and "
                        "Newton-ResNet [3,4,3,2] at full width: ~20 GPU minutes)"),
        full_data="cifar100",
    ),
    EmpiricalCheck(
        "nrl-fp16", "NRL-fp16",
        # Two seeds of 3 epochs (was 3 of 4): this CPU has no native float16, so each float16 step
        # costs ~35x a float32 one, and at this scale no run came near overflow (largest |N1(s)*f|
        # 0.04% of 65504): the analogue reports headroom, which fewer runs measure as well.
        quick=ProfileSpec(
            {"name": "audit-quick-nrl-fp16", "seeds": [0, 1],
             "base": {**_QUICK_BASE, "epochs": 3, **_FP16_BASE}, "models": _FP16_MODELS_Q},
            (), _QUICK_SETTING.format(width=8, epochs=3, seeds=2) + "; float16 autocast on the CPU",
            artefacts=("fp16_peaks",)),
        full=_full("nrl-fp16", _FP16_MODELS_F, [], seeds=[0, 1, 2], epochs=10, artefacts=("fp16_peaks",),
                   note="float16 autocast (not bf16) with loss scaling; batch 256 at the paper's lr for it (0.1), "
                        "and the paper's own batch 1024 / lr 0.4 (the _b1024 pair)",
                   **{**_FP16_BASE, "lr": 0.1}),
        judge_fn=lambda spec, store: judge_fp16(spec, store),
    ),
    EmpiricalCheck(
        "nrl-contour", "NRL-contour", qualitative=True,
        quick=_quick("nrl-params", _NRL_PARAMS_MODELS_Q, [], width=8, artefacts=("landscape",)),
        full=_full("nrl-params", _NRL_PARAMS_MODELS_F, [], seeds=[0, 1, 2], epochs=10, artefacts=("landscape",),
                   note="only the [2,2,1,1] vs ResNet18 pair (not [3,3,2,2] vs ResNet34)"),
    ),
    EmpiricalCheck(
        "nd-depth", "ND-depth",
        quick=_quick("nd-depth", [_m("cgnet_shallow", "newton_cgnet16", width=4),
                                  _m("resnet_shallow", "resnet32", width=4),
                                  _m("cgnet_deep", "newton_cgnet56", width=4),
                                  _m("resnet_deep", "resnet110", width=4)], _ND_CMPS, width=4, epochs=4),
        full=_full("nd-depth", [_m("cgnet_shallow", "newton_cgnet16"), _m("resnet_shallow", "resnet32"),
                                _m("cgnet_deep", "newton_cgnet56"), _m("resnet_deep", "resnet110")],
                   _ND_CMPS, seeds=[0, 1], epochs=6, note="pairs N3 = 3 (Newton-CGNet-16 vs ResNet-32) and N3 = 9 "
                                                          "(Newton-CGNet-56 vs ResNet-110)"),
    ),
    EmpiricalCheck(
        "nd-best", "ND-best",
        quick=ProfileSpec(None, reason="no CPU analogue within the quick budget: the claim is about 82- and "
                                       "164-layer nets (one epoch of either at width 4 on 8x8 digits takes "
                                       "~10 s here); the ND-depth analogue covers the depth trend"),
        full=_full("nd-best", [_m("cgnet82", "newton_cgnet82"), _m("resnet164", "resnet164")],
                   [Comparison("cgnet82", "resnet164", Region(lo=0.0), "+0.67 pts (4.90% vs 5.57% error, Table 4)",
                               "Newton-CGNet-82 better than ResNet-164 (same 2.6M parameters)")],
                   seeds=[0, 1], epochs=6, note="outside the 10-minute budget (~4 GPU minutes more)"),
    ),
    EmpiricalCheck(
        "oai-cifar", "OAI-cifar",
        quick=_quick("oai-cifar", [_m("hbnet9", "hbnet9", width=4), _m("resnet56", "postact_resnet56", width=4)],
                     [Comparison("hbnet9", "resnet56", Region(lo=0.0), "+0.02 pts on C10+ (5.04% vs 5.06% error, "
                                 "n = 18), +0.51 on C10", "HB-Net better than the post-activation ResNet of the "
                                 "same depth")], width=4, epochs=4),
        full=_full("oai-cifar", [_m("hbnet9", "hbnet9"), _m("resnet56", "postact_resnet56")],
                   [Comparison("hbnet9", "resnet56", Region(lo=0.0), "+0.02 pts on C10+ (5.04% vs 5.06% error, "
                               "n = 18, Table 4)", "HB-Net better than the post-activation ResNet of the same "
                               "depth")], seeds=[0, 1], epochs=6,
                   note="C10+ (augmented); n = 9 (HB-Net-9 vs ResNet-56), not the paper's n = 18, to fit the "
                        "budget; AGD-Net vs DenseNet not run"),
    ),
    EmpiricalCheck(
        "rn-cifar", "RN-cifar",
        quick=_quick("rn-cifar", _rn_models(_QUICK_BASE["lr"], width=8), _RN_CMPS, width=8, artefacts=("risk_gap",)),
        full=_full("rn-cifar", _rn_models(_FULL_BASE["lr"]), _RN_CMPS, seeds=[0, 1, 2], epochs=15, artefacts=("risk_gap",),
                   workers_hint=4, note="ResNet-20 only (not ResNet-110 / WRN-16-8 / CIFAR-100); plain ResNEst at "
                                        "lr 0.02, as the authors' 10x smaller rate"),
    ),
    EmpiricalCheck(
        "im-cifar", "IM-cifar",
        quick=_quick("im-cifar", [_m("identity_resnet", "identity_resnet", width=8, stem_width=8,
                                     blocks_per_stage=2)],
                     [Comparison("identity_resnet", None, Region(lo=80.0, hi=100.0), "93.6% (6.4% error, Hardt & "
                                 "Ma)", "test accuracy above 80% (chance: 10%)")], width=8),
        full=_full("im-cifar", [_m("identity_resnet", "identity_resnet")],
                   [Comparison("identity_resnet", None, Region(lo=80.0, hi=100.0),
                               "93.6% (6.4% error, Hardt & Ma)", "test accuracy above 80% (chance: 10%)")],
                   seeds=[0, 1], epochs=6, lr=0.05, note="lr 0.05 (no batch norm); outside the 10-minute budget"),
    ),
)

CHECKS_BY_NAME = {c.name: c for c in CHECKS}


def get_check(name: str) -> EmpiricalCheck:
    if name not in CHECKS_BY_NAME:
        raise KeyError(f"unknown empirical check {name!r}; known checks: {', '.join(CHECKS_BY_NAME)}")
    return CHECKS_BY_NAME[name]


# --- data and sweeps ---------------------------------------------------------------------------

def full_dataset(data_path: str | Path | None) -> tuple[str, dict, str]:
    """``(dataset, dataset_options, description)`` of the full profile's CIFAR-10 from ``--data``.

    ``None``: ``cifar10-jpeg.zip`` found under ``experiments.runs.data.data_roots()``. A ``.zip`` file or a
    folder with ``train/`` and ``test/``: the JPEG copy (``cifar10_jpeg``). A folder that is or
    holds torchvision's ``cifar-10-batches-py``: the original pickles (``cifar10``). A folder that
    holds ``cifar10-jpeg.zip`` or ``cifar10-jpeg/``: that.
    """
    jpeg = "JPEG CIFAR-10 (quality ~75)"
    if data_path is None:
        return "cifar10_jpeg", {}, jpeg
    p = Path(data_path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--data {p}: no such file or folder; give cifar10-jpeg.zip, an extracted "
                                f"train/ + test/ JPEG tree, or the folder holding cifar-10-batches-py")
    if p.is_file():
        if p.suffix.lower() != ".zip":
            raise ValueError(f"--data {p}: a file must be a zip of train/<class>/*.jpg + test/<class>/*.jpg "
                             f"(cifar10-jpeg.zip); got a {p.suffix or 'suffix-less'} file")
        return "cifar10_jpeg", {"path": str(p)}, jpeg
    if p.name == "cifar-10-batches-py" or (p / "data_batch_1").exists():
        return "cifar10", {"root": str(p)}, "CIFAR-10 (original pickles)"
    if (p / "cifar-10-batches-py").is_dir():
        return "cifar10", {"root": str(p)}, "CIFAR-10 (original pickles)"
    if (p / "train").is_dir() and (p / "test").is_dir():
        return "cifar10_jpeg", {"path": str(p)}, jpeg
    for child in ("cifar10-jpeg.zip", "cifar10-jpeg"):
        if (p / child).exists():
            return "cifar10_jpeg", {"path": str(p / child)}, jpeg
    raise FileNotFoundError(f"--data {p}: found no CIFAR-10 there; expected cifar10-jpeg.zip, a folder with "
                            f"train/ and test/ (JPEG tree), cifar-10-batches-py/ (torchvision pickles) or a folder "
                            f"holding one of them")


def cifar100_dataset(data_path: str | Path | None) -> tuple[str, dict, str]:
    """``(dataset, dataset_options, description)`` of CIFAR-100 for a full-profile check (NRL-c100).

    Looks for torchvision's ``cifar-100-python`` folder (``train``, ``test``, ``meta``) at ``--data``
    itself, beside it (the folder holding it, or holding the CIFAR-10 zip given as ``--data``), then
    in ``experiments.runs.data.data_roots()``; raises ``FileNotFoundError`` naming every place tried.
    """
    from experiments.runs.data import data_roots

    roots: list[Path] = []
    if data_path is not None:
        p = Path(data_path).expanduser()
        roots += [p] if p.is_dir() else []
        roots += [p.parent]
    roots += data_roots()
    tried = []
    for root in roots:
        for folder in (root if root.name == "cifar-100-python" else root / "cifar-100-python",):
            if folder in tried:
                continue
            tried.append(folder)
            if all((folder / f).is_file() for f in ("train", "test", "meta")):
                return "cifar100", {"root": str(folder)}, "CIFAR-100 (original pickles)"
    raise FileNotFoundError(
        "needs CIFAR-100 (torchvision's cifar-100-python folder with train, test and meta), which is not in "
        "shared/data; looked in: " + ", ".join(str(t) for t in tried) + ". Put cifar-100-python beside the --data "
        "path (or extract cifar-100-python.tar.gz into one of these folders) and run the full audit again")


def _train_fields() -> set[str]:
    from experiments.runs.store import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def build_sweep(check: EmpiricalCheck, profile: str, data_path=None):
    """The ``SweepSpec`` of ``check``'s ``profile`` (the full profile's dataset from ``data_path``)."""
    from experiments.runs.sweep import SweepSpec

    ps = check.spec(profile)
    if ps.sweep is None:
        raise ValueError(f"check {check.name!r} runs nothing in profile {profile!r}: {ps.reason}")
    d = {**ps.sweep, "base": dict(ps.sweep["base"]), "models": [dict(m) for m in ps.sweep["models"]]}
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
    from experiments.runs.sweep import run_status

    st = run_status(spec, store)
    return st.loc[st["status"] != "done", "run_id"].tolist()


def _run_ids(spec, store: Path, finished_only: bool = True) -> list[str]:
    from experiments.runs.sweep import run_status

    st = run_status(spec, store)
    return st.loc[st["status"] == "done", "run_id"].tolist() if finished_only else st["run_id"].tolist()


def _check_label(check: EmpiricalCheck, profile: str) -> str:
    return f"empirical:{check.name} ({profile} profile)"


def verdict_from_store(check: EmpiricalCheck, profile: str, store: Path | str, data_path=None,
                       artefact_notes: list[str] | None = None, data_cache: dict | None = None) -> EmpiricalOutcome:
    """Judge ``check`` from the finished runs in ``store`` (trains nothing; needs no checkpoint).

    ``data_cache``: the audit's dataset cache (``_dataset_for``); the float-noise probe reads the
    test-set size from it instead of loading the dataset again.
    """
    from experiments.runs.sweep import results_table

    store = Path(store)
    ps = check.spec(profile)
    label = _check_label(check, profile)
    if ps.sweep is None:
        return EmpiricalOutcome(check.claim_id, "not run", f"{profile} profile: {ps.reason}", label,
                                details={"profile": profile, "reason": ps.reason})
    spec = build_sweep(check, profile, data_path)
    missing = _missing(spec, store)
    n_runs = len(_run_ids(spec, store, finished_only=False))
    if missing:
        return EmpiricalOutcome(check.claim_id, "not run",
                                f"{len(missing)} runs of {n_runs} missing from {store}", label,
                                details={"profile": profile, "missing_runs": missing})
    dataset_text = _dataset_text(spec, profile)
    setting = ps.setting.format(dataset=dataset_text)
    schedule = schedule_text(spec)
    table = results_table(spec, store)
    runs = tuple(_run_ids(spec, store))
    details = {"profile": profile, "setting": setting, "schedule": schedule, "dataset": dataset_text,
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
        st = paired_stats(values)
        status = judge(st, cmp.region)
        stab = judge_stability(st, cmp.region, spread) if spread is not None else None
        if stab is not None and not stab.stable:
            status = "inconclusive"
        statuses.append(status)
        stat_text = st.text() if cmp.baseline is not None else st.text().replace(" pts", "%").replace("+", "")
        stab_text = f"; {stab.text()}" if stab is not None else ""
        parts.append(f"{what}: {stat_text} vs region {cmp.region.text()} ({cmp.meaning}) -> {status}{stab_text}; "
                     f"paper {cmp.paper}")
        details["comparisons"].append({
            "block": cmp.block, "baseline": cmp.baseline, "n": st.n, "mean": st.mean, "std": st.std,
            "ci_low": st.ci_low, "ci_high": st.ci_high, "confidence": st.confidence,
            "region": [cmp.region.lo, cmp.region.hi], "status": status, "paper": cmp.paper,
            "values": values.tolist(),
            "stability": dataclasses.asdict(stab) if stab is not None else None})
    extra = list(artefact_notes or []) + extra_notes
    if "landscape" in ps.artefacts:
        note, proxy = _landscape_summary(spec, store)
        extra.append(note)
        details["landscape"] = proxy
    if "risk_gap" in ps.artefacts:
        extra.append(_risk_gap_summary(spec, store))
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
    return EmpiricalOutcome(check.claim_id, status, evidence.strip(), label, runs, details)


def runs_made_on(store: Path, run_ids) -> list[str]:
    """Where the runs behind a verdict were trained: ``"<GPU or CPU (kernels, threads)>, commit <c> (n runs)"``.

    From each run's ``result.json`` provenance (the call that finished it); runs finished before
    provenance was recorded fall back to ``environment.json`` and say that their commit is unknown.
    """
    import json

    from experiments.runs.store import RunDir

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
    from experiments.runs.sweep import paired_differences

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
    n_test = int(_dataset_for(spec, data_cache).test_images.shape[0])
    return max(changes + [100.0 / n_test])


def _dataset_text(spec, profile: str) -> str:
    if profile == "quick":
        return "scikit-learn digits 8x8"
    return {"cifar10_jpeg": "JPEG CIFAR-10 (quality ~75)", "cifar100": "CIFAR-100 (original pickles)"}.get(
        spec.base.get("dataset"), "CIFAR-10 (original pickles)")


# --- artefacts (from checkpoints, right after training; reused when present) ------------------

def _artefact_runs(spec, store: Path, kind: str) -> list[tuple[str, str, Path]]:
    """(label, run_id, run dir) of the runs an artefact is made for: landscape seed 0 only, risk gap all."""
    from experiments.runs.sweep import expand

    out = []
    for r in expand(spec):
        if r.label.endswith(PROBE_SUFFIX) or (kind == "landscape" and r.seed != min(spec.seeds)):
            continue
        out.append((r.label, r.run_id, store / "runs" / r.run_id))
    return out


def _landscape_config(run_dir: Path, profile: str, device: str):
    from experiments.cli.landscape import LandscapeConfig

    if profile == "quick":
        return LandscapeConfig(run_dir=run_dir, points=11, range=1.0, samples=256, device=device)
    return LandscapeConfig(run_dir=run_dir, points=21, range=1.0, samples=1024, device=device)


def make_artefacts(check: EmpiricalCheck, profile: str, store: Path, data_path=None, device: str = "cpu",
                   log: Callable = print, data_cache: dict | None = None) -> list[str]:
    """Compute the check's missing artefacts from checkpoints; return notes on what could not be made.

    ``data_cache``: the audit's dataset cache (``_dataset_for``), so a dataset loaded for training is
    not loaded again for the float16 peaks.
    """
    ps = check.spec(profile)
    if not ps.artefacts or ps.sweep is None:
        return []
    spec = build_sweep(check, profile, data_path)
    notes = []
    data_cache = data_cache if data_cache is not None else {}  # one load for all runs of this check
    for kind in ps.artefacts:
        for label, run_id, rd in _artefact_runs(spec, store, kind):
            target = rd / _ARTEFACT_FILES[kind]
            if target.exists():
                continue
            if not (rd / "checkpoint.pt").exists():
                notes.append(f"{kind} of {run_id} missing and its checkpoint is gone")
                continue
            log(f"  {kind}: {run_id}")
            if kind == "landscape":
                from experiments.cli.landscape import run_landscape

                run_landscape(_landscape_config(rd, profile, device))
            elif kind == "fp16_peaks":
                write_fp16_peaks(rd, device, max_samples=None if profile == "quick" else 5000,
                                 data=_dataset_for(spec, data_cache))
            else:
                from experiments.cli.risk_gap import RiskGapConfig, run_risk_gap

                # 5,000 of CIFAR's 50,000 images keep a model's report to seconds on the GPU box's CPU.
                run_risk_gap(RiskGapConfig(run_dir=rd, max_samples=None if profile == "quick" else 5000))
    if "landscape" in ps.artefacts:
        _side_by_side(spec, store)
    return notes


_ARTEFACT_FILES = {"landscape": "landscape.npz", "risk_gap": "risk_gap.json", "fp16_peaks": "fp16_peaks.json"}


def write_fp16_peaks(run_dir: Path, device: str = "cpu", max_samples: int | None = None,
                     data=None) -> Path:
    """``RUN_DIR/fp16_peaks.json``: ``analysis.probes.fp16_peaks.second_order_peaks`` of the run's last checkpoint.

    Measured on the training images (the first ``max_samples`` of a seeded permutation when set),
    in float32 and eval mode; for a run stopped at a non-finite loss the checkpoint is the last
    good epoch's, so the peaks say how large the term was just before. ``data``: the run's dataset
    if already loaded (otherwise it is loaded from the run's config).
    """
    import json

    from analysis.probes.fp16_peaks import second_order_peaks
    from experiments.runs.data import load_dataset, normalize, subsample
    from experiments.runs.store import RunDir
    from experiments.runs.train import load_run

    run_dir = Path(run_dir)
    model, config = load_run(run_dir, map_location=device)
    if data is None:
        data = load_dataset(config.dataset, **config.dataset_options)
    images, _ = subsample(data.train_images, data.train_labels, max_samples, seed=0)
    x = normalize(images.to(device), data.mean, data.std)
    peaks = second_order_peaks(model, x)
    metrics = RunDir(run_dir).read_metrics()  # a checkpoint is written with every epoch's metrics row
    peaks["checkpoint_epoch"] = int(metrics[-1]["epoch"]) if metrics else 0
    out = run_dir / "fp16_peaks.json"
    out.write_text(json.dumps(peaks, indent=2, default=lambda v: None))
    return out


def judge_fp16(spec, store: Path) -> tuple[str, str, dict]:
    """NRL-fp16's verdict from the finished runs of ``newton_plain`` and ``newton_tanh``.

    - ``holds``: some run without the tanh hit a non-finite loss in float16 and none with it did;
    - ``fails``: a run with the tanh overflowed too (the tanh did not prevent it);
    - ``inconclusive``: no run overflowed (the paper says the term *might* overflow: not seeing it
      at this scale does not refute that); the evidence gives the measured float16 headroom.
    """
    import json

    from analysis.probes.fp16_peaks import FP16_MAX
    from experiments.runs.store import RunDir
    from experiments.runs.sweep import expand

    runs: dict[str, list[dict]] = {}
    for r in expand(spec):
        rd = store / "runs" / r.run_id
        result = RunDir(rd).read_result() or {}
        peaks_file = rd / "fp16_peaks.json"
        peaks = json.loads(peaks_file.read_text()) if peaks_file.exists() else None
        runs.setdefault(r.label, []).append({"run_id": r.run_id, "seed": r.seed, "nonfinite": result.get("nonfinite"),
                                             "epochs_completed": result.get("epochs_completed"),
                                             "peak": (peaks or {}).get("peak")})
    bad = {label: [r for r in rs if r["nonfinite"]] for label, rs in runs.items()}
    # Labels "newton_plain*" train without the tanh, "newton_tanh*" with it (the full profile adds a
    # "_b1024" pair at the paper's own float16 setting).
    with_tanh = [lab for lab in runs if lab.startswith("newton_tanh")]
    without = [lab for lab in runs if lab.startswith("newton_plain")]

    def overflow_text(label: str) -> str:
        rs = bad.get(label, [])
        if not rs:
            return f"{label}: 0 of {len(runs.get(label, []))} runs overflowed"
        first = rs[0]["nonfinite"]
        return (f"{label}: {len(rs)} of {len(runs[label])} runs hit a non-finite loss (seed {rs[0]['seed']}: step "
                f"{first['step']}, {first['where']})")

    def peak_text(label: str) -> str:
        ps = [r["peak"] for r in runs.get(label, []) if r["peak"]]
        if not ps:
            return f"{label}: peaks missing"
        prod = max(p["product"] or 0.0 for p in ps)
        term = max(p["term"] or 0.0 for p in ps)
        return (f"{label}: largest |N1(s)*f| {prod:.3g} ({100 * prod / FP16_MAX:.2g}% of {FP16_MAX:g}), "
                f"largest |N2(.)| {term:.3g}")

    if any(bad.get(lab) for lab in with_tanh):
        status = "fails"
        lead = "the tanh did not prevent float16 overflow"
    elif any(bad.get(lab) for lab in without):
        status = "holds"
        lead = "float16 overflow without the tanh, none with it"
    else:
        status = "inconclusive"
        lead = ("no run overflowed in float16, with or without the tanh, so neither half of the claim could be "
                "shown at this scale")
    labels = without + with_tanh
    text = (f"{lead}: " + "; ".join(overflow_text(lab) for lab in labels) + ". Float16 headroom at the last "
            "good checkpoint (float32 eval forward on training images): " + "; ".join(peak_text(lab) for lab in labels)
            + ". The tanh follows N2, so it bounds the added term but not the product N1(s)*f before it")
    details = {"fp16": {"runs": runs, "overflowed": {k: len(v) for k, v in bad.items()},
                        "n": {lab: len(runs[lab]) for lab in labels}}}
    return status, text, details


def _load_landscapes(spec, store: Path) -> dict:
    from analysis.probes.landscape import LandscapeResult

    out = {}
    for label, run_id, rd in _artefact_runs(spec, store, "landscape"):
        if (rd / "landscape.npz").exists():
            out[label] = (run_id, LandscapeResult.load(rd / "landscape"))
    return out


def landscape_proxy(result) -> dict:
    """Sharpness proxy of a 2-D landscape: mean loss on the grid's edge minus the loss at its centre.

    With filter-normalised directions the edge is a perturbation as large as the weights, so the
    rise is comparable across models: a smaller rise means a wider basin around the minimum.
    """
    loss = np.asarray(result.loss, dtype=float)
    i, j = loss.shape[0] // 2, loss.shape[1] // 2
    edge = np.concatenate([loss[0], loss[-1], loss[1:-1, 0], loss[1:-1, -1]])
    return {"centre_loss": float(loss[i, j]), "edge_mean_loss": float(np.nanmean(edge)),
            "edge_rise": float(np.nanmean(edge) - loss[i, j])}


def _landscape_summary(spec, store: Path) -> tuple[str, dict]:
    found = _load_landscapes(spec, store)
    if len(found) < len([m for m in spec.models if not m.label.endswith(PROBE_SUFFIX)]):  # twins get none
        return "Landscape artefacts missing.", {}
    proxy = {label: landscape_proxy(res) | {"run_id": rid} for label, (rid, res) in found.items()}
    labels = list(proxy)
    rises = ", ".join(f"{lab} {proxy[lab]['edge_rise']:.3g}" for lab in labels)
    ratio = proxy[labels[1]]["edge_rise"] / proxy[labels[0]]["edge_rise"] if proxy[labels[0]]["edge_rise"] else math.nan
    proxy["ratio"] = ratio
    return (f"Landscape proxy (mean loss on the grid edge minus the centre's, filter-normalised 2-D slice, seed-0 "
            f"runs): {rises}; ratio {labels[1]}/{labels[0]} = {ratio:.3g} (contours: "
            f"{Path('sweeps') / spec.name / 'contours.png'} in the store).", proxy)


def _side_by_side(spec, store: Path) -> Path | None:
    from analysis.probes.landscape import plot_side_by_side, save_figure

    found = _load_landscapes(spec, store)
    if len(found) < 2:
        return None
    out = store / "sweeps" / spec.name / "contours.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_side_by_side({lab: res for lab, (_, res) in found.items()},
                            log=any(float(np.nanmax(r.loss)) > 100 * float(np.nanmin(r.loss)) for _, r in found.values()))
    return save_figure(fig, out)


def _risk_gap_summary(spec, store: Path) -> str:
    import json

    gaps: dict[str, list[float]] = {}
    for label, run_id, rd in _artefact_runs(spec, store, "risk_gap"):
        f = rd / "risk_gap.json"
        if f.exists():
            data = json.loads(f.read_text())
            eps = data.get("eps_train", data.get("summary", {}).get("eps_train"))
            if isinstance(eps, (int, float)):
                gaps.setdefault(label, []).append(float(eps))
    if not gaps:
        return "Risk-gap reports missing."
    text = ", ".join(f"{lab} {np.mean(v):.3g} (n = {len(v)})" for lab, v in gaps.items())
    return f"Risk gap eps = R - A* on the training set (RN Prop. 2, mean over seeds): {text}."


def run_empirical(check: EmpiricalCheck, profile: str, store: Path | str, *, device: str | None = None,
                  data_path=None, workers: int = 1, deadline: float | None = None, train: bool = True,
                  progress: bool = True, data_cache: dict | None = None, log: Callable = print) -> EmpiricalOutcome:
    """Train what ``check`` still lacks in ``store`` (when allowed), make its artefacts, then judge it.

    Training happens in the quick profile (CPU) and in the full profile only on a CUDA device;
    otherwise missing runs make the claim ``not run`` with the reason. ``deadline`` (a
    ``time.monotonic()`` value) stops starting new models' runs after it; the store keeps what
    finished, and the next call resumes.
    """
    from experiments.runs.sweep import SweepFailed, run_sweep

    store = Path(store)
    ps = check.spec(profile)
    label = _check_label(check, profile)
    if ps.sweep is None:
        return verdict_from_store(check, profile, store, data_path, data_cache=data_cache)
    workers = check_int("workers", workers, min_value=1)
    spec = build_sweep(check, profile, data_path)
    missing = _missing(spec, store)
    dev = device or ("cpu" if profile == "quick" else None)
    if missing:
        why = _cannot_train(profile, dev, train)
        if why:
            return EmpiricalOutcome(check.claim_id, "not run",
                                    f"{why}: {len(missing)} runs of {len(_run_ids(spec, store, False))} missing "
                                    f"from {store}; run with --profile {profile} --device cuda",
                                    label, details={"profile": profile, "missing_runs": missing})
        data = _dataset_for(spec, data_cache)
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
                    return EmpiricalOutcome(check.claim_id, "not run",
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
            return EmpiricalOutcome(check.claim_id, "inconclusive", f"training failed: {errs}", label,
                                    details={"profile": profile, "failures": failures})
    notes = []
    # Artefacts are made even past the deadline: they need the checkpoints, which a GPU machine loses
    # when it is given back, and they take seconds there (a risk gap, one 21 x 21 landscape).
    if ps.artefacts:
        with _quick_threads(profile):
            notes = make_artefacts(check, profile, store, data_path, device=dev or "cpu", log=log,
                                   data_cache=data_cache)
    return verdict_from_store(check, profile, store, data_path, notes, data_cache)


def train_checks(checks, profile: str, store: Path | str, *, workers: int = 1, progress: bool = True,
                 data_cache: dict | None = None, log: Callable = print) -> dict[str, str]:
    """Train every run that ``checks`` lack in ``store``, all in one pool of ``workers`` processes.

    For the quick profile (CPU), where every run trains on one thread (``sweep.CPU_THREADS``): the
    runs of all checks share one pool, so the cores stay busy across checks, and the numbers do not
    depend on ``workers``. Returns ``{run_id: error}`` of runs that failed; ``run_empirical`` then
    finds every run present and only judges.
    """
    from experiments.runs.sweep import expand, train_runs

    runs = []
    for check in checks:
        if check.spec(profile).sweep is not None:
            runs += expand(build_sweep(check, profile))
    if not runs:
        return {}
    datasets = {_data_key(r.config.dataset, r.config.dataset_options) for r in runs}
    # One dataset for all (the quick profile's digits): loaded once here, shared with the workers.
    data = _load_data(runs[0].config.dataset, runs[0].config.dataset_options, data_cache) if len(datasets) == 1 else None
    log(f"  train {len(runs)} runs of {len(checks)} checks ({workers} at once, one thread each)")
    return train_runs(runs, store, workers=workers, progress=progress, data=data, desc="audit runs")


def _quick_threads(profile: str):
    """One torch thread for the quick profile's tiny CPU models (a context manager; others: untouched).

    At 8x8 and width <= 8 a step is dominated by per-op overhead, where a second thread only adds
    synchronisation (5x slower per step on a loaded 2-core machine, measured); one thread also makes
    the numbers independent of the machine's core count.
    """
    from experiments.runs.train import cpu_threads

    return cpu_threads(1 if profile == "quick" else None)


def _missing_of_label(spec, store: Path, label: str) -> list[str]:
    from experiments.runs.sweep import run_status

    st = run_status(spec, store)
    return st.loc[(st["label"] == label) & (st["status"] != "done"), "run_id"].tolist()


def _cannot_train(profile: str, device: str | None, train: bool) -> str:
    """Why this call may not train (empty string: it may)."""
    import torch

    if not train:
        return "training disabled"
    if profile == "quick":
        return ""
    if device is None or not str(device).startswith("cuda"):
        return f"needs a GPU (device {device or 'not given'})"
    if not torch.cuda.is_available():
        return f"needs a GPU: --device {device} given but torch.cuda.is_available() is False"
    return ""


def _data_key(dataset: str, options: dict) -> str:
    import json

    return json.dumps([dataset, options], sort_keys=True)


def _load_data(dataset: str, options: dict, cache: dict | None):
    """``load_dataset(dataset, **options)``, kept in ``cache`` (one dataset at a time) for reuse."""
    from experiments.runs.data import load_dataset

    key = _data_key(dataset, options)
    if cache is not None and key in cache:
        return cache[key]
    data = load_dataset(dataset, **options)
    if cache is not None:
        cache.clear()
        cache[key] = data
    return data


def _dataset_for(spec, cache: dict | None):
    """The sweep's dataset, loaded once per audit (every check of a profile uses the same one)."""
    return _load_data(spec.base.get("dataset", "digits"), spec.base.get("dataset_options", {}), cache)
