import os

from hypothesis import settings

# the fixture every theory check records with, and the hook that records it once the test has passed
from theory_checks.evidence import evidence, pytest_runtest_call  # noqa: F401
from theory_checks.profiles import register_profiles

register_profiles()
# `pytest --hypothesis-profile NAME` (hypothesis' own option) overrides this default.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # Registered here (not only in pyproject.toml) so the audit can run an installed copy.
    config.addinivalue_line(
        "markers",
        "claim(*ids, role='conclusion'): the CLAIMS.md ids this test checks; role is 'conclusion' "
        "(asserts the claim) or 'assumption' (shows a counterexample once an assumption is dropped)",
    )
