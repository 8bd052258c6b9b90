"""``loss_landscape``: the loss on a grid around trained weights, through one of the engines; and
``loss_landscape_reference``, the same grid one point at a time with the model's own layers.

``loss_landscape`` validates and prepares its inputs once (``problem.prepare``), takes the engine
from the registry (``engines``), and evaluates the points chunk by chunk: resuming a partial result,
checkpointing after every chunk, re-evaluating in float32 the points where a reduced precision
overflowed, and gathering the shards of a distributed run.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from analysis.probes.landscape.directions import Directions
from analysis.probes.landscape.engines import (
    PRECISIONS,
    ChunkFn,
    EngineRequest,
    PointEvaluator,
    build_chunk_fn,
    choose_engine,
    engine_names,
    get_engine,
)
from analysis.probes.landscape.grid import grid_points, process_group_shard, shard_points
from analysis.probes.landscape.problem import LossFn, Problem, loss_name, prepare
from analysis.probes.landscape.result import LandscapeResult, all_gather_result, new_result
from analysis.validation import check_bool, check_choice, check_int

__all__ = ["loss_landscape", "loss_landscape_reference"]


def loss_landscape(
    model: nn.Module,
    directions: Directions,
    data,
    alphas,
    betas=None,
    *,
    bn: str | None = None,
    recalibration_data=None,
    loss_fn: LossFn | None = None,
    chunk_size: int | None = None,
    resume: LandscapeResult | None = None,
    checkpoint_path=None,
    shard: tuple[int, int] | None = None,
    distributed: bool = False,
    engine: str = "auto",
    precision: str = "float32",
    compile: bool | None = None,
    progress: bool = False,
) -> LandscapeResult:
    """Loss and accuracy of ``model`` on ``data`` over a 1-D or 2-D grid, many points per forward.

    Parameters
    ----------
    model:
        The trained model (never modified; BN layers and dropout are handled on a deep copy).
    directions:
        1 or 2 directions (``Directions``); their count sets the grid's dimension.
    data:
        One ``(inputs, targets)`` batch or an iterable of them (a DataLoader); loss and accuracy
        are averaged over all samples. NaN or infinite inputs (or float targets) raise ValueError.
    alphas, betas:
        Grid coordinates (``grid_axis``); ``betas`` only for 2 directions. Any shapes.
    bn:
        ``"eval"``, ``"recalibrate"`` or ``"perturbed"`` (``analysis.probes.landscape.batchnorm``);
        required for a train-mode BN model.
    recalibration_data:
        Batches for ``bn="recalibrate"`` (default: ``data``).
    loss_fn:
        ``loss_fn(logits, targets) -> per-sample losses`` (default cross entropy); must be
        vmap-compatible.
    chunk_size:
        Grid points per batched forward (default ``auto_chunk_size``). The grouped and compiled
        engines pad the last chunk to this size (fixed shapes: one compilation).
    resume, checkpoint_path, shard:
        Continue a partial result (its NaN points are evaluated); ``result.save(checkpoint_path)``
        after every chunk; evaluate only the flat (row-major) points ``p`` with
        ``p % world_size == rank`` for ``shard=(rank, world_size)``.
    distributed:
        Take ``shard`` from the initialised ``torch.distributed`` process group (rank, world
        size), evaluate that shard and all-gather the shards: every rank returns the full grid.
        A checkpoint then goes to ``checkpoint_path`` + ``.rank<r>of<w>`` per rank.
    engine:
        ``"auto"`` (default: ``choose_engine``), ``"sequential"`` (one point at a time), ``"vmap"``
        (the exact path), ``"grouped"`` (``GroupedForward``: P points as one
        grouped-convolution network) or ``"compiled"`` (``torch.compile`` of the vmap path); any
        engine registered in ``analysis.probes.landscape.engines``.
        ``"grouped"`` falls back to ``"vmap"`` with a warning naming the reason for a model it
        cannot run or for ``bn="recalibrate"``.
    precision:
        ``"float32"`` or a reduced precision (``"bfloat16"``, ``"float16"``) for the fast engines
        (autocast for ``"compiled"``, weights and activations cast for ``"grouped"``); losses
        are reduced in float32 and summed in float64.
    compile:
        ``torch.compile`` the grouped engine's chunk function (default: on CUDA only).
    progress:
        A tqdm bar over chunks (on stderr).
    """
    check_bool("distributed", distributed)
    # the live registry (ENGINES plus any engine registered since), so a new engine needs no edit here
    check_choice("engine", engine, ("auto", *engine_names()))
    check_choice("precision", precision, PRECISIONS)
    if compile is not None:
        check_bool("compile", compile)
    if distributed:
        if shard is not None:
            raise ValueError("pass either shard=(rank, world_size) or distributed=True, not both "
                             "(distributed=True takes the shard from the process group)")
        shard = process_group_shard()
    problem = prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn)
    if engine != "auto":
        get_engine(engine).check_precision(precision)
    points = grid_points(problem.alphas, problem.betas)
    todo = shard_points(points.shape[0], shard)
    result, todo = _start_result(model, directions, problem, loss_fn, resume, todo)
    if shard is not None and not distributed:
        result.meta["shard"] = [int(shard[0]), int(shard[1])]

    ref = next(iter(problem.weights.values()))
    chosen = choose_engine(engine, ref.device, precision)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, min_value=1)
    else:
        chunk_size = get_engine(chosen).chunk_size(model, problem, todo.size)
    request = EngineRequest(model, problem, precision, compile, requested=engine != "auto")
    used_engine, precision, chunk_fn = build_chunk_fn(chosen, request, result.meta)
    result.meta.update({"chunk_size": int(chunk_size), "engine": used_engine, "precision": precision})

    if checkpoint_path is not None and distributed:
        checkpoint_path = f"{checkpoint_path}.rank{shard[0]}of{shard[1]}"
    _evaluate_chunks(result, model, problem, points, todo, chunk_fn, chunk_size, get_engine(used_engine).pads_chunks,
                     precision, checkpoint_path, progress)
    if distributed:
        result = all_gather_result(result)
    return result


def _start_result(model, directions: Directions, problem: Problem, loss_fn, resume, todo: np.ndarray):
    """The result to fill (``resume``'s copy, checked against the grid, or an all-NaN one) and the
    flat indices of ``todo`` it still lacks."""
    alphas, betas, bn_mode = problem.alphas, problem.betas, problem.bn_mode
    if resume is not None:
        if not isinstance(resume, LandscapeResult):
            raise TypeError(f"resume must be a LandscapeResult; got {type(resume).__name__}")
        same = (np.array_equal(resume.alphas, alphas)
                and ((betas is None and resume.betas is None)
                     or (betas is not None and resume.betas is not None and np.array_equal(resume.betas, betas))))
        if not same:
            raise ValueError("resume is a result on another grid; pass the same alphas/betas to continue it")
        if resume.directions.get("seed") != directions.seed or resume.bn != bn_mode:
            raise ValueError(f"resume was made with other directions or BN choice (seed "
                             f"{resume.directions.get('seed')} vs {directions.seed}, bn {resume.bn!r} vs {bn_mode!r})")
        result = LandscapeResult(resume.alphas, resume.betas, resume.loss.copy(), resume.accuracy.copy(),
                                 resume.directions, resume.bn, resume.num_samples, resume.loss_name, dict(resume.meta))
        return result, todo[~np.isfinite(result.loss.reshape(-1)[todo])]
    ref = next(iter(problem.weights.values()))
    meta = {"model": type(model).__name__, "dtype": str(ref.dtype), "device": str(ref.device)}
    return new_result(alphas, betas, directions, bn_mode, problem.num_samples, loss_name(loss_fn), meta), todo


def _evaluate_chunks(result: LandscapeResult, model: nn.Module, problem: Problem, points: np.ndarray,
                     todo: np.ndarray, chunk_fn: ChunkFn, chunk_size: int, pad: bool, precision: str,
                     checkpoint_path, progress: bool) -> None:
    """Fill ``result`` at the flat points ``todo``, ``chunk_size`` at a time (padded to it when ``pad``)."""
    ref = next(iter(problem.weights.values()))
    num_samples = problem.num_samples
    chunks = [todo[i:i + chunk_size] for i in range(0, todo.size, chunk_size)]
    iterator = tqdm(chunks, desc="landscape", unit="chunk") if progress else chunks
    flat_loss, flat_acc = result.loss.reshape(-1), result.accuracy.reshape(-1)
    # Wall time of the first chunk (compilation and warm-up land there) and of the rest (the
    # steady state); the .cpu() copy of every chunk's result synchronises the device.
    timing = {"first_chunk_s": 0.0, "rest_s": 0.0, "rest_points": 0}
    # Reduced precision: a point whose loss overflowed (float16's largest value is 65504; far from
    # the minimum activations grow past it) is evaluated again in float32, one point at a time with
    # the model's own layers, so the grid holds the true value and not a NaN hole.
    exact_point = None
    fallback = []
    with torch.no_grad():
        for n, idx in enumerate(iterator):
            t0 = time.perf_counter()
            coeff = torch.as_tensor(points[idx], dtype=ref.dtype, device=ref.device)
            if pad and len(idx) < chunk_size:
                coeff = torch.cat([coeff, coeff[-1:].expand(chunk_size - len(idx), -1)])
            tot_loss, tot_correct = chunk_fn(coeff)
            flat_loss[idx] = (tot_loss[:len(idx)] / num_samples).cpu().numpy()
            flat_acc[idx] = (tot_correct[:len(idx)] / num_samples).cpu().numpy()
            if precision != "float32":
                for i in idx[~np.isfinite(flat_loss[idx])]:
                    if exact_point is None:
                        exact_point = PointEvaluator(model, problem)
                    tot, correct = exact_point(points[i])
                    flat_loss[i], flat_acc[i] = tot / num_samples, correct / num_samples
                    fallback.append(int(i))
            if n == 0:
                timing["first_chunk_s"] = time.perf_counter() - t0
            else:
                timing["rest_s"] += time.perf_counter() - t0
                timing["rest_points"] += len(idx)
            if checkpoint_path is not None:
                result.save(checkpoint_path)
    result.meta["timing"] = timing
    if precision != "float32":
        # flat indices of the points computed in float32 because the reduced precision overflowed there
        earlier = result.meta.get("float32_fallback_points", [])  # a resumed grid keeps its earlier ones
        result.meta["float32_fallback_points"] = sorted(set(earlier) | set(fallback))


def loss_landscape_reference(
    model: nn.Module,
    directions: Directions,
    data,
    alphas,
    betas=None,
    *,
    bn: str | None = None,
    recalibration_data=None,
    loss_fn: LossFn | None = None,
    progress: bool = False,
) -> LandscapeResult:
    """The same grid as ``loss_landscape``, one point at a time with the model's own layers.

    A deep copy of ``model`` gets each point's parameters by ``copy_``; for ``bn="recalibrate"``
    its nn.BatchNorm layers are reset, given ``momentum=None`` and run in train mode over the
    recalibration batches (PyTorch's own running-stat update), then everything is evaluated in
    eval mode; for ``bn="perturbed"`` the running statistics are set to the moved ones (a
    negative variance clamped at 0). Independent of the vmap machinery: the reference for tests
    and benchmarks (the "sequential evaluator").
    """
    problem = prepare(model, directions, alphas, betas, data, bn, recalibration_data, loss_fn)
    points = grid_points(problem.alphas, problem.betas)
    num_samples = problem.num_samples
    result = new_result(problem.alphas, problem.betas, directions, problem.bn_mode, num_samples,
                        loss_name(loss_fn), {"model": type(model).__name__, "evaluator": "reference"})
    evaluate_point = PointEvaluator(model, problem)
    flat_loss, flat_acc = result.loss.reshape(-1), result.accuracy.reshape(-1)
    iterator = enumerate(points)
    if progress:
        iterator = tqdm(iterator, total=len(points), desc="landscape (reference)", unit="point")
    for p, coord in iterator:
        tot_loss, correct = evaluate_point(coord)
        flat_loss[p] = tot_loss / num_samples
        flat_acc[p] = correct / num_samples
    return result
