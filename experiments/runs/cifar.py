"""CIFAR-10/100 from torchvision's pickle folders, and image folders (or zips of them) such as cifar10-jpeg.zip."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from analysis.validation import check_choice, check_int
from experiments.runs.dataset import (
    CIFAR10_CLASSES,
    CIFAR_HOW,
    IMAGE_EXTENSIONS,
    SPLITS,
    ImageDataset,
    check_val_fraction,
    data_roots,
    make_dataset,
    not_found,
)

__all__ = ["load_cifar10", "load_cifar100", "load_image_folder", "load_cifar10_jpeg"]

CACHE_VERSION = 1  # of the decoded-image cache files of image folders


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
    raise not_found(f"{what} ({folder})", tried, how)


def load_cifar10(root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.0) -> ImageDataset:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py`` (module docstring): 50,000 + 10,000 images."""
    seed = check_int("seed", seed, min_value=0)
    val_fraction = check_val_fraction(val_fraction)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    how = CIFAR_HOW.format(tv="CIFAR10", folder="cifar-10-batches-py", tarball="cifar-10-python.tar.gz",
                            extra=" A JPEG copy (cifar10-jpeg.zip) loads as dataset 'cifar10_jpeg'.")
    folder = _find_cifar_folder(root, "cifar-10-batches-py", files, how, "CIFAR-10")
    names = _cifar_names(folder / "batches.meta", "label_names", 10)
    if names != CIFAR10_CLASSES:
        raise ValueError(f"mislabelled CIFAR-10 meta file {folder / 'batches.meta'}: label_names {names}; "
                         f"expected {CIFAR10_CLASSES}")
    train = [_cifar_batch(folder / f, "labels", 10) for f in files[:5]]
    xte, yte = _cifar_batch(folder / "test_batch", "labels", 10)
    xtr, ytr = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    return make_dataset("cifar10", xtr, ytr, xte, yte, 10, names, val_fraction, seed)


def load_cifar100(root: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.0,
                  label_type: str = "fine") -> ImageDataset:
    """CIFAR-100 from torchvision's ``cifar-100-python``; ``label_type`` "fine" (100) or "coarse" (20 superclasses)."""
    seed = check_int("seed", seed, min_value=0)
    val_fraction = check_val_fraction(val_fraction)
    label_type = check_choice("label_type", label_type, ("fine", "coarse"))
    num_classes = 100 if label_type == "fine" else 20
    how = CIFAR_HOW.format(tv="CIFAR100", folder="cifar-100-python", tarball="cifar-100-python.tar.gz", extra="")
    folder = _find_cifar_folder(root, "cifar-100-python", ["train", "test", "meta"], how, "CIFAR-100")
    names = _cifar_names(folder / "meta", f"{label_type}_label_names", num_classes)
    xtr, ytr = _cifar_batch(folder / "train", f"{label_type}_labels", num_classes)
    xte, yte = _cifar_batch(folder / "test", f"{label_type}_labels", num_classes)
    name = "cifar100" if label_type == "fine" else "cifar100_coarse"
    return make_dataset(name, xtr, ytr, xte, yte, num_classes, names, val_fraction, seed)


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
    key = {"source": os.path.abspath(src.path), "limit": limit, "version": CACHE_VERSION, **src.fingerprint()}
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
    val_fraction = check_val_fraction(val_fraction)
    if limit is not None:
        limit = check_int("limit", limit, min_value=1)
    workers = check_int("workers", workers if workers is not None else min(8, os.cpu_count() or 1), min_value=1)
    if not path.exists():
        raise not_found("image-folder dataset", [path],
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
    return make_dataset(name, arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                 len(classes), classes, val_fraction, seed)


def load_cifar10_jpeg(path: str | os.PathLike | None = None, seed: int = 0, val_fraction: float = 0.0,
                      limit: int | None = None, cache_dir: str | os.PathLike | None = None,
                      workers: int | None = None, progress: bool = True) -> ImageDataset:
    """CIFAR-10 as JPEGs (``cifar10-jpeg.zip``), with CIFAR-10's class names and counts checked."""
    if path is None:
        tried = [r / n for r in data_roots() for n in ("cifar10-jpeg.zip", "cifar10-jpeg")]
        found = [p for p in tried if p.exists()]
        if not found:
            raise not_found("CIFAR-10 JPEG archive", tried,
                             "Copy cifar10-jpeg.zip (train/<class>/*.jpg, test/<class>/*.jpg) into one of these "
                             "folders or pass path=...; for the original pickles use dataset 'cifar10'.")
        path = found[0]
    return _load_folder(path, seed, val_fraction, limit, cache_dir, workers, progress, CIFAR10_CLASSES,
                        expected_per_class={"train": 5000, "test": 1000}, name="cifar10_jpeg")
