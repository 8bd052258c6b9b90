"""Loss landscapes around trained weights: directions, batched grid evaluation, results (plots:
``analysis.plotting.landscape``).

A landscape is the loss (and accuracy) on given data at theta* + alpha d1 (1-D) or
theta* + alpha d1 + beta d2 (2-D), where theta* are the trained parameters and d1, d2 directions
in parameter space (Li et al. 2018, "Visualizing the loss landscape of neural nets"; NRL Fig. 1).
One module per job:

- ``directions``  ``Directions``, ``random_directions``, ``directions_to_models``,
                  ``trajectory_pca_directions``, ``normalize_direction``, ``filter_norms``;
- ``batchnorm``   the BatchNorm choice ``bn`` (``"eval"``, ``"recalibrate"``, ``"perturbed"``),
                  ``resolve_bn``, ``bn_statistics`` (the vmap-safe BatchNorm itself:
                  ``analysis.probes.batches``);
- ``grid``        ``grid_axis``, the row-major points, shards of a distributed run;
- ``result``      ``LandscapeResult`` (``.npz`` + ``.json``), ``merge_landscapes``;
- ``memory``      ``auto_chunk_size``;
- ``engines``     ``"auto"``, ``"sequential"``, ``"vmap"``, ``"grouped"``, ``"compiled"`` behind one
                  interface and a registry;
- ``api``         ``loss_landscape`` (validate, prepare, pick the engine, run) and
                  ``loss_landscape_reference`` (one point at a time with the model's own layers,
                  recalibrating by PyTorch's own running-stat update: the independent reference
                  the tests compare against, and the "sequential evaluator" of the benchmarks).

The model is never modified: every engine runs on a deep copy in eval mode (dropout off).

Comparing with loss-landscapes (tests/test_landscape_compare.py and the benchmark): inject the same
direction into its ``random_plane`` by evaluating ours with ``directions=Directions.given(...)``
built from the direction it draws (after its own normalisation, on a model whose every normalised
vector is nonzero, e.g. after one training step), on the same data and grid; its grid starts at the
corner and steps with a zig-zag on alternate rows, so compare against our value at the matching
coordinates, not by array position.
"""
from __future__ import annotations

from analysis.probes.landscape.api import loss_landscape, loss_landscape_reference
from analysis.probes.landscape.batchnorm import BN_CHOICES, bn_statistics, resolve_bn
from analysis.probes.landscape.directions import (
                                                  IGNORE_CHOICES,
                                                  NORMALIZATIONS,
                                                  Direction,
                                                  Directions,
                                                  directions_to_models,
                                                  filter_norms,
                                                  normalize_direction,
                                                  random_directions,
                                                  trajectory_pca_directions,
)
from analysis.probes.landscape.engines import ENGINES, PRECISIONS, GroupedForward, GroupedUnsupported
from analysis.probes.landscape.grid import grid_axis
from analysis.probes.landscape.memory import auto_chunk_size
from analysis.probes.landscape.problem import LossFn
from analysis.probes.landscape.result import LandscapeResult, merge_landscapes

__all__ = [
    "NORMALIZATIONS",
    "IGNORE_CHOICES",
    "BN_CHOICES",
    "ENGINES",
    "PRECISIONS",
    "Direction",
    "LossFn",
    "Directions",
    "bn_statistics",
    "random_directions",
    "normalize_direction",
    "directions_to_models",
    "trajectory_pca_directions",
    "filter_norms",
    "resolve_bn",
    "grid_axis",
    "LandscapeResult",
    "loss_landscape",
    "loss_landscape_reference",
    "merge_landscapes",
    "auto_chunk_size",
    "GroupedForward",
    "GroupedUnsupported",
]
