"""A-ResNEst-20 (RN: Chen et al., NeurIPS 2021) as a whole-model factory for ``blockaudit audit-block``.

The example of a paper's claim said through the generic path: ``a_resnest.toml`` restates RN-cifar's
comparison "A-ResNEst at most 0.5 pt below the standard ResNet" as an ``accuracy`` claim, and the
block audit trains the same nets on the same seeds and data as the paper's quick check
(``experiments.claims.rn``), so it gets the same numbers and the same verdict.

A factory with a ``num_classes`` parameter is a whole model: it replaces the baseline's skeleton.
"""
from analysis.models.resnest_family import CifarResNEst


def a_resnest20(num_classes=10, width=16, in_channels=3):
    """A-ResNEst-20: the sum of linear heads on the pooled input and every block's mid feature."""
    return CifarResNEst(depth=20, variant="a_resnest", num_classes=num_classes, width=width, in_channels=in_channels)
