"""The ``"grouped"`` engine: the K points of a chunk as ONE network with K-fold channels.

``GroupedForward`` traces the model with ``torch.fx``: convs become grouped convs with the K weight
sets stacked, eval BatchNorm a per-channel affine, the final Linear a batched matmul, optionally in
bfloat16/float16, channels_last and ``torch.compile``d on CUDA. Models it cannot trace (channel
concatenation, ...) and ``bn="recalibrate"`` raise ``GroupedUnsupported``, and the vmap engine runs
instead (with a warning that names the reason when ``"grouped"`` was asked for by name).
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from analysis.probes.batches import FunctionalBatchNorm, functional_copy
from analysis.probes.landscape.engines.base import ChunkFn, Engine, EngineRequest, EngineUnsupported, register_engine
from analysis.probes.landscape.problem import Problem, moved, moved_statistics

__all__ = ["GroupedUnsupported", "GroupedForward", "GroupedEngine", "grouped_chunk_fn"]


class GroupedUnsupported(EngineUnsupported):
    """The model uses an operation the grouped engine cannot run with packed channels."""


_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Hardtanh,
)
_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub, torch.mul,
    torch.relu, torch.tanh, torch.sigmoid, F.relu, F.gelu, F.silu, F.elu, F.leaky_relu, F.relu6, F.softplus,
    F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "add", "mul", "sub", "contiguous"}


class _Packed:
    """A value of the grouped program: ``tensor`` holds P points' channels along dim 1 (point-major)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _flatten_is_per_sample(args, kwargs) -> bool:
    start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


class _Tracer(torch.fx.Tracer):
    """``torch.fx`` tracing that keeps every ``FunctionalBatchNorm`` as one leaf node."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, FunctionalBatchNorm) or super().is_leaf_module(m, qualname)


class GroupedForward:
    """``model``'s forward for P parameter sets at once, as one network with P-fold channels.

    Traced with ``torch.fx``; activations of the P points are packed along the channel dimension
    (point-major), so a convolution becomes one grouped convolution (groups multiplied by P,
    the P weight sets stacked along the output channels), an eval-mode BatchNorm a per-channel
    affine with the P points' scale and shift, a final ``nn.Linear`` a batched matrix product,
    and channel-wise ops (activations, pooling, residual additions) run unchanged. The first
    layer sees the shared input and becomes one convolution with P*C_out output channels.
    Anything else (``torch.cat`` on channels, attention, parameters used outside these layers,
    BatchNorm without running statistics) raises ``GroupedUnsupported`` naming the operation.
    """

    def __init__(self, clone: nn.Module) -> None:
        try:
            gm = torch.fx.GraphModule(clone, _Tracer().trace(clone))
        except Exception as exc:  # fx raises many types for untraceable control flow
            raise GroupedUnsupported(f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})") from None
        self.graph_module = gm
        modules = dict(gm.named_modules())
        self.nodes = []
        for node in gm.graph.nodes:
            if node.op == "call_module":
                m = modules[node.target]
                if isinstance(m, nn.Conv2d):
                    if m.padding_mode != "zeros" or isinstance(m.padding, str):
                        raise GroupedUnsupported(f"{node.target}: Conv2d with padding {m.padding!r} / "
                                                 f"padding_mode {m.padding_mode!r}")
                elif isinstance(m, FunctionalBatchNorm):
                    if not m.tracks:
                        raise GroupedUnsupported(f"{node.target}: BatchNorm without running statistics "
                                                 "(batch statistics mix the points' channels)")
                elif isinstance(m, nn.Flatten):
                    if not (m.start_dim == 1 and m.end_dim == -1):
                        raise GroupedUnsupported(f"{node.target}: Flatten({m.start_dim}, {m.end_dim})")
                elif not isinstance(m, (nn.Linear,) + _CHANNELWISE_MODULES):
                    raise GroupedUnsupported(f"{node.target}: module {type(m).__name__}")
                elif any(True for _ in m.parameters(recurse=False)) and not isinstance(m, nn.Linear):
                    raise GroupedUnsupported(f"{node.target}: {type(m).__name__} with parameters")
                self.nodes.append((node, m))
            elif node.op == "call_function":
                if node.target not in _ELEMENTWISE_FUNCTIONS and node.target is not torch.flatten:
                    raise GroupedUnsupported(f"function {getattr(node.target, '__name__', node.target)} "
                                             f"(node {node.name})")
                if node.target is torch.flatten and not _flatten_is_per_sample(node.args, node.kwargs):
                    raise GroupedUnsupported(f"torch.flatten with other than start_dim=1 (node {node.name})")
                self.nodes.append((node, None))
            elif node.op == "call_method":
                if node.target == "flatten" and not _flatten_is_per_sample(node.args, node.kwargs):
                    raise GroupedUnsupported(f"Tensor.flatten with other than start_dim=1 (node {node.name})")
                if node.target not in _ELEMENTWISE_METHODS | {"flatten"}:
                    raise GroupedUnsupported(f"method Tensor.{node.target} (node {node.name})")
                self.nodes.append((node, None))
            elif node.op == "get_attr":
                raise GroupedUnsupported(f"parameter or buffer {node.target} used outside a layer")
            elif node.op in ("placeholder", "output"):
                self.nodes.append((node, None))
        placeholders = [n for n, _ in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise GroupedUnsupported(f"forward takes {len(placeholders)} inputs; the grouped engine needs 1")
        self.module_names = {id(m): name for name, m in gm.named_modules()}

    def __call__(self, params: dict, buffers: dict, x: torch.Tensor, num_points: int,
                 dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
        """Logits ``(B, P, classes)``. ``params``/``buffers``: name -> (P, *shape) tensors (buffers only
        for BN statistics that vary per point; the others are taken from the model)."""
        P = num_points
        env: dict = {}

        def load(a):
            return torch.fx.node.map_arg(a, lambda n: env[n.name])

        def packed(v, like_channels: int | None = None):
            if isinstance(v, _Packed):
                return v.tensor
            if isinstance(v, torch.Tensor) and v.dim() >= 2:
                return v.repeat(1, P, *([1] * (v.dim() - 2)))  # shared value: every point sees it
            return v

        for node, m in self.nodes:
            if node.op == "placeholder":
                t = x.to(dtype)
                env[node.name] = t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
            elif node.op == "output":
                out = load(node.args[0])
                t = out.tensor if isinstance(out, _Packed) else out.repeat(1, P)
                return t.reshape(t.shape[0], P, -1)
            elif node.op == "call_module":
                arg = load(node.args[0])
                name = node.target
                if isinstance(m, nn.Conv2d):
                    w = params[f"{name}.weight"].to(dtype)
                    w = w.reshape(P * w.shape[1], *w.shape[2:])
                    if channels_last:
                        w = w.contiguous(memory_format=torch.channels_last)
                    b = params[f"{name}.bias"].to(dtype).reshape(-1) if m.bias is not None else None
                    if isinstance(arg, _Packed) or m.groups > 1:
                        y = F.conv2d(packed(arg), w, b, m.stride, m.padding, m.dilation, m.groups * P)
                    else:
                        y = F.conv2d(arg, w, b, m.stride, m.padding, m.dilation, 1)
                    env[node.name] = _Packed(y)
                elif isinstance(m, FunctionalBatchNorm):
                    mean = buffers.get(f"{name}.running_mean")
                    var = buffers.get(f"{name}.running_var")
                    mean = m.running_mean.unsqueeze(0) if mean is None else mean
                    var = m.running_var.unsqueeze(0) if var is None else var
                    scale = torch.rsqrt(var.float() + m.eps)
                    if m.weight is not None:
                        scale = scale * params[f"{name}.weight"].float()
                    shift = -mean.float() * scale
                    if m.weight is not None:
                        shift = shift + params[f"{name}.bias"].float()
                    c = m.num_features
                    scale = scale.expand(P, c).reshape(-1)
                    shift = shift.expand(P, c).reshape(-1)
                    t = packed(arg)
                    view = (1, -1) + (1,) * (t.dim() - 2)
                    env[node.name] = _Packed(t * scale.to(dtype).reshape(view) + shift.to(dtype).reshape(view))
                elif isinstance(m, nn.Linear):
                    w = params[f"{name}.weight"].to(dtype)  # (P, out, in)
                    b = params[f"{name}.bias"].to(dtype) if m.bias is not None else None
                    if isinstance(arg, _Packed):
                        t = arg.tensor
                        t = t.reshape(t.shape[0], P, -1)
                        y = torch.einsum("bpi,poi->bpo", t, w)
                        if b is not None:
                            y = y + b.unsqueeze(0)
                        env[node.name] = _Packed(y.reshape(y.shape[0], -1))
                    else:
                        env[node.name] = _Packed(F.linear(arg, w.reshape(-1, w.shape[-1]),
                                                          None if b is None else b.reshape(-1)))
                else:  # channel-wise module: the packed layout passes through
                    if isinstance(arg, _Packed):
                        env[node.name] = _Packed(m(arg.tensor))
                    else:
                        env[node.name] = m(arg)
            else:
                args, kwargs = load(node.args), load(node.kwargs)
                flat = list(args) + list(kwargs.values())
                if any(isinstance(a, _Packed) for a in flat):
                    args = tuple(packed(a) for a in args)
                    kwargs = {k: packed(v) for k, v in kwargs.items()}
                    wrap = _Packed
                else:
                    wrap = lambda t: t  # noqa: E731
                if node.op == "call_function":
                    env[node.name] = wrap(node.target(*args, **kwargs))
                else:
                    env[node.name] = wrap(getattr(args[0], node.target)(*args[1:], **kwargs))
        raise RuntimeError("the traced graph has no output node")


def grouped_chunk_fn(model, problem: Problem, precision: str, compile_fn: bool, channels_last: bool) -> ChunkFn:
    """Chunk evaluator of the grouped engine: coeff (K, ndir) -> (summed loss (K,), correct (K,)).

    Raises ``GroupedUnsupported`` for a model ``GroupedForward`` cannot run.
    """
    clone, _ = functional_copy(model)
    program = GroupedForward(clone)  # raises GroupedUnsupported
    names = list(problem.weights)
    ref = next(iter(problem.weights.values()))
    dtype = getattr(torch, precision)
    loss = problem.loss

    def metrics(coeff, x, y):
        k = coeff.shape[0]
        params = moved(problem.weights, problem.vectors, coeff, names)
        bufs = moved_statistics(problem, coeff) if problem.bn_mode == "perturbed" else {}
        logits = program(params, bufs, x, k, dtype, channels_last).float()  # (B, K, classes)
        logits = logits.transpose(0, 1)
        per_sample = loss(logits.reshape(-1, logits.shape[-1]), y.repeat(k)).reshape(k, -1)
        correct = (logits.argmax(dim=-1) == y.unsqueeze(0)).sum(dim=1)
        return per_sample.sum(dim=1), correct

    fn = torch.compile(metrics, dynamic=False) if compile_fn else metrics

    def chunk(coeff: torch.Tensor):
        k = coeff.shape[0]
        tot_loss = torch.zeros(k, dtype=torch.float64, device=ref.device)
        tot_correct = torch.zeros(k, dtype=torch.float64, device=ref.device)
        for x, y in problem.batches:
            l, c = fn(coeff, x, y)
            tot_loss += l.double()
            tot_correct += c.double()
        return tot_loss, tot_correct

    return chunk


@register_engine
class GroupedEngine(Engine):
    """``GroupedForward`` chunks, padded to one shape; falls back to the vmap engine where it cannot run."""

    name = "grouped"
    pads_chunks = True
    fallback = "vmap"

    def build(self, request: EngineRequest) -> ChunkFn:
        problem = request.problem
        ref = next(iter(problem.weights.values()))
        if problem.bn_mode == "recalibrate":
            raise GroupedUnsupported("bn='recalibrate' (per-point batch statistics)")
        if not request.requested and ref.dtype != torch.float32:
            # the grouped engine computes in float32 or lower; "auto" must not drop a float64 model's precision
            raise GroupedUnsupported(f"the model is {ref.dtype}; the grouped engine computes in float32")
        return grouped_chunk_fn(request.model, problem, request.precision,
                                ref.device.type == "cuda" if request.compile is None else request.compile,
                                channels_last=ref.device.type == "cuda")
