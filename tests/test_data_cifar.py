"""Real-data loaders (CIFAR pickles, image folders and zips) and device-side augmentation.

Every dataset here is a tiny fake written into tmp_path (a few images per class), except one test
that reads 200 members of the real cifar10-jpeg.zip when it is present.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import experiments.runs.cifar as data_mod  # the loaders: patched where they look names up
from experiments.runs.data import (CIFAR10_CLASSES, ImageDataset, augment_batch, iterate_batches, list_datasets,
                              load_cifar10, load_cifar10_jpeg, load_cifar100, load_dataset, load_image_folder,
                              normalize, train_val_split)

REAL_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


# --- fakes --------------------------------------------------------------------------------------

def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """CIFAR's documented row layout written out plane by plane: 1024 red, 1024 green, 1024 blue."""
    return np.stack([np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()]) for img in images])


def _dump(path: Path, obj, protocol: int) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def fake_cifar10(root: Path, n_batch: int = 4, n_test: int = 6, protocol: int = 2, seed: int = 0) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {"train_images": [], "train_labels": []}
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(n_batch, 3, 32, 32), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n_batch)]
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"training batch", b"data": _cifar_rows(x),
                                            b"labels": y}, protocol)
        out["train_images"].append(x)
        out["train_labels"] += y
    xt = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, size=n_test)]
    _dump(folder / "test_batch", {b"data": _cifar_rows(xt), b"labels": yt}, protocol)
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072},
          protocol)
    out["train_images"] = np.concatenate(out["train_images"])
    out.update(test_images=xt, test_labels=yt, folder=folder)
    return out


def fake_cifar100(root: Path, n_train: int = 12, n_test: int = 5) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {"folder": folder}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        _dump(folder / split, {b"data": _cifar_rows(x), b"fine_labels": fine,
                               b"coarse_labels": [f // 5 for f in fine]}, 2)
        out[split] = (x, fine)
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]}, 2)
    return out


def _encode(img: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def fake_tree(classes=("cat", "dog", "ant"), n_train: int = 3, n_test: int = 2, fmt: str = "PNG",
              seed: int = 0) -> dict[str, bytes]:
    """{member name: encoded bytes}; pixel values of image k of class c: known from ``_pixels``."""
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for k in range(n):
                files[f"{split}/{c}/{k:04d}.{ext}"] = _encode(_pixels(c, k, split, seed), fmt)
    return files


def _pixels(cls: str, k: int, split: str, seed: int = 0) -> np.ndarray:
    # Random colours in 8x8 blocks aligned with JPEG's blocks: JPEG keeps them within a few levels.
    rng = np.random.default_rng([sum(map(ord, cls)), k, split == "train", seed])
    return rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)


def write_tree(root: Path, files: dict[str, bytes], empty_dirs=()) -> Path:
    for name, blob in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    for d in empty_dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "", dirs=()) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for d in dirs:
            z.writestr(zipfile.ZipInfo(prefix + d.rstrip("/") + "/"), b"")
        for name, blob in files.items():
            z.writestr(prefix + name, blob)
    return path


# --- CIFAR pickles ------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_pickles_load_with_documented_layout(tmp_path, protocol):
    fake = fake_cifar10(tmp_path, protocol=protocol)
    for root in (tmp_path, fake["folder"]):  # the parent or the folder itself
        d = load_cifar10(root=root)
        assert d.train_images.shape == (20, 3, 32, 32) and d.test_images.shape == (6, 3, 32, 32)
        assert d.train_images.dtype == torch.uint8 and d.train_labels.dtype == torch.int64
        assert np.array_equal(d.train_images.numpy(), fake["train_images"])
        assert d.train_labels.tolist() == fake["train_labels"] and d.test_labels.tolist() == fake["test_labels"]
        assert np.array_equal(d.test_images.numpy(), fake["test_images"])
        assert d.class_names == CIFAR10_CLASSES and d.num_classes == 10 and d.val_images is None
        # Stats are the train images' channel moments (float32 of the float64 values).
        ref = fake["train_images"].astype(np.float64) / 255
        assert np.allclose(d.mean.numpy(), ref.mean(axis=(0, 2, 3)), rtol=1e-6)
    assert torch.equal(load_dataset("cifar10", root=str(tmp_path)).train_images, d.train_images)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    fake = fake_cifar100(tmp_path)
    fine = load_cifar100(root=tmp_path)
    assert fine.num_classes == 100 and fine.class_names[:2] == ("fine00", "fine01") and fine.name == "cifar100"
    assert fine.train_labels.tolist() == fake["train"][1] and fine.train_images.shape == (12, 3, 32, 32)
    assert np.array_equal(fine.test_images.numpy(), fake["test"][0])
    coarse = load_cifar100(root=tmp_path / "cifar-100-python", label_type="coarse")
    assert coarse.num_classes == 20 and coarse.train_labels.tolist() == [f // 5 for f in fake["train"][1]]
    with pytest.raises(ValueError, match="label_type must be one of 'fine', 'coarse'; got 'medium'"):
        load_cifar100(root=tmp_path, label_type="medium")


def test_missing_cifar_lists_every_path_tried_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKAUDIT_DATA", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10()
    msg = str(info.value)
    for p in (tmp_path / "env" / "cifar-10-batches-py", tmp_path / "env", tmp_path / "data" / "cifar-10-batches-py"):
        assert f"  - {p}\n" in msg
    assert "torchvision.datasets.CIFAR10('DIR', download=True)" in msg and "cifar-10-python.tar.gz" in msg
    assert "cifar10_jpeg" in msg
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 \(cifar-100-python\) not found; tried:\n"
                                                r"  - .*nowhere/cifar-100-python\n  - .*nowhere\n.*CIFAR100"):
        load_cifar100(root=tmp_path / "nowhere")


def test_incomplete_cifar_folder_names_the_missing_file(tmp_path):
    fake = fake_cifar10(tmp_path)
    (fake["folder"] / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete CIFAR-10 folder .*cifar-10-batches-py: missing data_batch_3"):
        load_cifar10(root=tmp_path)


def _rewrite(path: Path, **changes) -> None:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d.update({k.encode(): v for k, v in changes.items()})
    _dump(path, d, 2)


def test_corrupt_or_mislabelled_cifar_fails_naming_the_file(tmp_path):
    folder = fake_cifar10(tmp_path)["folder"]
    batch = folder / "data_batch_2"
    blob = batch.read_bytes()
    batch.write_bytes(blob[: len(blob) // 2])  # truncated download
    with pytest.raises(ValueError, match=r"corrupt CIFAR file .*data_batch_2: .*download the dataset again"):
        load_cifar10(root=tmp_path)
    batch.write_bytes(blob)
    _rewrite(batch, labels=[0, 3, 10, 1])
    with pytest.raises(ValueError, match=r"mislabelled CIFAR file .*data_batch_2: 1 'labels' outside \[0, 10\), "
                                         r"first at index 2: 10"):
        load_cifar10(root=tmp_path)
    _rewrite(batch, labels=[0, 3, 1, 1], data=np.zeros((4, 3000), np.uint8))
    with pytest.raises(ValueError, match=r"data_batch_2: 'data' must be a uint8 array of shape \(N, 3072\); "
                                         r"got uint8 \(4, 3000\)"):
        load_cifar10(root=tmp_path)
    _rewrite(batch, data=np.zeros((4, 3072), np.uint8), labels=[0, 1, 2])
    with pytest.raises(ValueError, match="'labels' must be 4 integers"):
        load_cifar10(root=tmp_path)
    _rewrite(batch, labels=[0, 1, 2, 3])
    _rewrite(folder / "batches.meta", label_names=[b"plane"] + [c.encode() for c in CIFAR10_CLASSES[1:]])
    with pytest.raises(ValueError, match=r"mislabelled CIFAR-10 meta file .*batches.meta: label_names \('plane'"):
        load_cifar10(root=tmp_path)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = fake_cifar10(tmp_path)["folder"]
    _dump(folder / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": os.getcwd}, 2)
    with pytest.raises(ValueError, match=r"corrupt CIFAR file .*test_batch: UnpicklingError: refusing global "
                                         r"posix\.getcwd"):
        load_cifar10(root=tmp_path)


# --- image folders and zips ---------------------------------------------------------------------

def _expected(classes, split, n):
    names = sorted(classes)
    x = np.stack([_pixels(c, k, split) for c in names for k in range(n)]).transpose(0, 3, 1, 2)
    y = [i for i, _ in enumerate(names) for _ in range(n)]
    return x, y


@pytest.mark.parametrize("kind", ["dir", "zip", "zip-with-folder"])
def test_image_folder_tree_and_zip_lossless(tmp_path, kind):
    files = fake_tree()
    if kind == "dir":
        src = write_tree(tmp_path / "tree", {**files, "train/cat/notes.txt": b"ignored", ".DS_Store": b""})
    else:
        prefix = "mini/" if kind == "zip-with-folder" else ""
        src = write_zip(tmp_path / "mini.zip", {**files, "__MACOSX/train/cat/._0000.png": b"junk"}, prefix,
                        dirs=["train/", "train/cat/"])
    d = load_image_folder(src, progress=False, workers=2)
    assert d.class_names == ("ant", "cat", "dog") and d.num_classes == 3 and d.name == "image_folder"
    for split, n in (("train", 3), ("test", 2)):
        x, y = _expected(("cat", "dog", "ant"), split, n)
        images, labels = d.split(split)
        assert np.array_equal(images.numpy(), x) and labels.tolist() == y  # PNG: bit-exact pixels


def test_image_folder_jpeg_grayscale_and_limit(tmp_path):
    files = fake_tree(fmt="JPEG", n_train=4)
    files["train/ant/0009.png"] = _encode(np.full((32, 32), 77, np.uint8), "PNG")  # grayscale -> RGB
    src = write_zip(tmp_path / "j.zip", files)
    d = load_image_folder(src, progress=False)
    assert d.train_images.shape == (13, 3, 32, 32) and d.train_labels.tolist() == [0] * 5 + [1] * 4 + [2] * 4
    assert (d.train_images[4] == 77).all()  # sorted names: ant/0000..0003.jpg, then ant/0009.png
    x, _ = _expected(("cat", "dog", "ant"), "train", 4)
    jpeg = d.train_images.numpy()[[0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]].astype(int)
    # Quality-95 JPEG of 8x8-block images: ~7 levels of mean error (chroma subsampling blurs the colour
    # edges); unrelated images differ by ~85, so 12 separates "this image" from "another image".
    assert np.abs(jpeg - x).mean() < 12 and np.abs(jpeg - x[::-1]).mean() > 40
    lim = load_image_folder(src, progress=False, limit=2)
    assert lim.train_labels.tolist() == [0, 0, 1, 1, 2, 2] and lim.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(lim.train_images[:2], d.train_images[:2]) and torch.equal(lim.train_images[2:4], d.train_images[5:7])


def test_cache_makes_the_second_load_skip_decoding(tmp_path, monkeypatch):
    src = write_zip(tmp_path / "c.zip", fake_tree())
    first = load_image_folder(src, progress=False, cache_dir=tmp_path / "cache")
    first_stat = os.stat(src)
    caches = list((tmp_path / "cache").glob("c-*.npz"))
    assert len(caches) == 1

    def no_decoding(*_):
        raise AssertionError("decoded although a cache exists")

    monkeypatch.setattr(data_mod, "_decode", no_decoding)
    second = load_image_folder(src, progress=False, cache_dir=tmp_path / "cache", val_fraction=0.3)
    assert torch.equal(torch.cat([second.train_images, second.val_images]).sort(0).values,
                       first.train_images.sort(0).values)
    monkeypatch.undo()
    caches[0].write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=r"corrupt cache file .*c-[0-9a-f]{16}\.npz: .*delete it to rebuild"):
        load_image_folder(src, progress=False, cache_dir=tmp_path / "cache")
    # A changed archive has a new key: it is decoded again, not served from the old cache.
    write_zip(src, fake_tree(seed=1, n_train=4))
    monkeypatch.setattr(data_mod, "_decode", no_decoding)
    with pytest.raises(AssertionError, match="decoded although"):
        load_image_folder(src, progress=False, cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    np.savez(caches[0], class_names=np.array(["a"]), train_images=np.zeros((2, 3, 32, 32), np.uint8))
    write_zip(src, fake_tree())
    os.utime(src, ns=(first_stat.st_atime_ns, first_stat.st_mtime_ns))  # the first archive again: same key
    with pytest.raises(ValueError, match=r"corrupt cache file .*: missing or malformed train arrays"):
        load_image_folder(src, progress=False, cache_dir=tmp_path / "cache")
    # A directory tree's key covers its listing: a new (empty) class folder is seen, not served stale.
    tree = write_tree(tmp_path / "tree", fake_tree())
    load_image_folder(tree, progress=False, cache_dir=tmp_path / "cache")
    (tree / "test" / "emu").mkdir()
    with pytest.raises(ValueError, match="class folder .*emu has no images"):
        load_image_folder(tree, progress=False, cache_dir=tmp_path / "cache")


def test_broken_image_folders_fail_naming_the_file(tmp_path):
    good = fake_tree(fmt="JPEG")
    cases = {
        "undecodable": ({**good, "train/cat/0001.jpg": b"\xff\xd8 this is not a jpeg"}, [],
                        r"cannot decode image train/cat/0001.jpg in .*undecodable.zip"),
        "truncated": ({**good, "train/dog/0002.jpg": good["train/dog/0002.jpg"][:300]}, [],
                      r"cannot decode image train/dog/0002.jpg in .*truncated.zip: .*(?i:truncated)"),
        "empty_class": (good, ["test/emu/"], r"class folder test/emu in .*empty_class.zip has no images"),
        "class_mismatch": ({k: v for k, v in good.items() if not k.startswith("test/ant/")}, [],
                           r"train and test class folders differ; only in train: \['ant'\], only in test: \[\]"),
        "no_test": ({k: v for k, v in good.items() if k.startswith("train/")}, [],
                    r"has no test/<class>/<image> files; .*\(found top level: train\)"),
        "no_class": ({**good, "train/0001.jpg": good["train/cat/0000.jpg"]}, [],
                     r"image train/0001.jpg in .* is not inside a class folder"),
        "wrong_size": ({**good, "test/cat/0000.png": _encode(np.zeros((16, 24, 3), np.uint8), "PNG")}, [],
                       r"image test/cat/0000.png in .* is 24x16; expected 32x32"),
    }
    for name, (files, dirs, message) in cases.items():
        src = write_zip(tmp_path / f"{name}.zip", files, dirs=dirs)
        with pytest.raises(ValueError, match=message):
            load_image_folder(src, progress=False)
    # The same checks on a directory tree name the file path.
    tree = write_tree(tmp_path / "tree", good, empty_dirs=["train/emu", "test/emu"])
    with pytest.raises(ValueError, match=r"class folder .*tree/train/emu has no images"):
        load_image_folder(tree, progress=False)
    blob = write_zip(tmp_path / "whole.zip", good).read_bytes()
    (tmp_path / "cut.zip").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ValueError, match=r"corrupt archive .*cut.zip: .*re-download"):
        load_image_folder(tmp_path / "cut.zip", progress=False)
    with pytest.raises(FileNotFoundError, match=r"image-folder dataset not found; tried:\n  - .*missing.zip\n"):
        load_image_folder(tmp_path / "missing.zip")


def test_cifar10_jpeg_checks_names_and_counts(tmp_path, monkeypatch):
    src = write_zip(tmp_path / "cifar10-jpeg.zip", fake_tree(classes=CIFAR10_CLASSES, fmt="JPEG", n_train=2, n_test=1))
    with pytest.raises(ValueError, match=r"has 2 train images of class 'airplane'; expected 5000 per class: "
                                         r"the archive is incomplete or mislabelled"):
        load_cifar10_jpeg(src, progress=False)
    d = load_cifar10_jpeg(src, progress=False, limit=2)
    assert d.class_names == CIFAR10_CLASSES and d.name == "cifar10_jpeg" and d.train_images.shape == (20, 3, 32, 32)
    bad = write_zip(tmp_path / "bad.zip", fake_tree(classes=("car",) + CIFAR10_CLASSES[1:], n_train=1, n_test=1))
    with pytest.raises(ValueError, match=r"mislabelled archive .*bad.zip: class folders \['automobile', .*'car'"):
        load_cifar10_jpeg(bad, progress=False, limit=1)
    monkeypatch.setattr(data_mod, "data_roots", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 JPEG archive not found; tried:\n  - .*a/cifar10-jpeg.zip\n"
                                                r"  - .*a/cifar10-jpeg\n  - .*b/cifar10-jpeg.zip"):
        load_cifar10_jpeg()
    monkeypatch.setattr(data_mod, "data_roots", lambda: [tmp_path])
    assert load_cifar10_jpeg(limit=1, progress=False).train_images.shape == (10, 3, 32, 32)


@pytest.mark.skipif(not REAL_ZIP.is_file(), reason=f"real CIFAR-10 JPEG archive not present at {REAL_ZIP}")
def test_real_cifar10_jpeg_zip_first_members():
    d = load_cifar10_jpeg(REAL_ZIP, limit=10, progress=False)
    assert d.train_images.shape == (100, 3, 32, 32) and d.test_images.shape == (100, 3, 32, 32)
    assert d.class_names == CIFAR10_CLASSES
    assert d.train_labels.tolist() == [c for c in range(10) for _ in range(10)]
    # CIFAR-10's channel means are about (0.49, 0.48, 0.45); 100 images land within ~0.05 of them.
    assert np.allclose(d.mean.numpy(), [0.49, 0.48, 0.45], atol=0.06)
    assert len({bytes(x.numpy()) for x in d.train_images}) == 100  # no duplicated decode


# --- splits, registry, device moves -------------------------------------------------------------

def test_validation_split_is_seeded_stratified_and_disjoint(tmp_path):
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    tr, va = train_val_split(labels, 0.1, seed=3)
    tr2, va2 = train_val_split(labels, 0.1, seed=3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, train_val_split(labels, 0.1, seed=4)[1])
    assert np.bincount(labels[va]).tolist() == [1, 2, 3, 4]
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    fake_cifar10(tmp_path, n_batch=20)
    d = load_cifar10(root=tmp_path, val_fraction=0.2, seed=1)
    assert d.val_images.shape[0] + d.train_images.shape[0] == 100 and d.val_images.shape[0] >= 10
    full = load_cifar10(root=tmp_path)
    # mean/std are those of the images actually trained on (validation held out).
    assert torch.allclose(d.mean, d.train_images.double().div(255).mean((0, 2, 3)).float())
    assert not torch.allclose(d.mean, full.mean, atol=1e-7)
    with pytest.raises(ValueError, match="has no validation split; load it with val_fraction > 0"):
        full.split("val")
    with pytest.raises(ValueError, match="val_fraction must be < 1; got 1"):
        train_val_split(labels, 1.0, seed=0)
    with pytest.raises(ValueError, match="val_fraction=0.001 holds out no image of 100 training images"):
        train_val_split(labels, 0.001, seed=0)


def test_registry_and_device_move(tmp_path):
    assert {"cifar10", "cifar100", "cifar10_jpeg", "image_folder", "digits", "synthetic"} <= set(list_datasets())
    with pytest.raises(TypeError, match=r"dataset 'image_folder' needs option\(s\) 'path' "
                                        r"\(blockaudit: --data-option path=...\)"):
        load_dataset("image_folder")
    d = load_dataset("synthetic", n_train=8, n_test=4, val_fraction=0.25)
    moved = d.to("meta")
    tensors = [moved.train_images, moved.train_labels, moved.test_images, moved.test_labels, moved.mean, moved.std,
               moved.val_images, moved.val_labels]
    assert all(t.device.type == "meta" for t in tensors) and moved.train_images.dtype == torch.uint8
    assert d.device.type == "cpu" and "device=meta" in repr(moved) and isinstance(moved, ImageDataset)


# --- augmentation -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch():
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(64, 3, 32, 32), dtype=np.uint8))


def test_flip_is_a_horizontal_flip(batch):
    out = augment_batch(batch, torch.Generator().manual_seed(0), pad=0)
    same = (out == batch).flatten(1).all(1)
    flipped = (out == batch.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 10 < int(flipped.sum()) < 54  # p = 1/2 over 64: [10, 54] is > 12 sigma
    assert not (same & flipped).any()  # random images are never mirror-symmetric


@pytest.mark.parametrize("pad_mode", ["zero", "reflect"])
def test_crop_is_the_padded_image_shifted(batch, pad_mode):
    out = augment_batch(batch, torch.Generator().manual_seed(1), flip=False, pad_mode=pad_mode)
    # Independent reference: torch's own padding, then every one of the 81 crops; each output must be one of them.
    padded = F.pad(batch.float(), (4, 4, 4, 4), mode="constant" if pad_mode == "zero" else "reflect")
    shifts = []
    for i in range(batch.shape[0]):
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if torch.equal(padded[i, :, dy:dy + 32, dx:dx + 32], out[i].float())]
        assert len(hits) == 1, f"sample {i}: matches {hits}"
        shifts.append(hits[0])
    assert len(set(shifts)) > 20  # the 81 offsets are actually used
    if pad_mode == "zero":
        dy, dx = shifts[0]
        assert (out[0, :, :max(0, 4 - dy)] == 0).all() and (out[0, :, 32 - max(0, dy - 4):] == 0).all()


def test_same_generator_seed_same_batch(batch):
    a = augment_batch(batch, torch.Generator().manual_seed(5), pad_mode="zero")
    b = augment_batch(batch, torch.Generator().manual_seed(5), pad_mode="zero")
    c = augment_batch(batch, torch.Generator().manual_seed(6), pad_mode="zero")
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.uint8


def _old_augment(x, generator):
    # The augmentation this module had before the device path (normalise, reflect pad, two gathers).
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 8)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


def test_iterate_batches_is_bitwise_the_previous_pipeline(batch):
    labels = torch.arange(64)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    g_new, g_old = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    new = list(iterate_batches(batch, labels, 24, mean, std, shuffle=True, generator=g_new, augment=True))
    order = torch.randperm(64, generator=g_old)
    for s, (x, y) in zip(range(0, 64, 24), new):
        idx = order[s:s + 24]
        assert torch.equal(y, idx)
        assert torch.equal(x, _old_augment(normalize(batch[idx], mean, std), g_old))
    assert torch.equal(g_new.get_state(), g_old.get_state())


def test_iterate_batches_predraw_equals_per_batch_draws_and_options(batch):
    labels = torch.arange(64)
    mean, std = torch.zeros(3), torch.ones(3)
    got = list(iterate_batches(batch, labels, 10, mean, std, generator=torch.Generator().manual_seed(2),
                               augment=True, pad_mode="zero", drop_last=True, dtype=torch.bfloat16,
                               channels_last=True))
    assert len(got) == 6 and all(x.shape == (10, 3, 32, 32) for x, _ in got)
    assert all(x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last) for x, _ in got)
    g = torch.Generator().manual_seed(2)
    for s, (x, y) in zip(range(0, 60, 10), got):
        assert torch.equal(y, labels[s:s + 10])
        ref = augment_batch(batch[s:s + 10], g, pad_mode="zero").float().div(255).to(torch.bfloat16)
        assert torch.equal(x, ref)


def test_augmentation_errors(batch):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="pad_mode must be one of 'reflect', 'zero'; got 'edge'"):
        augment_batch(batch, g, pad_mode="edge")
    with pytest.raises(ValueError, match="pad must be <= 31; got 32"):
        augment_batch(batch, g, pad=32)
    with pytest.raises(TypeError, match="generator must be a seeded torch.Generator; got NoneType"):
        augment_batch(batch, None)
    with pytest.raises(ValueError, match=r"images must be N x C x H x W; got shape \(3, 32, 32\)"):
        augment_batch(batch[0], g)
    with pytest.raises(ValueError, match="images and labels must have the same length; got 64 and 3"):
        next(iterate_batches(batch, torch.arange(3), 8, torch.zeros(3), torch.ones(3)))
