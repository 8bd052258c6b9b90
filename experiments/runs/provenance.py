"""Where a result came from: the code (git commit, dirty or not), the packages, the machine.

Every artefact the project writes (run directories' ``environment.json``, reproductions, the
audit's JSON/CSV/markdown, notebooks, benchmark outputs) records ``provenance()``, so a number can
be traced to the commit and the machine that made it, and two results that the environment makes
different can be told apart. ``numeric_environment()`` is the part of it that changes CPU float
results: torch's kernel set (``torch.backends.cpu.get_cpu_capability()``) and the thread count.
"""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["provenance", "git_state", "cpu_model", "numeric_environment", "provenance_line"]

_REPO = Path(__file__).resolve().parents[2]
# The folders whose changes change what the code computes; reports/ and stores are outputs, so an
# audit that rewrites reports/AUDIT.md does not make its own commit "dirty".
_CODE_PATHS = ("analysis", "experiments", "theory_checks", "pyproject.toml")


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """``{"commit", "dirty", "dirty_files"}`` of the checkout this package runs from.

    ``commit`` is ``"unknown"`` outside a git checkout (an installed wheel); ``dirty`` is True when
    tracked code files differ from the commit (``dirty_files`` names up to 20 of them).
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no", "--",
                                            *_CODE_PATHS).splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None, "dirty_files": []}
    return {"commit": commit, "dirty": bool(changed), "dirty_files": changed[:20]}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``platform.processor()`` where that is absent."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numeric_environment(device: str = "cpu", threads: int | None = None) -> str:
    """A short tag of what changes float results on ``device``: ``"cpu-AVX512-t1"``, ``"cuda"``.

    On the CPU torch picks its vectorised kernels by ``get_cpu_capability()`` and splits reductions
    over its threads, so either changes the rounding of a run (and a chaotic training run
    amplifies it: 1 vs 2 threads gave 42% vs 20% test accuracy in one probe). On a GPU the kernels
    are not bit-reproducible from run to run anyway, so the tag is just ``"cuda"``.
    """
    kind = str(device).split(":")[0]
    if kind != "cpu":
        return kind
    n = threads if threads is not None else torch.get_num_threads()
    return f"cpu-{torch.backends.cpu.get_cpu_capability()}-t{n}"


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "numpy", "scipy", "pandas", "hypothesis", "scikit-learn", "loss-landscapes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def provenance(device: str = "cpu", **extra) -> dict:
    """Commit, dirty flag, package versions and machine of this process, for an artefact's metadata.

    Keys: ``commit``, ``dirty``, ``dirty_files``, ``versions`` (python, torch, numpy, scipy, pandas,
    hypothesis, scikit-learn, loss-landscapes), ``machine`` (platform, cpu, cores,
    ``cpu_capability``, ``torch_threads``), ``device`` (with the GPU's name on CUDA),
    ``numeric_environment``, and ``command`` (this process's command line). ``extra`` is merged in.
    """
    machine = {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "torch_threads": torch.get_num_threads()}
    dev = {"name": str(device)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda)
    return {**git_state(), "versions": _versions(), "machine": machine, "device": dev,
            "numeric_environment": numeric_environment(device), "command": _command(), **extra}


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("blockaudit", "cli.py", "__main__.py")):
        argv[0] = "blockaudit"
    return " ".join(argv)


def provenance_line(p: dict) -> str:
    """One line for a report's header: commit (dirty), machine, device, versions."""
    v, m = p["versions"], p["machine"]
    dirty = " (dirty tree)" if p.get("dirty") else ""
    dev = p["device"].get("gpu") or p["device"]["name"]
    return (f"commit {p['commit'][:12]}{dirty}; {m['cpu']} ({m['cores']} cores, {m['cpu_capability']}, "
            f"{m['torch_threads']} torch threads), device {dev}; torch {v['torch']}, numpy {v['numpy']}, "
            f"python {v['python']}")
