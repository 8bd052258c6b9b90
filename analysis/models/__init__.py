"""The model zoo: one registry ``name -> builder`` and one way to build a model.

    >>> from analysis.models import build_model, list_models
    >>> model = build_model("a_resnest20", num_classes=10, width=4)

A builder is a plain function ``builder(num_classes, **options) -> nn.Module`` registered with
``@register_model(source=..., paper=...)``; ``source`` records where its architecture comes from
(``"paper"``: the text; ``"code"``: the authors' public code; ``"ours"``: our reading where
neither says). ``build_model`` rejects unknown names (listing the valid ones) and unknown options
(listing the builder's). ``model_info(name)`` returns the entry, ``count_parameters`` the number
of trainable parameters of a model or of a registered name built with the given options.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from analysis.validation import check_choice, check_int

__all__ = ["ModelEntry", "register_model", "build_model", "list_models", "model_info", "count_parameters"]

_SOURCES = ("paper", "code", "ours")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and where its architecture comes from."""

    name: str
    builder: Callable[..., nn.Module]
    source: str
    paper: str
    description: str
    options: tuple[str, ...] = field(default=())

    def defaults(self) -> dict:
        """The builder's option defaults (everything but ``num_classes``)."""
        sig = inspect.signature(self.builder)
        return {k: p.default for k, p in sig.parameters.items() if k in self.options}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, source: str, paper: str, description: str = ""):
    """Decorator registering ``builder(num_classes, **options)`` under ``name`` (default: its __name__)."""
    check_choice("source", source, _SOURCES)

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered (by {_REGISTRY[key].builder.__module__})")
        params = inspect.signature(builder).parameters
        if "num_classes" not in params:
            raise TypeError(f"builder {builder.__name__} must take a num_classes argument")
        options = tuple(k for k in params if k != "num_classes")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[key] = ModelEntry(key, builder, source, paper, doc, options)
        return builder

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"*resnest*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_info(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise a ``KeyError`` listing the valid ones."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(name: str, num_classes: int = 10, **options) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs and builder ``options``."""
    entry = model_info(name)
    num_classes = check_int("num_classes", num_classes, min_value=1)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}; valid options: {valid}")
    return entry.builder(num_classes=num_classes, **options)


def count_parameters(model: nn.Module | str, num_classes: int = 10, **options) -> int:
    """Number of trainable parameters of ``model`` (an ``nn.Module`` or a registered name)."""
    if isinstance(model, str):
        model = build_model(model, num_classes=num_classes, **options)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Importing the family modules registers their models.
from analysis.models import (  # noqa: E402,F401
    identity_resnet,
    newton_cgnet,
    newton_resnet,
    oai_nets,
    resnest_family,
    skeleton,
)
