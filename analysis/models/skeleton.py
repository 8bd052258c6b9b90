"""A user's residual block in a baseline's skeleton: the same stem, stages, widths and head.

``block_resnet(block="my_blocks.py:SEBlock", baseline="resnet20")`` is the pre-activation
ResNet-20 of ``analysis.models.resnest_family`` (stem conv, three stages of widths 16/32/64 with
strides 1/2/2, final BN-ReLU-pool-linear head) with every ``PreActBasicBlock`` replaced by
``SEBlock(in_channels, out_channels, stride)``. The comparison with the baseline is then controlled:
the parameter and FLOP difference is the block's own. The block keeps the initialisation its
constructor gives it; the stem and head get the baseline's.

A block is named by reference:

- ``path/to/file.py:NAME``: the file is imported as a module of its own (it may import anything
  on the Python path); ``NAME`` is an ``nn.Module`` class or a factory with the signature
  ``(in_channels, out_channels, stride)``;
- ``package.module:NAME``: a module on the Python path.

A *whole-model factory* is accepted too: a callable with a ``num_classes`` parameter (and, if it
takes them, ``width`` and ``in_channels``) that returns the whole network. It replaces the skeleton,
so the comparison is no longer controlled by construction: parameter and FLOP differences are the
model's, not one block's (``factory_kind`` tells the two apart by that parameter).

Run ids hash a run's config, not its code, so the builder takes ``block_sha256``, the SHA-256 of
the block's source file (``block_options(ref)`` gives both): editing the block changes the hash,
hence the run id, and a stored run whose block source has changed since refuses to load rather
than silently standing for the new code. The user's module is imported, never modified.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from analysis.models import register_model
from analysis.models.resnest_family import CifarResNEst
from analysis.validation import check_bool, check_choice, check_int

__all__ = ["ACTIVATION_MODULES", "remove_activations", "BASELINES", "BASELINE_BLOCK", "BlockSource", "load_block",
           "factory_kind", "block_options", "block_resnet"]

# Baselines whose residual block a user's block replaces: the standard pre-activation ResNets.
BASELINES = {"resnet20": 20, "resnet56": 56, "resnet110": 110}
# Their own block: the default, so ``block_resnet`` alone is the baseline (and ``blockaudit models`` can count it).
BASELINE_BLOCK = "analysis.models.blocks:PreActBasicBlock"


# Activation modules ``activations=False`` replaces by the identity (the linear mode of the NRL-linear
# test, generalised). Activations a block applies as functions in its forward (F.relu, torch.sigmoid)
# cannot be reached from outside and stay: ``remove_activations`` returns how many modules it replaced.
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                      nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh)


def remove_activations(model: nn.Module) -> int:
    """Replace every activation module of ``model`` (this instance, not the user's classes) by ``nn.Identity``."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTIVATION_MODULES):
                setattr(parent, name, nn.Identity())
                replaced += 1
    return replaced


@dataclass(frozen=True)
class BlockSource:
    """A loaded block reference: the factory, its source file and that file's SHA-256."""

    ref: str
    factory: Callable[..., nn.Module]
    path: Path
    sha256: str


def _split_ref(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"block reference {ref!r} must look like FILE.py:NAME or package.module:NAME")
    where, _, name = ref.rpartition(":")
    if not where or not name.isidentifier():
        raise ValueError(f"block reference {ref!r} must look like FILE.py:NAME or package.module:NAME "
                         f"(NAME a Python identifier)")
    return where, name


def _module_from_file(path: Path, digest: str):
    # One module per file content: rebuilding a model reuses the classes, and an edited file is a new module.
    key = f"blockaudit_user_block_{digest[:16]}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def load_block(ref: str) -> BlockSource:
    """Import the block ``ref`` (module docstring) and hash its source file; errors name what was tried."""
    where, name = _split_ref(ref)
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"block file {where!r} not found (tried {path.resolve()})")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        module = _module_from_file(path, digest)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"block module {where!r} is not importable ({exc}); give a file as "
                                      f"FILE.py:NAME or put the module on PYTHONPATH") from None
        source = inspect.getsourcefile(module)
        if source is None:
            raise ValueError(f"block module {where!r} has no Python source file to hash")
        path = Path(source)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        found = sorted(k for k, v in vars(module).items()
                       if not k.startswith("_") and inspect.isclass(v) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__)
        what = "is not defined" if factory is None else f"is a {type(factory).__name__}, not callable"
        raise ValueError(f"{name!r} {what} in {path}; nn.Module classes defined there: "
                         f"{', '.join(found) or 'none'}")
    return BlockSource(ref, factory, path, digest)


def factory_kind(factory: Callable) -> str:
    """``"model"`` for a whole-model factory (it has a ``num_classes`` parameter), else ``"block"``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: called as a block
        return "block"
    return "model" if "num_classes" in params else "block"


def _whole_model(src: BlockSource, num_classes: int, width: int, in_channels: int) -> nn.Module:
    params = inspect.signature(src.factory).parameters
    kwargs = {"num_classes": num_classes, **{k: v for k, v in (("width", width), ("in_channels", in_channels))
                                             if k in params}}
    call = f"{src.ref}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    model = src.factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {call} returned a {type(model).__name__}; expected an nn.Module")
    x = torch.randn(2, in_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported with the shapes involved
        raise ValueError(f"model {call} failed on an input of shape {tuple(x.shape)} (expected output "
                         f"(2, {num_classes})): {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model {call} maps an input of shape {tuple(x.shape)} to {got}; expected logits of "
                         f"shape (2, {num_classes}), i.e. (N, num_classes)")
    return model


def block_options(ref: str, baseline: str = "resnet20") -> dict:
    """The model options of ``block_resnet`` for the block ``ref`` as its source is now (with its hash)."""
    check_choice("baseline", baseline, tuple(BASELINES))
    return {"block": ref, "block_sha256": load_block(ref).sha256, "baseline": baseline}


@register_model(source="ours", paper="user",
                description="a user's residual block (block=FILE.py:NAME) in a baseline ResNet's skeleton")
def block_resnet(num_classes: int = 10, block: str = BASELINE_BLOCK, block_sha256: str = "", baseline: str = "resnet20",
                 width: int = 16, in_channels: int = 3, activations: bool = True) -> nn.Module:
    """The ``baseline``'s skeleton with its residual blocks replaced by ``block`` (module docstring)."""
    if not block:
        raise ValueError("block_resnet needs the block option: block='FILE.py:NAME' or 'package.module:NAME'")
    baseline = check_choice("baseline", baseline, tuple(BASELINES))
    width = check_int("width", width, min_value=1)
    src = load_block(block)
    if block_sha256 and block_sha256 != src.sha256:
        raise ValueError(f"the source of block {block!r} changed since this config was made: {src.path} has "
                         f"SHA-256 {src.sha256[:12]}..., the config {block_sha256[:12]}...; its stored runs are of "
                         "the old code. Audit the new code under a new run id (blockaudit fills in the hash), "
                         "or restore the old file to read them")
    if factory_kind(src.factory) == "model":
        model = _whole_model(src, num_classes, width, in_channels)
    else:
        model = CifarResNEst(depth=BASELINES[baseline], variant="standard", num_classes=num_classes, width=width,
                             in_channels=in_channels, block=src.factory)
    if not check_bool("activations", activations):
        remove_activations(model)
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model(torch.randn(2, in_channels, 32, 32, generator=torch.Generator().manual_seed(0)))
        model.train(was)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"the {baseline} skeleton with block {block!r} gives non-finite outputs at "
                         "initialisation on a seeded N(0, 1) input")
    return model
