"""The landscape engines behind one interface: the registry, a new engine without an edit of
loss_landscape, and the plots still answering at their old import paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis.probes.landscape import ENGINES, loss_landscape, random_directions
from analysis.probes.landscape.engines import base as engine_base
from analysis.probes.landscape.engines import choose_engine
from analysis.probes.landscape.engines.vmap import vmap_chunk_fn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).double().eval()


def _data():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 6, 6, generator=gen, dtype=torch.float64), torch.randint(0, 5, (4,), generator=gen)


def test_engines_come_from_the_registry_in_their_documented_order():
    assert ENGINES == ("auto", "vmap", "sequential", "grouped", "compiled")
    assert engine_base.engine_names() == ENGINES[1:]
    assert engine_base.get_engine("grouped").fallback == "vmap"
    assert [engine_base.get_engine(n).pads_chunks for n in ENGINES[1:]] == [False, False, True, True]
    model = _net()
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'vmap', 'sequential', 'grouped', "
                                         "'compiled'; got 'turbo'"):
        loss_landscape(model, random_directions(model, 1), _data(), [0.0], engine="turbo")


def test_auto_is_sequential_on_a_cpu_in_float32_and_grouped_otherwise():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_engine("auto", cpu, "float32") == "sequential"
    assert choose_engine("auto", cpu, "bfloat16") == "grouped"
    assert choose_engine("auto", cuda, "float32") == "grouped"
    assert choose_engine("vmap", cpu, "float32") == "vmap"


def test_a_registered_engine_runs_without_editing_loss_landscape(monkeypatch):
    # A new engine is a subclass with @register_engine; loss_landscape validates against the live
    # registry. The registry is restored afterwards, so no other test sees this engine.
    monkeypatch.setattr(engine_base, "_REGISTRY", dict(engine_base._REGISTRY))
    built = []

    @engine_base.register_engine
    class Echo(engine_base.Engine):
        name = "echo"

        def build(self, request):
            built.append(request.requested)
            return vmap_chunk_fn(request.model, request.problem, request.precision, False)

    model, data = _net(), _data()
    dirs = random_directions(model, 2, seed=2)
    ours = loss_landscape(model, dirs, data, [-0.5, 0.5], [0.0, 1.0], engine="echo", chunk_size=3)
    exact = loss_landscape(model, dirs, data, [-0.5, 0.5], [0.0, 1.0], engine="vmap", chunk_size=3)
    assert built == [True] and ours.meta["engine"] == "echo"
    np.testing.assert_array_equal(ours.loss, exact.loss)  # the same chunk evaluator on the same chunks
    with pytest.raises(ValueError, match="already registered"):
        engine_base.register_engine(Echo)


