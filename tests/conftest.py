import os

import pytest
import torch

from hypothesis import settings

from theory_checks.profiles import register_profiles

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models: with 2 threads on an oversubscribed 2-core
    machine tiny convs ran ~1000x slower. Restored afterwards so other modules are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Relative perturbations of an input by 1 and 2 float32 ulps (2^-24 can round away just above a
# power of two). Scaling a computation's input by (1 + rel) changes its exact result by about rel
# times its condition number, so these probes show how far rounding alone moves the result.
ROUNDING_STEPS = (2.0 ** -23, 2.0 ** -22)


def scaled_gap(a, b) -> float:
    """max |a - b| / max |b|, the largest over paired tensors or arrays when given sequences of them:
    a gap in units of the result's scale, so entries near zero carry no spurious relative weight."""
    if isinstance(a, (list, tuple)):
        return max(scaled_gap(x, y) for x, y in zip(a, b, strict=True))
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def measure_noise_floor(compute, gap=scaled_gap, perturbations=ROUNDING_STEPS, other_thread_count=True,
                        at_least=0.0):
    """This machine's noise floor for a float comparison: the largest ``gap(reference, probe)``
    (by default ``scaled_gap``).

    ``compute(rel)`` runs the reference computation with its input multiplied by ``(1 + rel)``;
    ``compute(0.0)`` is the reference. The probes are ``compute(rel)`` for each ``rel`` in
    ``perturbations`` and, with ``other_thread_count``, ``compute(0.0)`` with 2 torch threads if
    the caller runs 1, else 1 (another split of every parallel reduction). Each differs from the
    reference by rounding only, as two engines or code paths that compute one function do, so a
    test allows a stated margin times this floor. ``at_least`` is a floor under the floor for a
    machine whose probes all round to the same bits. A ``gap`` that returns a dict of named gaps
    (several quantities from one computation) gives a dict of floors, one per name.
    """
    reference = compute(0.0)
    probes = [compute(rel) for rel in perturbations]
    if other_thread_count:
        before = torch.get_num_threads()
        torch.set_num_threads(2 if before == 1 else 1)
        try:
            probes.append(compute(0.0))
        finally:
            torch.set_num_threads(before)
    gaps = [gap(reference, p) for p in probes]
    if isinstance(gaps[0], dict):
        return {k: max([float(g[k]) for g in gaps] + [at_least]) for k in gaps[0]}
    return max([float(g) for g in gaps] + [at_least])


@pytest.fixture(scope="session")
def noise_floor():
    """``measure_noise_floor`` for a test (see there)."""
    return measure_noise_floor


@pytest.fixture(scope="session", name="scaled_gap")
def _scaled_gap():
    """``scaled_gap`` for a test that compares its two computations the way the floor was measured."""
    return scaled_gap
