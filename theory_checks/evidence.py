"""The one evidence recorder of the theory checks.

The audit prints, beside each claim's verdict, what its checks measured: ``experiments.audit.theory``
reads each test's pytest user property ``"evidence"`` (``record_property``). Every test in
``theory_checks`` writes it through the ``evidence`` fixture defined here (``theory_checks/conftest.py``
imports it; a test folder elsewhere can load this module as a plugin, ``-p theory_checks.evidence``),
an ``Evidence``:

    @pytest.mark.claim("ND-P1")
    def test_nd_p1_gradient_formula(evidence):
        @given(A=symmetric_matrices(), seed=seeds())
        def check(A, seed):
            ...
            assert err <= tol
            evidence.add(err / scale, "|eq(4) - autograd| / scale")

        check()
        evidence.record()  # "|eq(4) - autograd| / scale: max 8.1e-17 (25 examples)"

- ``add(value, label="value", worst="max")`` keeps one number per hypothesis example under
  ``label``; ``worst`` names the end of the values the audit should see: ``"max"`` for an error,
  ``"min"`` for a margin or a gap a counterexample must keep open, ``"sum"`` for a count.
- ``worst``, ``min``, ``max``, ``total`` and ``count`` read a label back, for a text the test writes
  itself.
- ``record(text=None)`` records ``text`` (default: every label's worst case) followed by the number
  of examples, as the one ``"evidence"`` property of the test.

Two ways to write a check, both recorded the same way:

- ``@given`` on the test itself (hypothesis' statistics and observability then see it:
  ``pytest --hypothesis-show-statistics``). The fixture lives for the whole test, across its
  examples, which is what it is for: the profiles (``theory_checks/profiles.py``) therefore
  suppress hypothesis' ``function_scoped_fixture`` health check. The evidence is recorded when the
  test has passed (the ``pytest_runtest_call`` hook below), as ``headline(text)`` set it or as
  ``summary()``::

      @pytest.mark.claim("ND-P1")
      @given(A=symmetric_matrices(), seed=seeds())
      def test_nd_p1_gradient_formula(evidence, A, seed):
          ...
          evidence.add(err / scale, "|eq(4) - autograd| / scale")

- an inner ``@given`` function called once, then ``evidence.record()`` (the older form).

A test that fails never records, so the audit never shows the values of a failing run as evidence;
a test must not return early either (an early return passes).
"""
from __future__ import annotations

from collections.abc import Callable

import pytest

__all__ = ["WORST", "Evidence", "evidence", "pytest_runtest_call"]

WORST = ("max", "min", "sum")
_SHOWN = {"max": "max", "min": "min", "sum": "total"}
_DEFAULT = "value"


class Evidence:
    """Numbers a theory check kept per hypothesis example, recorded once as its ``"evidence"``."""

    def __init__(self, record_property: Callable[[str, object], None]):
        self._record_property = record_property
        self._values: dict[str, list[float]] = {}
        self._worst: dict[str, str] = {}
        self._headline: str | None = None
        self.recorded: str | None = None  # the line recorded, once recorded

    def headline(self, text: str) -> None:
        """The text recorded at the end instead of ``summary()`` (the example count is appended)."""
        self._headline = text

    def add(self, value: float, label: str = _DEFAULT, worst: str = "max") -> None:
        """Keep ``value`` (one per example) under ``label``, whose worst case is its ``worst`` end."""
        if worst not in WORST:
            raise ValueError(f"worst must be one of {', '.join(map(repr, WORST))}; got {worst!r}")
        if self._worst.setdefault(label, worst) != worst:
            raise ValueError(f"label {label!r} was added with worst={self._worst[label]!r}; got worst={worst!r}")
        self._values.setdefault(label, []).append(float(value))

    def _kept(self, label: str) -> list[float]:
        if label not in self._values:
            kept = ", ".join(map(repr, self._values)) or "none"
            raise KeyError(f"no value was added under label {label!r}; labels: {kept}")
        return self._values[label]

    def count(self, label: str = _DEFAULT) -> int:
        """How many values ``label`` holds (the number of examples, one value each)."""
        return len(self._values.get(label, ()))

    def max(self, label: str = _DEFAULT) -> float:
        return max(self._kept(label))

    def min(self, label: str = _DEFAULT) -> float:
        return min(self._kept(label))

    def total(self, label: str = _DEFAULT) -> float:
        return sum(self._kept(label))

    def worst(self, label: str = _DEFAULT) -> float:
        """The worst case of ``label``: its max, min or sum, as chosen when it was added."""
        return {"max": self.max, "min": self.min, "sum": self.total}[self._worst.get(label, "max")](label)

    def summary(self) -> str:
        """Each label's worst case, "label: max 8.1e-17; label2: min 0.96", "no example ran" if none."""
        if not self._values:
            return "no example ran"
        counts = {len(v) for v in self._values.values()}
        parts = []
        for label in self._values:
            shown = _SHOWN[self._worst[label]]
            name = "" if label == _DEFAULT else f"{label}: "
            per_label = f" over {self.count(label)} values" if len(counts) > 1 else ""
            parts.append(f"{name}{shown} {self.worst(label):.3g}{per_label}")
        return "; ".join(parts)

    def record(self, text: str | None = None) -> str:
        """Record ``text`` (default ``summary()``) and the example count as the test's ``"evidence"``.

        The count is that of the first label added, since each example adds every label once;
        nothing is appended when no value was added (a check on one fixed example).
        """
        if text is None:
            text = self._headline if self._headline is not None else self.summary()
        line = text
        if self._values:
            line += f" ({self.count(next(iter(self._values)))} examples)"
        self._record_property("evidence", line)
        self.recorded = line
        return line


@pytest.fixture
def evidence(record_property) -> Evidence:
    """What the test measured, recorded once for the audit (see ``Evidence``)."""
    return Evidence(record_property)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Record the ``evidence`` of a test that passed and did not record it itself (``@given`` tests)."""
    outcome = yield
    ev = getattr(item, "funcargs", {}).get("evidence")
    if isinstance(ev, Evidence) and ev.recorded is None and outcome.excinfo is None:
        ev.record()
