"""Hypothesis settings profiles shared by ``theory_checks`` and ``tests``.

- ``ci`` (default): derandomised (same inputs every run, so CI is reproducible), no deadline
  (CPU timing on a shared 2-core machine is noisy), few examples, prints the reproduction blob.
- ``thorough``: many random examples, for a long run: ``pytest --hypothesis-profile thorough``.
- ``dev``: a handful of examples for quick iteration.
"""
from hypothesis import HealthCheck, settings

# function_scoped_fixture: the ``evidence`` fixture (theory_checks/evidence.py) is meant to live
# across a test's examples, collecting one value per example.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])


def register_profiles() -> None:
    settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True, **_COMMON)
    settings.register_profile("thorough", max_examples=500, print_blob=True, **_COMMON)
    settings.register_profile("dev", max_examples=5, derandomize=True, **_COMMON)
