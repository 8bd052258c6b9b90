"""The mutation benchmark's scope rule (experiments.benchmarks.mutation.out_of_scope): which mutants only
change an error message or which inputs are rejected, and which change what a theory function computes."""
from __future__ import annotations

import pytest

from experiments.benchmarks.mutation import label_functions, out_of_scope

ORIG = '''
def f(A, step, b):
    step = check_real("step", step, min_value=0.0, include_min=False)
    A = as_float64_array("A", A, ndim=3)
    if A.shape[1] != A.shape[2]:
        raise ValueError(f"A must be square; got {A.shape}")
    for name, W in (("W_1", W), ("W_2", W)):
        check_square(name, W)
    return A * step + b
'''


@pytest.mark.parametrize("old, new, reason", [
    ('raise ValueError(f"A must be square; got {A.shape}")', 'raise ValueError(None)', "raise statement"),
    ('check_real("step"', 'check_real("XXstepXX"', "name label"),
    ("min_value=0.0, include_min=False", "min_value=None, include_min=False", "input validation"),
    ("min_value=0.0, include_min=False", "include_min=False", "input validation"),
    ("ndim=3", "ndim=None", "input validation"),
    ("if A.shape[1] != A.shape[2]:", "if A.shape[2] != A.shape[2]:", "guard that only raises"),
    ('("W_1", W)', '("XXW_1XX", W)', "name label a loop hands"),
    ("return A * step + b", "return A * step - b", None),  # the computation: in scope
    ('check_real("step", step,', 'check_real("step", None,', None),  # the value checked (and returned)
    ('A = as_float64_array("A", A, ndim=3)', "A = None", None),
])
def test_out_of_scope_separates_validation_and_messages_from_the_computation(old, new, reason):
    assert old in ORIG
    got = out_of_scope(ORIG, ORIG.replace(old, new, 1), label_functions())
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got
