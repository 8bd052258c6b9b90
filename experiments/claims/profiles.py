"""Building blocks of the training checks' profiles, shared by the papers' claim modules.

- ``quick``: a CPU *analogue* (scikit-learn digits at their native 8x8, ``load_digits(size=8)``,
  small widths, a few epochs, 5 seeds). It compares the same block with the same baseline as the
  paper, but it is not the paper's setting, and every verdict says so;
- ``full``: CIFAR-10 (``--data PATH``), a GPU, bf16 autocast and channels_last, augmentation, short
  one-cycle schedules (stated in the verdict).
"""
from __future__ import annotations

from experiments.claims.types import ProfileSpec

# Digits at their native 8x8: every pixel of the 32x32 copy is a 4x4 patch, so nothing is lost and
# a run costs 16x less (the CIFAR nets pool globally and accept any size >= 8).
QUICK_DATASET = {"dataset": "digits", "dataset_options": {"size": 8}}
QUICK_BASE = {**QUICK_DATASET, "epochs": 6, "batch_size": 64, "lr": 0.05, "schedule": "onecycle",
              "weight_decay": 5e-4, "augment": False}
# Five seeds: with three, the t interval's half-width is 2.48 sd, which left most analogues
# undecided; five halve it (1.24 sd) for ~2 more CPU minutes of the quick audit.
QUICK_SEEDS = [0, 1, 2, 3, 4]
QUICK_SETTING = "analogue on digits (native 8x8), width {width}, {epochs} epochs, {seeds} seeds; not the paper's CIFAR setting"

# Full profile: CIFAR-10 with augmentation, batch 256 (lr 0.2: the papers' 0.1 at batch 128 scaled
# linearly), one-cycle schedule (linear warm-up over 20% of the steps, linear decay to 0: the usual
# short-schedule recipe), Nesterov SGD, wd 5e-4, bf16 autocast and channels_last on the GPU. The
# dataset is filled in by the audit from --data.
FULL_BASE = {"batch_size": 256, "lr": 0.2, "schedule": "onecycle", "weight_decay": 5e-4, "augment": True,
             "precision": "bf16", "channels_last": True}


def model(label: str, name: str, **options) -> dict:
    """One ``[[models]]`` entry of a sweep: ``label`` in the comparisons, ``name`` in the model registry."""
    return {"label": label, "name": name, "options": options}


def quick_profile(name: str, models: list[dict], comparisons, width: int, seeds=QUICK_SEEDS, epochs: int = 6,
                  artefacts=(), **base) -> ProfileSpec:
    """The CPU analogue of check ``name``: sweep ``audit-quick-<name>`` with a float-noise twin of the first seed."""
    sweep = {"name": f"audit-quick-{name}", "seeds": list(seeds), "base": {**QUICK_BASE, "epochs": epochs, **base},
             "models": models}
    setting = QUICK_SETTING.format(width=width, epochs=epochs, seeds=len(seeds))
    return ProfileSpec(sweep, tuple(comparisons), setting, artefacts=tuple(artefacts), probe_seeds=(seeds[0],))


def full_profile(name: str, models: list[dict], comparisons, seeds, epochs: int, note: str = "", artefacts=(),
                 workers_hint: int = 2, **base) -> ProfileSpec:
    """The paper-scale profile of check ``name``: sweep ``audit-full-<name>`` on CIFAR (GPU)."""
    sweep = {"name": f"audit-full-{name}", "seeds": list(seeds), "base": {**FULL_BASE, "epochs": epochs, **base},
             "models": models}
    setting = f"{{dataset}}, {epochs} epochs (paper: 160-300), {len(seeds)} seeds" + (f"; {note}" if note else "")
    return ProfileSpec(sweep, tuple(comparisons), setting, artefacts=tuple(artefacts), workers_hint=workers_hint)
