"""Which dataset a check trains on: the full profile's CIFAR from ``--data``, and one cached load per audit."""
from __future__ import annotations

import json
from pathlib import Path

from experiments.runs.data import data_roots, load_dataset


def full_dataset(data_path: str | Path | None) -> tuple[str, dict, str]:
    """``(dataset, dataset_options, description)`` of the full profile's CIFAR-10 from ``--data``.

    ``None``: ``cifar10-jpeg.zip`` found under ``experiments.runs.data.data_roots()``. A ``.zip`` file or a
    folder with ``train/`` and ``test/``: the JPEG copy (``cifar10_jpeg``). A folder that is or
    holds torchvision's ``cifar-10-batches-py``: the original pickles (``cifar10``). A folder that
    holds ``cifar10-jpeg.zip`` or ``cifar10-jpeg/``: that.
    """
    jpeg = "JPEG CIFAR-10 (quality ~75)"
    if data_path is None:
        return "cifar10_jpeg", {}, jpeg
    p = Path(data_path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--data {p}: no such file or folder; give cifar10-jpeg.zip, an extracted "
                                f"train/ + test/ JPEG tree, or the folder holding cifar-10-batches-py")
    if p.is_file():
        if p.suffix.lower() != ".zip":
            raise ValueError(f"--data {p}: a file must be a zip of train/<class>/*.jpg + test/<class>/*.jpg "
                             f"(cifar10-jpeg.zip); got a {p.suffix or 'suffix-less'} file")
        return "cifar10_jpeg", {"path": str(p)}, jpeg
    if p.name == "cifar-10-batches-py" or (p / "data_batch_1").exists():
        return "cifar10", {"root": str(p)}, "CIFAR-10 (original pickles)"
    if (p / "cifar-10-batches-py").is_dir():
        return "cifar10", {"root": str(p)}, "CIFAR-10 (original pickles)"
    if (p / "train").is_dir() and (p / "test").is_dir():
        return "cifar10_jpeg", {"path": str(p)}, jpeg
    for child in ("cifar10-jpeg.zip", "cifar10-jpeg"):
        if (p / child).exists():
            return "cifar10_jpeg", {"path": str(p / child)}, jpeg
    raise FileNotFoundError(f"--data {p}: found no CIFAR-10 there; expected cifar10-jpeg.zip, a folder with "
                            f"train/ and test/ (JPEG tree), cifar-10-batches-py/ (torchvision pickles) or a folder "
                            f"holding one of them")


def cifar100_dataset(data_path: str | Path | None) -> tuple[str, dict, str]:
    """``(dataset, dataset_options, description)`` of CIFAR-100 for a full-profile check (NRL-c100).

    Looks for torchvision's ``cifar-100-python`` folder (``train``, ``test``, ``meta``) at ``--data``
    itself, beside it (the folder holding it, or holding the CIFAR-10 zip given as ``--data``), then
    in ``experiments.runs.data.data_roots()``; raises ``FileNotFoundError`` naming every place tried.
    """
    roots: list[Path] = []
    if data_path is not None:
        p = Path(data_path).expanduser()
        roots += [p] if p.is_dir() else []
        roots += [p.parent]
    roots += data_roots()
    tried = []
    for root in roots:
        for folder in (root if root.name == "cifar-100-python" else root / "cifar-100-python",):
            if folder in tried:
                continue
            tried.append(folder)
            if all((folder / f).is_file() for f in ("train", "test", "meta")):
                return "cifar100", {"root": str(folder)}, "CIFAR-100 (original pickles)"
    raise FileNotFoundError(
        "needs CIFAR-100 (torchvision's cifar-100-python folder with train, test and meta), which is not in "
        "shared/data; looked in: " + ", ".join(str(t) for t in tried) + ". Put cifar-100-python beside the --data "
        "path (or extract cifar-100-python.tar.gz into one of these folders) and run the full audit again")


def data_key(dataset: str, options: dict) -> str:
    return json.dumps([dataset, options], sort_keys=True)


def load_data(dataset: str, options: dict, cache: dict | None):
    """``load_dataset(dataset, **options)``, kept in ``cache`` (one dataset at a time) for reuse."""
    key = data_key(dataset, options)
    if cache is not None and key in cache:
        return cache[key]
    data = load_dataset(dataset, **options)
    if cache is not None:
        cache.clear()
        cache[key] = data
    return data


def dataset_for(spec, cache: dict | None):
    """The sweep's dataset, loaded once per audit (every check of a profile uses the same one)."""
    return load_data(spec.base.get("dataset", "digits"), spec.base.get("dataset_options", {}), cache)
