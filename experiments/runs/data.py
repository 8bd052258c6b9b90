"""Image datasets as uint8 tensors, and batched augmentation that runs where the tensors live.

This module holds the registry (``load_dataset``) and the bundled datasets; ``experiments.runs.dataset``
has ``ImageDataset`` and the shared pieces, ``experiments.runs.cifar`` the CIFAR and image-folder
loaders, ``experiments.runs.augment`` the batches; their public names are re-exported here.

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

import inspect

import numpy as np

from analysis.validation import check_choice, check_int, check_real
from experiments.runs.augment import augment_batch, iterate_batches, normalize
from experiments.runs.cifar import load_cifar10, load_cifar10_jpeg, load_cifar100, load_image_folder
from experiments.runs.dataset import (
    CIFAR10_CLASSES,
    PAD_MODES,
    ImageDataset,
    check_val_fraction,
    data_roots,
    make_dataset,
    subsample,
    train_val_split,
)

__all__ = [
    "ImageDataset", "DATASETS", "CIFAR10_CLASSES", "PAD_MODES", "load_dataset", "list_datasets",
    "load_digits", "load_synthetic", "load_cifar10", "load_cifar100", "load_image_folder",
    "load_cifar10_jpeg", "data_roots", "train_val_split", "subsample", "normalize", "augment_batch",
    "iterate_batches",
]


# --- digits and synthetic ---------------------------------------------------------------------

def load_digits(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.0, size: int = 32) -> ImageDataset:
    """scikit-learn digits as ``size`` x ``size`` RGB uint8 (module docstring), stratified seeded split.

    ``size`` 32 (default, CIFAR's shape), 16 or 8 (the native images, 16x cheaper to train on: the
    quick empirical analogues of ``experiments.audit.empirical`` use it).
    """
    # scikit-learn takes about a second to import and only the digits need it: imported here.
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    size = check_choice("size", size, (8, 16, 32))
    seed = check_int("seed", seed, min_value=0)
    test_fraction = check_real("test_fraction", test_fraction, min_value=0.0, max_value=1.0,
                               include_min=False, include_max=False)
    val_fraction = check_val_fraction(val_fraction)
    bunch = _sk_digits()
    img = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    img = img.repeat(size // 8, axis=1).repeat(size // 8, axis=2)  # nearest-neighbour 8x8 -> size x size
    img = np.repeat(img[:, None], 3, axis=1)  # (N, 3, 32, 32)
    xtr, xte, ytr, yte = train_test_split(img, bunch.target, test_size=test_fraction,
                                          random_state=seed, stratify=bunch.target)
    return make_dataset("digits", xtr, ytr, xte, yte, 10, val_fraction=val_fraction, seed=seed)


def load_synthetic(seed: int = 0, n_train: int = 512, n_test: int = 256, num_classes: int = 10,
                   noise: float = 40.0, val_fraction: float = 0.0) -> ImageDataset:
    """Seeded class-conditional 32x32 RGB images (module docstring); ``noise`` is the pixel std."""
    seed = check_int("seed", seed, min_value=0)
    n_train = check_int("n_train", n_train, min_value=1)
    n_test = check_int("n_test", n_test, min_value=1)
    num_classes = check_int("num_classes", num_classes, min_value=2)
    noise = check_real("noise", noise, min_value=0.0)
    val_fraction = check_val_fraction(val_fraction)
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
    return make_dataset("synthetic", xtr, ytr, xte, yte, num_classes, val_fraction=val_fraction, seed=seed)


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
