"""Image datasets as uint8 tensors, and batched augmentation that runs where the tensors live.

Every loader returns an ``ImageDataset``: uint8 images ``N x 3 x 32 x 32``, int64 labels, the class
names, an optional validation split, and the per-channel mean/std of the *training* images (in
[0, 1] units, computed after the validation images are held out) used by ``normalize``.
``ImageDataset.to("cuda")`` moves the uint8 tensors to the device once (CIFAR-10 is 184 MB as
uint8); ``iterate_batches`` then shuffles, crops, flips and normalises there, so no host loader
sits between the data and the model.

Datasets (``list_datasets()``; options are the loader's keyword arguments):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, no
  download). Each 8x8 image (values 0..16) is scaled to 0..255 (``round(v * 255 / 16)``) and
  upsampled 4x by nearest-neighbour repetition to 32x32 (every pixel becomes a 4x4 patch: exact,
  no interpolation choice), then copied to 3 channels. Seeded, stratified train/test split.
- ``synthetic``: seeded class-conditional images for tests and timings: one smooth random
  template per class (a sum of low-frequency cosines per channel) plus per-image Gaussian noise
  and a random brightness shift; ``n_train`` / ``n_test`` / ``num_classes`` / ``noise`` are options.
- ``cifar10`` / ``cifar100``: the "python version" pickles in torchvision's download folders
  (``cifar-10-batches-py``: ``data_batch_1..5``, ``test_batch``, ``batches.meta``;
  ``cifar-100-python``: ``train``, ``test``, ``meta``), read with pickle + numpy, no torchvision.
  ``root`` may be the folder itself or its parent; without ``root`` the folders are looked for
  under ``$BLOCKAUDIT_DATA`` (``os.pathsep``-separated), ``./data``, the repository's ``data/``
  and ``shared/data/``, ``../shared/data`` beside the repository, ``~/.cache/blockaudit`` and
  ``~/data``. The pickles are read with an unpickler that only admits numpy arrays (a pickle can
  run code; these files come from the internet).
- ``image_folder``: a tree ``train/<class>/<image>`` + ``test/<class>/<image>`` (JPEG, PNG, ...)
  or a zip archive of one (one common top-level folder is allowed). Classes are the sorted
  folder names of ``train``; ``test`` must have the same ones. Images must be 32x32 (any mode;
  converted to RGB). Decoding runs in threads; ``cache_dir`` keeps the decoded arrays as an
  uncompressed ``.npz`` keyed by the source's path, size and modification time, so a second load
  skips decoding. ``limit`` keeps the first ``limit`` images (sorted names) of every class in each
  split, for quick looks at a large archive.
- ``cifar10_jpeg``: ``image_folder`` on ``cifar10-jpeg.zip`` (or an extracted ``cifar10-jpeg/``)
  found under the same roots as ``cifar10``, with CIFAR-10's checks: exactly its ten class names
  and, without ``limit``, 5,000 train / 1,000 test images per class. CIFAR-10's standard class
  order (airplane, automobile, ..., truck) is alphabetical, so sorted folder names give the
  standard label numbers.

``val_fraction`` (every loader) holds out that fraction of each training class as a validation
split, chosen by ``seed``; the test split is never touched.

Anything wrong with the data fails loudly: a missing dataset raises ``FileNotFoundError``
listing every path tried and how to get the data; a truncated or malformed pickle, archive or
image, wrong shapes, labels out of range, unexpected class names or an empty class folder raise
``ValueError`` naming the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from analysis.validation import check_choice, check_int, check_real

__all__ = [
    "ImageDataset", "DATASETS", "CIFAR10_CLASSES", "PAD_MODES", "load_dataset", "list_datasets",
    "load_digits", "load_synthetic", "load_cifar10", "load_cifar100", "load_image_folder",
    "load_cifar10_jpeg", "data_roots", "train_val_split", "subsample", "normalize", "augment_batch",
    "iterate_batches",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PAD_MODES = ("reflect", "zero")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")
_CACHE_VERSION = 1


@dataclass
class ImageDataset:
    """Train/test uint8 images (N x 3 x 32 x 32), int64 labels, and the train normalisation stats.

    ``val_images`` / ``val_labels`` are ``None`` unless the loader was asked for ``val_fraction``.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor  # (3,) float32, per channel, in [0, 1] units
    std: torch.Tensor  # (3,) float32
    num_classes: int
    class_names: tuple[str, ...] = ()
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def __repr__(self) -> str:
        val = "" if self.val_images is None else f", val={tuple(self.val_images.shape)}"
        return (f"ImageDataset({self.name!r}, train={tuple(self.train_images.shape)}{val}, "
                f"test={tuple(self.test_images.shape)}, classes={self.num_classes}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def to(self, device: str | torch.device) -> "ImageDataset":
        """A copy with every tensor on ``device`` (images stay uint8: 4x less memory than float32)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``."""
        check_choice("split", name, ("train", "val", "test"))
        if name == "val" and self.val_images is None:
            raise ValueError(f"dataset {self.name!r} has no validation split; load it with val_fraction > 0")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # From each channel's 256-bin histogram: exact in float64 without a float copy of the images
    # (CIFAR-10 in float64 would be 1.2 GB).
    counts = torch.stack([torch.bincount(images[:, c].reshape(-1), minlength=256)
                          for c in range(images.shape[1])]).to(torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum(1)
    mean = counts @ values / n
    # Unbiased (n - 1), as torch.std's default, to keep the statistics this module always had.
    std = (counts @ values.square() - n * mean.square()).clamp_min(0).div(n - 1).sqrt()
    # A constant channel would divide by zero; leave it unscaled.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.to(torch.float32), std.to(torch.float32)


def subsample(images: torch.Tensor, labels: torch.Tensor, max_samples: int | None,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_samples`` of a permutation seeded by ``seed`` (everything when None or larger)."""
    if max_samples is None or max_samples >= labels.shape[0]:
        return images, labels
    idx = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
    return images[idx], labels[idx]


def train_val_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted index arrays ``(train, val)``: ``round(val_fraction * n_c)`` images of each class c go to val.

    Stratified so a small validation set still sees every class in its proportion; ``seed`` picks
    which images, through its own numpy stream (not the one that shuffles batches).
    """
    labels = np.asarray(labels)
    val_fraction = check_real("val_fraction", val_fraction, min_value=0.0, max_value=1.0, include_max=False)
    seed = check_int("seed", seed, min_value=0)
    rng = np.random.default_rng([seed, 0x5EED])
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(val_fraction * members.size))
        val.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    if val_fraction > 0 and val_idx.size == 0:
        raise ValueError(f"val_fraction={val_fraction:g} holds out no image of {labels.size} training images; "
                         "raise it or set it to 0")
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx, assume_unique=True)
    return train_idx, val_idx


def _make(name, xtr, ytr, xte, yte, num_classes, class_names=(), val_fraction=0.0, seed=0) -> ImageDataset:
    xtr, ytr = np.ascontiguousarray(xtr), np.asarray(ytr, dtype=np.int64)
    xva = yva = None
    if val_fraction > 0:
        tr, va = train_val_split(ytr, val_fraction, seed)
        xva, yva = torch.from_numpy(xtr[va]), torch.from_numpy(ytr[va])
        xtr, ytr = xtr[tr], ytr[tr]
    xtr, xte = torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(np.ascontiguousarray(xte))
    mean, std = _channel_stats(xtr)
    names = tuple(class_names) or tuple(str(c) for c in range(num_classes))
    return ImageDataset(name, xtr, torch.from_numpy(np.ascontiguousarray(ytr)), xte,
                        torch.from_numpy(np.asarray(yte, dtype=np.int64)), mean, std, int(num_classes),
                        names, xva, yva)


def _check_val_fraction(val_fraction) -> float:
    return check_real("val_fraction", val_fraction, min_value=0.0, max_value=1.0, include_max=False)


# --- digits and synthetic ---------------------------------------------------------------------

def load_digits(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.0, size: int = 32) -> ImageDataset:
    """scikit-learn digits as ``size`` x ``size`` RGB uint8 (module docstring), stratified seeded split.

    ``size`` 32 (default, CIFAR's shape), 16 or 8 (the native images, 16x cheaper to train on: the
    quick empirical analogues of ``experiments.audit.empirical`` use it).
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    size = check_choice("size", size, (8, 16, 32))
    seed = check_int("seed", seed, min_value=0)
    test_fraction = check_real("test_fraction", test_fraction, min_value=0.0, max_value=1.0,
                               include_min=False, include_max=False)
    val_fraction = _check_val_fraction(val_fraction)
    bunch = _sk_digits()
    img = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    img = img.repeat(size // 8, axis=1).repeat(size // 8, axis=2)  # nearest-neighbour 8x8 -> size x size
    img = np.repeat(img[:, None], 3, axis=1)  # (N, 3, 32, 32)
    xtr, xte, ytr, yte = train_test_split(img, bunch.target, test_size=test_fraction,
                                          random_state=seed, stratify=bunch.target)
    return _make("digits", xtr, ytr, xte, yte, 10, val_fraction=val_fraction, seed=seed)


def load_synthetic(seed: int = 0, n_train: int = 512, n_test: int = 256, num_classes: int = 10,
                   noise: float = 40.0, val_fraction: float = 0.0) -> ImageDataset:
    """Seeded class-conditional 32x32 RGB images (module docstring); ``noise`` is the pixel std."""
    seed = check_int("seed", seed, min_value=0)
    n_train = check_int("n_train", n_train, min_value=1)
    n_test = check_int("n_test", n_test, min_value=1)
    num_classes = check_int("num_classes", num_classes, min_value=2)
    noise = check_real("noise", noise, min_value=0.0)
    val_fraction = _check_val_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    grid = np.arange(32) / 32.0
    templates = np.zeros((num_classes, 3, 32, 32))
    for c in range(num_classes):
        for ch in range(3):
            for _ in range(3):
                fy, fx = rng.integers(0, 4, size=2)
                phase = rng.uniform(0, 2 * np.pi, size=2)
                templates[c, ch] += rng.normal() * np.outer(np.cos(2 * np.pi * fy * grid + phase[0]),
                                                            np.cos(2 * np.pi * fx * grid + phase[1]))
    templates = 128 + 50 * templates / np.abs(templates).max()

    def sample(n):
        y = rng.integers(0, num_classes, size=n)
        x = templates[y] + rng.normal(0, noise, size=(n, 3, 32, 32)) + rng.normal(0, 10, size=(n, 1, 1, 1))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    return _make("synthetic", xtr, ytr, xte, yte, num_classes, val_fraction=val_fraction, seed=seed)


# --- where datasets live ----------------------------------------------------------------------

def data_roots() -> list[Path]:
    """The folders searched for datasets when no path is given, in order (module docstring)."""
    repo = Path(__file__).resolve().parents[2]
    env = [Path(p).expanduser() for p in os.environ.get("BLOCKAUDIT_DATA", "").split(os.pathsep) if p]
    candidates = env + [Path.cwd() / "data", repo / "data", repo / "shared" / "data", repo.parent / "shared" / "data",
                        Path.home() / ".cache" / "blockaudit", Path.home() / "data"]
    seen, roots = set(), []
    for p in candidates:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            roots.append(p)
    return roots


def _not_found(what: str, tried: Sequence[Path], how: str) -> FileNotFoundError:
    listing = "\n".join(f"  - {p}" for p in tried)
    return FileNotFoundError(f"{what} not found; tried:\n{listing}\n{how}")


_CIFAR_HOW = (
    "To get it: python -c \"import torchvision; torchvision.datasets.{tv}('DIR', download=True)\" "
    "(creates DIR/{folder}), or download https://www.cs.toronto.edu/~kriz/{tarball} and extract it into DIR; "
    "then pass root=DIR (blockaudit: --data-option root=DIR) or set BLOCKAUDIT_DATA=DIR.{extra}")


# --- CIFAR pickles ----------------------------------------------------------------------------

# The globals a CIFAR batch (a dict of bytes, lists and one uint8 array) needs, across numpy 1/2
# module names and pickle protocols 2-5.
_PICKLE_GLOBALS = {
    ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: a CIFAR batch holds only numpy arrays, "
                                         "lists and bytes")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, MemoryError) as exc:
        raise ValueError(f"corrupt CIFAR file {path}: {type(exc).__name__}: {exc}; "
                         "delete the folder and download the dataset again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"corrupt CIFAR file {path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _key(d: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    found = ", ".join(sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d))
    raise ValueError(f"corrupt CIFAR file {path}: no key {key!r}; keys found: {found}")


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(path)
    data = np.asarray(_key(d, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"corrupt CIFAR file {path}: 'data' must be a uint8 array of shape (N, 3072); "
                         f"got {data.dtype} {data.shape}")
    labels = np.asarray(_key(d, label_key, path))
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"corrupt CIFAR file {path}: {label_key!r} must be {data.shape[0]} integers (one per "
                         f"image); got {labels.dtype} {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(f"mislabelled CIFAR file {path}: {bad.size} {label_key!r} outside [0, {num_classes}), "
                         f"first at index {bad[0]}: {labels[bad[0]]}")
    # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major: channel-first already.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_names(path: Path, key: str, num_classes: int) -> tuple[str, ...]:
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in _key(_read_pickle(path), key, path))
    if len(names) != num_classes:
        raise ValueError(f"corrupt CIFAR file {path}: {key!r} lists {len(names)} names; expected {num_classes}")
    return names


def _find_cifar_folder(root, folder: str, files: Sequence[str], how: str, what: str) -> Path:
    roots = [Path(root).expanduser()] if root is not None else data_roots()
    tried = []
    for r in roots:
        for p in (r / folder, r):
            if p in tried:
                continue
            tried.append(p)
            if p.is_dir() and any((p / f).exists() for f in files):
                missing = [f for f in files if not (p / f).is_file()]
                if missing:
                    raise FileNotFoundError(f"incomplete {what} folder {p}: missing {', '.join(missing)}; "
                                            f"delete it and download again. {how}")
                return p
    raise _not_found(f"{what} ({folder})", tried, how)


def load_cifar10(root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.0) -> ImageDataset:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py`` (module docstring): 50,000 + 10,000 images."""
    seed = check_int("seed", seed, min_value=0)
    val_fraction = _check_val_fraction(val_fraction)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    how = _CIFAR_HOW.format(tv="CIFAR10", folder="cifar-10-batches-py", tarball="cifar-10-python.tar.gz",
                            extra=" A JPEG copy (cifar10-jpeg.zip) loads as dataset 'cifar10_jpeg'.")
    folder = _find_cifar_folder(root, "cifar-10-batches-py", files, how, "CIFAR-10")
    names = _cifar_names(folder / "batches.meta", "label_names", 10)
    if names != CIFAR10_CLASSES:
        raise ValueError(f"mislabelled CIFAR-10 meta file {folder / 'batches.meta'}: label_names {names}; "
                         f"expected {CIFAR10_CLASSES}")
    train = [_cifar_batch(folder / f, "labels", 10) for f in files[:5]]
    xte, yte = _cifar_batch(folder / "test_batch", "labels", 10)
    xtr, ytr = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    return _make("cifar10", xtr, ytr, xte, yte, 10, names, val_fraction, seed)


def load_cifar100(root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.0,
                  label_type: str = "fine") -> ImageDataset:
    """CIFAR-100 from torchvision's ``cifar-100-python``; ``label_type`` "fine" (100) or "coarse" (20 superclasses)."""
    seed = check_int("seed", seed, min_value=0)
    val_fraction = _check_val_fraction(val_fraction)
    label_type = check_choice("label_type", label_type, ("fine", "coarse"))
    num_classes = 100 if label_type == "fine" else 20
    how = _CIFAR_HOW.format(tv="CIFAR100", folder="cifar-100-python", tarball="cifar-100-python.tar.gz", extra="")
    folder = _find_cifar_folder(root, "cifar-100-python", ["train", "test", "meta"], how, "CIFAR-100")
    names = _cifar_names(folder / "meta", f"{label_type}_label_names", num_classes)
    xtr, ytr = _cifar_batch(folder / "train", f"{label_type}_labels", num_classes)
    xte, yte = _cifar_batch(folder / "test", f"{label_type}_labels", num_classes)
    name = "cifar100" if label_type == "fine" else "cifar100_coarse"
    return _make(name, xtr, ytr, xte, yte, num_classes, names, val_fraction, seed)


# --- image folders and zips of them -----------------------------------------------------------

class _Source:
    """A directory tree or a zip archive, read by member name ('train/cat/0001.jpg')."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        self._zip = None

    @property
    def zip(self) -> zipfile.ZipFile:
        # Opened on first use: reading CIFAR-10's central directory (60,000 entries) costs a second
        # that a cache hit does not need.
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ValueError(f"corrupt archive {self.path}: {exc}; a truncated download? re-create or "
                                 "re-download it") from None
        return self._zip

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def names(self) -> tuple[list[str], list[str]]:
        """(file names, folder names), '/'-separated and relative to the source."""
        if self.is_zip:
            files, dirs = [], []
            for info in self.zip.infolist():
                (dirs if info.is_dir() else files).append(info.filename.rstrip("/"))
            return files, dirs
        files, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = Path(dirpath).relative_to(self.path)
            dirs += [(rel / d).as_posix() for d in dirnames]
            files += [(rel / f).as_posix() for f in filenames]
        return files, dirs

    def read(self, name: str) -> bytes:
        # ZipFile serialises reads of one archive behind a lock, so worker threads may share it.
        if self.is_zip:
            try:
                return self.zip.read(name)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
                raise ValueError(f"corrupt member {name} of archive {self.path}: {exc}") from None
        return (self.path / name).read_bytes()

    def where(self, name: str) -> str:
        return f"{name} in {self.path}" if self.is_zip else str(self.path / name)

    def fingerprint(self) -> dict:
        """Changes whenever the content may have: the archive's size and mtime, or every file's."""
        if self.is_zip:
            st = self.path.stat()
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        h = hashlib.sha256()
        files, dirs = self.names()
        for m in sorted(files):
            st = (self.path / m).stat()
            h.update(f"{m}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        for d in sorted(dirs):  # an added empty class folder must not be served from the cache
            h.update(f"{d}/\n".encode())
        return {"listing": h.hexdigest()}


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _index_members(src: _Source, limit: int | None) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
    """Class names and, per split, the (member, label) pairs in sorted order; checks the layout."""
    files, dirs = src.names()
    files = [f for f in files if not any(_hidden(p) for p in f.split("/"))]
    dirs = [d for d in dirs if not any(_hidden(p) for p in d.split("/"))]
    tops = {n.split("/")[0] for n in files + dirs}
    prefix = ""
    if not tops & set(SPLITS) and len(tops) == 1:
        prefix = tops.pop() + "/"  # one wrapping folder, as "zip -r cifar10-jpeg.zip cifar10-jpeg" makes
    per_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for d in dirs:
        parts = d[len(prefix):].split("/") if d.startswith(prefix) else []
        if len(parts) == 2 and parts[0] in SPLITS:
            per_split[parts[0]].setdefault(parts[1], [])
    for f in files:
        if not f.startswith(prefix):
            continue
        parts = f[len(prefix):].split("/")
        if parts[0] not in SPLITS or not f.lower().endswith(IMAGE_EXTENSIONS):
            continue
        if len(parts) < 3:
            raise ValueError(f"image {src.where(f)} is not inside a class folder; expected "
                             f"{parts[0]}/<class>/<image>")
        per_split[parts[0]].setdefault(parts[1], []).append(f)
    for split in SPLITS:
        if not per_split[split]:
            raise ValueError(f"{src.path} has no {prefix}{split}/<class>/<image> files; an image-folder dataset "
                             f"needs train/<class>/*.jpg|png and test/<class>/*.jpg|png (found top level: "
                             f"{', '.join(sorted({n.split('/')[0] for n in files + dirs})) or 'nothing'})")
        for cls, members in per_split[split].items():
            if not members:
                raise ValueError(f"class folder {src.where(prefix + split + '/' + cls)} has no images "
                                 f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    classes = tuple(sorted(per_split["train"]))
    test_classes = set(per_split["test"])
    if test_classes != set(classes):
        raise ValueError(f"{src.path}: train and test class folders differ; only in train: "
                         f"{sorted(set(classes) - test_classes)}, only in test: {sorted(test_classes - set(classes))}")
    label = {c: i for i, c in enumerate(classes)}
    members = {s: [(m, label[c]) for c in classes for m in sorted(per_split[s][c])[:limit]] for s in SPLITS}
    return classes, members


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))  # convert() forces the full decode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot decode image {where}: {exc}; the file is corrupt") from None
    if arr.shape != (32, 32, 3):
        raise ValueError(f"image {where} is {arr.shape[1]}x{arr.shape[0]}; expected 32x32 (resize the dataset first)")
    return arr


def _decode_all(src: _Source, members: list[tuple[str, int]], workers: int, bar) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(members), 32, 32, 3), dtype=np.uint8)
    chunks = [range(i, min(i + 256, len(members))) for i in range(0, len(members), 256)]

    def work(chunk: range) -> int:
        for i in chunk:
            name = members[i][0]
            images[i] = _decode(src.read(name), src.where(name))
        return len(chunk)

    # Pillow releases the GIL while decoding, so threads overlap; the first error stops the load.
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done in pool.map(work, chunks):
            if bar is not None:
                bar.update(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    labels = np.fromiter((lab for _, lab in members), dtype=np.int64, count=len(members))
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels


def _cache_file(cache_dir: Path, src: _Source, limit) -> Path:
    key = {"source": os.path.abspath(src.path), "limit": limit, "version": _CACHE_VERSION, **src.fingerprint()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = src.path.name[:-4] if src.path.name.lower().endswith(".zip") else src.path.name
    return cache_dir / f"{stem}-{digest}.npz"


def _load_cache(path: Path) -> tuple[tuple[str, ...], dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any failure to read means the same thing here
        raise ValueError(f"corrupt cache file {path}: {type(exc).__name__}: {exc}; delete it to rebuild") from None
    classes = tuple(str(c) for c in arrays.get("class_names", np.array([])).tolist())
    for s in SPLITS:
        x, y = arrays.get(f"{s}_images"), arrays.get(f"{s}_labels")
        if (not classes or x is None or y is None or x.dtype != np.uint8 or x.shape[1:] != (3, 32, 32)
                or y.shape != (x.shape[0],) or y.dtype != np.int64 or y.min(initial=0) < 0
                or y.max(initial=0) >= len(classes)):
            raise ValueError(f"corrupt cache file {path}: missing or malformed {s} arrays; delete it to rebuild")
    return classes, arrays


def _check_known(path: Path, classes, labels: dict, expected_classes, expected_per_class, limit) -> None:
    if expected_classes is not None and tuple(classes) != tuple(expected_classes):
        raise ValueError(f"mislabelled archive {path}: class folders {list(classes)}; expected exactly "
                         f"{list(expected_classes)}")
    # Counts are checked only without limit: a partial read of a complete archive is not incomplete.
    if expected_per_class is not None and limit is None:
        for split, want in expected_per_class.items():
            counts = np.bincount(np.asarray(labels[split], dtype=np.int64), minlength=len(classes))
            bad = np.flatnonzero(counts != want)
            if bad.size:
                c = bad[0]
                raise ValueError(f"archive {path} has {counts[c]} {split} images of class {classes[c]!r}; "
                                 f"expected {want} per class: the archive is incomplete or mislabelled")


def load_image_folder(path: str | os.PathLike, seed: int = 0, val_fraction: float = 0.0, limit: int | None = None,
                      cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                      progress: bool = True, expected_classes: Sequence[str] | None = None) -> ImageDataset:
    """A ``train/<class>/<image>`` + ``test/<class>/<image>`` tree or zip of one (module docstring).

    ``workers`` decoding threads (default: the CPU count, at most 8); ``expected_classes``, when
    given, must be exactly the sorted class folder names (catches a mislabelled copy).
    """
    return _load_folder(path, seed, val_fraction, limit, cache_dir, workers, progress, expected_classes)


def _load_folder(path, seed, val_fraction, limit, cache_dir, workers, progress, expected_classes,
                 expected_per_class: dict | None = None, name: str = "image_folder") -> ImageDataset:
    path = Path(path).expanduser()
    seed = check_int("seed", seed, min_value=0)
    val_fraction = _check_val_fraction(val_fraction)
    if limit is not None:
        limit = check_int("limit", limit, min_value=1)
    workers = check_int("workers", workers if workers is not None else min(8, os.cpu_count() or 1), min_value=1)
    if not path.exists():
        raise _not_found("image-folder dataset", [path],
                         "Give path= a folder with train/<class>/<image> and test/<class>/<image>, or a zip of one.")
    src = _Source(path)
    try:
        cache = _cache_file(Path(cache_dir).expanduser(), src, limit) if cache_dir is not None else None
        if cache is not None and cache.is_file():
            classes, arrays = _load_cache(cache)
            _check_known(path, classes, {s: arrays[f"{s}_labels"] for s in SPLITS}, expected_classes,
                         expected_per_class, limit)
        else:
            classes, members = _index_members(src, limit)
            # Before decoding, so a wrong archive fails in a second rather than after the decode.
            _check_known(path, classes, {s: [lab for _, lab in members[s]] for s in SPLITS}, expected_classes,
                         expected_per_class, limit)
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=sum(len(members[s]) for s in SPLITS), desc=f"decode {path.name}", unit="img")
            try:
                arrays = {}
                for s in SPLITS:
                    arrays[f"{s}_images"], arrays[f"{s}_labels"] = _decode_all(src, members[s], workers, bar)
            finally:
                if bar is not None:
                    bar.close()
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(cache.name + ".tmp")
                with open(tmp, "wb") as f:
                    np.savez(f, class_names=np.array(classes), **arrays)
                os.replace(tmp, cache)
    finally:
        src.close()
    return _make(name, arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                 len(classes), classes, val_fraction, seed)


def load_cifar10_jpeg(path: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.0,
                      limit: int | None = None, cache_dir: str | os.PathLike | None = None,
                      workers: int | None = None, progress: bool = True) -> ImageDataset:
    """CIFAR-10 as JPEGs (``cifar10-jpeg.zip``), with CIFAR-10's class names and counts checked."""
    if path is None:
        tried = [r / n for r in data_roots() for n in ("cifar10-jpeg.zip", "cifar10-jpeg")]
        found = [p for p in tried if p.exists()]
        if not found:
            raise _not_found("CIFAR-10 JPEG archive", tried,
                             "Copy cifar10-jpeg.zip (train/<class>/*.jpg, test/<class>/*.jpg) into one of these "
                             "folders or pass path=...; for the original pickles use dataset 'cifar10'.")
        path = found[0]
    return _load_folder(path, seed, val_fraction, limit, cache_dir, workers, progress, CIFAR10_CLASSES,
                        expected_per_class={"train": 5000, "test": 1000}, name="cifar10_jpeg")


DATASETS = {"digits": load_digits, "synthetic": load_synthetic, "cifar10": load_cifar10, "cifar100": load_cifar100,
            "cifar10_jpeg": load_cifar10_jpeg, "image_folder": load_image_folder}


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def load_dataset(name: str, *, show_progress: bool | None = None, **options) -> ImageDataset:
    """Load dataset ``name`` (see ``list_datasets()``) with its loader's keyword ``options``.

    ``show_progress`` (None: the loader's default) is the caller's progress switch (``--no-progress``):
    it sets the ``progress`` option of loaders that show a bar (the JPEG decode), unless ``options``
    set it; loaders without a bar ignore it.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available datasets: {', '.join(list_datasets())}")
    import inspect

    params = inspect.signature(DATASETS[name]).parameters
    if show_progress is not None and "progress" in params and "progress" not in options:
        options = {**options, "progress": bool(show_progress)}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; "
                        f"valid options: {', '.join(sorted(params))}")
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise TypeError(f"dataset {name!r} needs option(s) {', '.join(map(repr, missing))} "
                        f"(blockaudit: --data-option {missing[0]}=...)")
    return DATASETS[name](**options)


# --- batches and augmentation -----------------------------------------------------------------

def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``N x C x H x W`` -> ``dtype``, scaled to [0, 1] then standardised per channel."""
    x = images.to(dtype) / 255.0
    return (x - mean.to(x.device, dtype).view(1, -1, 1, 1)) / std.to(x.device, dtype).view(1, -1, 1, 1)


def _draw_augment(n: int, generator: torch.Generator, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Draw order (row shifts, column shifts, flip coins) is part of the seeded contract: changing it
    # changes every augmented run.
    dev = generator.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    flips = torch.rand(n, generator=generator, device=dev) < 0.5
    return dy, dx, flips


def _source_index(shift: torch.Tensor, size: int, pad: int, pad_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index of every output position (n, size) and whether it falls inside the image."""
    idx = shift.view(-1, 1) - pad + torch.arange(size, device=shift.device)
    inside = (idx >= 0) & (idx < size)
    if pad_mode == "reflect":  # torch's "reflect": -1 -> 1, size -> size - 2 (the edge is not repeated)
        idx = torch.where(idx < 0, -idx, idx)
        idx = torch.where(idx >= size, 2 * (size - 1) - idx, idx)
        inside = torch.ones_like(inside)
    return idx.clamp(0, size - 1), inside


def _apply_augment(images, dy, dx, flips, pad: int, pad_mode: str) -> torch.Tensor:
    n, c, h, w = images.shape
    rows, row_in = _source_index(dy, h, pad, pad_mode)
    cols, col_in = _source_index(dx, w, pad, pad_mode)
    # Flipping the crop = reading its columns right to left, so crop and flip are one gather.
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols)
    col_in = torch.where(flips.view(n, 1), col_in.flip(1), col_in)
    flat = (rows.view(n, h, 1) * w + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    if pad_mode == "zero":
        out = out * (row_in.view(n, 1, h, 1) & col_in.view(n, 1, 1, w)).to(out.dtype)
    return out


def augment_batch(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4,
                  pad_mode: str = "reflect", flip: bool = True) -> torch.Tensor:
    """Random crop after padding by ``pad`` (``"reflect"`` or ``"zero"``) and a random horizontal flip.

    The standard CIFAR augmentation of the ResNet papers (pad 4, crop 32, flip with p = 1/2), as one
    batched gather on ``images``' device and dtype (uint8 before normalisation: zero padding is then
    black, as in torchvision's ``RandomCrop(32, padding=4)``; reflect padding commutes with
    normalisation). Random numbers come from ``generator`` on its own device, so one seeded CPU
    generator gives the same crops whether the images are on the CPU or a GPU.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W; got shape {tuple(images.shape)}")
    pad = check_int("pad", pad, min_value=0, max_value=min(images.shape[2:]) - 1)
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a seeded torch.Generator; got {type(generator).__name__}")
    dy, dx, flips = _draw_augment(images.shape[0], generator, pad)
    if not flip:
        flips = torch.zeros_like(flips)
    dev = images.device
    return _apply_augment(images, dy.to(dev), dx.to(dev), flips.to(dev), pad, pad_mode)


def iterate_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: torch.Tensor,
                    std: torch.Tensor, *, shuffle: bool = False, generator: torch.Generator | None = None,
                    augment: bool = False, pad_mode: str = "reflect", pad: int = 4, drop_last: bool = False,
                    dtype: torch.dtype = torch.float32, channels_last: bool = False,
                    shard: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised ``(images, labels)`` batches on ``images``' device; shuffling/augmenting use ``generator``.

    Every random number of the epoch (the permutation, then each batch's crops and flips in the
    order ``augment_batch`` draws them) is drawn up front on the generator's device and moved to
    the data's device in one copy: a per-batch host-to-GPU copy would synchronise the stream and
    let the GPU run dry. The values equal those of per-batch draws, so results do not depend on
    where the data lives. Augmentation works on uint8 and normalisation comes last, which for
    reflect padding gives bit-for-bit what normalising first would.

    ``shard=(rank, world_size)`` (data-parallel training) yields only rank's part of every batch:
    the batch's indices are split into ``world_size`` contiguous parts (``torch.tensor_split``:
    sizes differ by at most one), after the same draws as without ``shard``, so the ranks' parts
    of a batch together are exactly the one-process batch, augmentations included.
    """
    batch_size = check_int("batch_size", batch_size, min_value=1)
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    if (shuffle or augment) and generator is None:
        raise ValueError("generator must be a seeded torch.Generator when shuffle or augment is set; got None")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length; got {images.shape[0]} and {labels.shape[0]}")
    if shard is not None:
        if (not isinstance(shard, tuple) or len(shard) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                or not 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size; got {shard!r}")
    dev, n = images.device, images.shape[0]
    stop = n - n % batch_size if drop_last else n
    starts = range(0, stop, batch_size)
    order = (torch.randperm(n, generator=generator, device=generator.device) if shuffle
             else torch.arange(n)).to(dev)
    if augment:
        pad = check_int("pad", pad, min_value=0, max_value=min(images.shape[2:]) - 1)
        draws = [_draw_augment(min(batch_size, n - s), generator, pad) for s in starts]
        dy, dx, flips = (torch.cat([d[k] for d in draws]).to(dev) if draws else None for k in range(3))
    mean, std = mean.to(dev), std.to(dev)
    # bf16/fp16 cannot hold x/255 exactly; normalise in float32 and round once.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    for start in starts:
        idx = order[start:start + batch_size]
        lo, hi = start, start + idx.shape[0]
        if shard is not None:
            rank, world = shard
            # Part boundaries of torch.tensor_split(idx, world), computed on the host: no device sync.
            size, extra = divmod(idx.shape[0], world)
            lo = start + rank * size + min(rank, extra)
            hi = lo + size + (rank < extra)
            idx = order[lo:hi]
        x = images[idx]
        if augment:
            sl = slice(lo, hi)
            x = _apply_augment(x, dy[sl], dx[sl], flips[sl], pad, pad_mode)
        x = normalize(x, mean, std, work).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels[idx]
