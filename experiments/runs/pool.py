"""Training runs one by one or in a pool of spawned worker processes; a failed run is recorded, not fatal."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from experiments.runs.data import load_dataset
from experiments.runs.store import TrainConfig
from experiments.runs.sweep_config import RunSpec
from experiments.runs.train import train

__all__ = ["train_one", "run_pool", "check_devices", "record_error"]

def _data_key(config: TrainConfig) -> str:
    return json.dumps([config.dataset, config.dataset_options], sort_keys=True, default=str)


def record_error(run_dir: Path, exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(text)
    except OSError:
        pass
    return f"{type(exc).__name__}: {exc}"


def train_one(config: TrainConfig, run_dir: Path, data_cache: dict, data, progress: bool,
               max_epochs: int | None) -> str | None:
    """Train one run; return None or the error (the traceback goes to RUN_DIR/error.txt)."""
    try:
        (run_dir / "error.txt").unlink(missing_ok=True)
        if data is None:
            key = _data_key(config)
            if key not in data_cache:
                data_cache.clear()  # one dataset in memory at a time (CIFAR-10 is 184 MB as uint8)
                data_cache[key] = load_dataset(config.dataset, show_progress=progress, **config.dataset_options)
            data = data_cache[key]
        train(config, run_dir, progress=progress, data=data, max_epochs_this_call=max_epochs)
        return None
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        return record_error(run_dir, exc)


# Per worker process: the dataset handed over once at start (or loaded by its first run), so a
# worker loads it once rather than once per run. Only ever set inside spawned workers.
_WORKER: dict = {}


def _worker_init(threads: int, data, parent_pid: int | None = None) -> None:
    # Ctrl-C reaches the whole process group; the sweep process alone handles it (it stops the
    # workers, run_pool), so the workers print no tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    _WORKER.update(data=data, cache={})


# Seconds between the watchdog's looks at the parent (the fallback where prctl is missing).
_PARENT_POLL_SECONDS = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the sweep process ``parent_pid`` dies, even by ``kill -9``.

    Otherwise an orphaned worker finishes its run and then waits forever for work (it holds a write
    end of its own task queue, so it never sees EOF). Linux: the kernel sends SIGKILL when the parent
    dies (prctl PR_SET_PDEATHSIG). Everywhere, and as a backstop (that signal follows the parent
    *thread* that spawned the worker): a daemon thread that exits once this process's parent is no
    longer ``parent_pid``. Killing is safe: checkpoints are written atomically, so the run resumes
    from its last finished epoch.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1  # <linux/prctl.h>
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc prctl (an odd libc): the watchdog below still ends the worker
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="sweep-parent-watchdog", daemon=True).start()


def _worker_train(config_dict: dict, run_dir: str, max_epochs: int | None) -> str | None:
    return train_one(TrainConfig.from_dict(config_dict), Path(run_dir), _WORKER["cache"], _WORKER["data"],
                      False, max_epochs)


def check_devices(runs: list[RunSpec]) -> None:
    for dev in sorted({r.config.device for r in runs}):
        try:
            parsed = torch.device(dev)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {dev!r} is not a torch device ({exc}); e.g. 'cpu', 'cuda', 'cuda:1'") from None
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {dev!r} requested but torch.cuda.is_available() is False (torch "
                             f"{torch.__version__}); pass --device cpu / device='cpu' to run on the CPU")


def run_pool(todo: list[RunSpec], store: Path, workers: int, data, max_epochs: int | None,
              failures: dict, bar) -> None:
    n = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // n)
    keys = {_data_key(r.config) for r in todo}
    if data is None and len(keys) == 1:
        # Load once here and share it (torch tensors cross to spawned workers through shared memory):
        # otherwise every worker would decode the same archive, all racing to write one cache file.
        config = todo[0].config
        data = load_dataset(config.dataset, show_progress=bar is not None, **config.dataset_options)
    # spawn, not fork: a forked child of a process that has used CUDA (or torch's thread pools) can hang.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                               initargs=(threads, data, os.getpid()))
    interrupted = False
    try:
        futures = {pool.submit(_worker_train, r.config.to_dict(), str(run_dir(store, r)), max_epochs): r
                   for r in todo}
        for fut in as_completed(futures):
            run = futures[fut]
            try:
                err = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (BrokenProcessPool)
                err = record_error(run_dir(store, run), exc)
            if err is not None:
                failures[run.run_id] = err
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(run.run_id)
    except KeyboardInterrupt:
        # Stop the workers now rather than after their current runs (which may take hours): each
        # run resumes from its last checkpoint, written atomically, so nothing finished is lost.
        interrupted = True
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)


def run_dir(store: Path, run: RunSpec) -> Path:
    """``STORE/runs/<run_id>``."""
    return Path(store) / "runs" / run.run_id
