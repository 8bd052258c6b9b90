"""CPU datasets: shapes, dtypes, seeding, the digits upsampling, normalisation, batching, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.runs.data import iterate_batches, list_datasets, load_dataset, normalize


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_digits_shapes_split_and_upsampling(digits):
    from sklearn.datasets import load_digits

    assert digits.train_images.shape == (1437, 3, 32, 32) and digits.test_images.shape == (360, 3, 32, 32)
    assert digits.train_images.dtype == torch.uint8 and digits.train_labels.dtype == torch.int64
    assert digits.num_classes == 10
    # Stratified: every class is in both splits in (nearly) its overall proportion.
    counts = torch.bincount(digits.test_labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    # Nearest-neighbour 4x: each 4x4 patch is constant, channels equal, values are the 8x8 digit * 255/16.
    img = digits.train_images[0].numpy()
    assert (img[0] == img[1]).all() and (img[1] == img[2]).all()
    small = img[0, ::4, ::4]
    assert (np.repeat(np.repeat(small, 4, 0), 4, 1) == img[0]).all()
    sk = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    assert any((small == s).all() for s in sk)


def test_seeded_and_seed_dependent(digits):
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.train_labels, digits.train_labels)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.train_labels, digits.train_labels)
    s1, s2 = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3)
    assert torch.equal(s1.train_images, s2.train_images) and torch.equal(s1.test_labels, s2.test_labels)
    s3 = load_dataset("synthetic", seed=4, n_train=10, n_test=5, num_classes=3)
    assert s3.train_images.shape == (10, 3, 32, 32) and s3.test_labels.max() < 3 and s3.num_classes == 3


def test_normalisation_stats_are_the_train_channel_moments(digits):
    x = normalize(digits.train_images, digits.mean, digits.std, dtype=torch.float64)
    # float32 stats: agreement to ~1e-6 relative.
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_iterate_batches_covers_the_data_once(digits):
    g = torch.Generator().manual_seed(0)
    labels = [y for _, y in iterate_batches(digits.test_images, digits.test_labels, 100, digits.mean,
                                            digits.std, shuffle=True, generator=g, augment=True)]
    assert [len(y) for y in labels] == [100, 100, 100, 60]
    assert torch.equal(torch.sort(torch.cat(labels)).values, torch.sort(digits.test_labels).values)
    x, _ = next(iterate_batches(digits.test_images, digits.test_labels, 8, digits.mean, digits.std))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32


def test_errors_name_the_valid_choices():
    with pytest.raises(KeyError, match="unknown dataset 'cifar11'; available datasets: cifar10, cifar100, "
                                       "cifar10_jpeg, digits, image_folder, synthetic"):
        load_dataset("cifar11")
    with pytest.raises(TypeError, match="unknown option.*'n_train'.*dataset 'digits'.*valid options: seed"):
        load_dataset("digits", n_train=5)
    with pytest.raises(ValueError, match="test_fraction must be < 1; got 1"):
        load_dataset("digits", test_fraction=1.0)
    with pytest.raises(ValueError, match="generator must be a seeded torch.Generator"):
        next(iterate_batches(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 1,
                             torch.zeros(3), torch.ones(3), shuffle=True))
    assert list_datasets() == ["cifar10", "cifar100", "cifar10_jpeg", "digits", "image_folder", "synthetic"]
