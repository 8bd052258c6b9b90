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
