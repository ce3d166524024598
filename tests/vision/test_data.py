"""Dataset loaders on tiny datasets written in the real on-disk formats, and the batch iterators."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ee_rl.errors import UserError
from sklearn.datasets import load_digits

from ee_rl.vision.data import (
    CIFAR2_TRANSPORT,
    DIGITS_NOISE_STD,
    CropFlip,
    TensorSplit,
    digits_split,
    load_dataset,
    noisy_digit_images,
)
from tests.vision.conftest import write_cifar10, write_cifar100, write_image, write_tiny_imagenet


def test_cifar10_reads_pickle_batches_in_channel_plane_order(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=4, test=3)
    data = load_dataset("cifar10", tmp_path)
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert len(data.train) == 20 and len(data.test) == 3
    with (folder / "data_batch_2").open("rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    row = raw[b"data"][1]
    image = data.train.images[4 + 1]  # second image of the second batch
    assert image.dtype == torch.uint8
    # CIFAR rows hold the R plane, then G, then B, each 32x32 row-major.
    for c, y, x in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert int(image[c, y, x]) == int(row[c * 1024 + y * 32 + x])
    assert data.train.labels[4 + 1] == raw[b"labels"][1]
    x, y = next(data.test.batches(2))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32)
    assert torch.allclose(x, data.test.images[:2].float() / 255)


def test_cifar2_maps_to_the_two_superclasses_of_appendix_c4(tmp_path):
    write_cifar10(tmp_path, per_batch=10, test=10)
    ten = load_dataset("cifar10", tmp_path)
    two = load_dataset("cifar2", tmp_path)
    assert two.num_classes == 2 and two.class_names == ("transportation", "animals")
    expected = torch.tensor([0 if int(c) in CIFAR2_TRANSPORT else 1 for c in ten.train.labels])
    assert torch.equal(two.train.labels, expected)
    # airplane, automobile, horse, ship, truck are transportation
    assert CIFAR2_TRANSPORT == {0, 1, 7, 8, 9}


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar100(tmp_path, train=12, test=6)
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and len(data.train) == 12 and len(data.test) == 6
    assert data.train.labels.tolist() == [i * 7 % 100 for i in range(12)]
    assert data.class_names[3] == "f3"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("tinyimagenet", "tiny-imagenet-200"),
        ("imagenet", "imagenet"),
    ],
)
def test_missing_dataset_is_a_one_line_error_naming_path_and_layout(tmp_path, name, expected):
    with pytest.raises(UserError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / expected) in message and "expected" in message


def test_partial_cifar_names_the_missing_files(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_cifar_batch_is_a_user_error(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("bad_label", [10, -1])
def test_cifar_labels_out_of_range_are_a_user_error(tmp_path, bad_label):
    folder = write_cifar10(tmp_path)
    with (folder / "data_batch_2").open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch[b"labels"][3] = bad_label
    with (folder / "data_batch_2").open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(UserError, match=f"data_batch_2: labels must be in 0..9, found {bad_label}"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_lists_the_accepted_names():
    with pytest.raises(UserError, match="digits-noisy"):
        load_dataset("mnist")


def test_tiny_imagenet_original_layout_with_val_annotations(tmp_path):
    write_tiny_imagenet(tmp_path, classes=3, per_class=2, val_per_class=1)
    data = load_dataset("tinyimagenet", tmp_path)
    assert data.num_classes == 3 and data.input_shape == (3, 64, 64)
    assert len(data.train) == 6 and len(data.test) == 3
    x, y = next(data.test.batches(3))
    assert x.shape == (3, 3, 64, 64)
    # class c was drawn with red = 40 (c + 1) (JPEG is lossy: compare loosely)
    red = (x[:, 0].mean(dim=(1, 2)) * 255).tolist()
    for r, label in zip(red, y.tolist()):
        assert abs(r - 40 * (label + 1)) < 4
    xa, _ = next(data.train.batches(6, shuffle=True, augment=True, seed=3))
    assert xa.shape == (6, 3, 64, 64)


def test_image_folder_resizes_and_centre_crops(tmp_path):
    root = tmp_path / "oct"
    for split in ("train", "test"):
        for c, colour in enumerate(((250, 0, 0), (0, 250, 0))):
            write_image(root / split / f"class{c}" / "a.png", (90, 60), colour)
            write_image(root / split / f"class{c}" / "b.jpg", (40, 70), colour)
    data = load_dataset("imagefolder", root, image_size=32, resize=36)
    assert data.class_names == ("class0", "class1") and data.input_shape == (3, 32, 32)
    x, y = next(data.test.batches(4))
    assert x.shape == (4, 3, 32, 32)
    dominant = x.mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(dominant, y)  # red images are class 0, green class 1
    xa, ya = next(data.train.batches(4, augment=True, shuffle=True, seed=1))
    assert xa.shape == (4, 3, 32, 32) and sorted(ya.tolist()) == [0, 0, 1, 1]


def test_image_folder_test_class_unknown_to_train_is_an_error(tmp_path):
    root = tmp_path / "f"
    write_image(root / "train" / "a" / "x.png", (8, 8), (1, 2, 3))
    write_image(root / "val" / "b" / "x.png", (8, 8), (1, 2, 3))
    with pytest.raises(UserError, match="not one of the 1 training classes"):
        load_dataset("imagefolder", root)


def test_digits_splits_are_stratified_disjoint_and_depend_on_the_seed():
    labels = load_digits().target
    train0, test0 = digits_split(labels, seed=0, noisy=False)
    train1, test1 = digits_split(labels, seed=1, noisy=False)
    assert len(test0) == 719 and len(train0) == 1078 and not set(train0) & set(test0)
    assert set(test0) != set(test1)
    assert np.bincount(labels[test0], minlength=10).min() >= 70  # stratified: ~72 of each digit in 719
    noisy_train, noisy_test = digits_split(labels, seed=0, noisy=True)
    assert np.array_equal(noisy_test, test0) and set(noisy_train) <= set(train0) and len(noisy_train) == 359
    assert np.bincount(labels[noisy_train], minlength=10).min() >= 34
    clean = load_dataset("digits", seed=0)
    assert clean.input_shape == (1, 8, 8) and clean.num_classes == 10
    assert len(clean.train) == 1078 and len(clean.test) == 719
    assert float(clean.train.images.min()) >= 0.0 and float(clean.train.images.max()) <= 1.0
    assert torch.equal(clean.test.labels, torch.from_numpy(labels[test0]))


def test_digits_noise_is_fixed_independent_of_the_seed_and_sigma_0_3():
    bunch = load_digits()
    clean = (bunch.images / 16.0).astype(np.float32)[:, None]
    noisy_all = noisy_digit_images(clean)
    assert np.array_equal(noisy_all, noisy_digit_images(clean))  # fixed noise seed
    noise = noisy_all - clean
    assert abs(noise.std() - DIGITS_NOISE_STD) < 0.01 and abs(noise.mean()) < 0.01
    for seed in (0, 1):
        data = load_dataset("digits-noisy", seed=seed)
        train, test = digits_split(bunch.target, seed, noisy=True)
        assert torch.equal(data.test.images, torch.from_numpy(noisy_all[test]))
        assert torch.equal(data.train.images, torch.from_numpy(noisy_all[train]))
        assert len(data.train) == 359 and len(data.test) == 719


def test_tensor_split_shuffle_visits_every_sample_once_and_is_reproducible():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    split = TensorSplit(images, torch.arange(10))
    first = torch.cat([y for _, y in split.batches(3, shuffle=True, seed=5)])
    again = torch.cat([y for _, y in split.batches(3, shuffle=True, seed=5)])
    other = torch.cat([y for _, y in split.batches(3, shuffle=True, seed=6)])
    assert sorted(first.tolist()) == list(range(10)) and torch.equal(first, again) and not torch.equal(first, other)
    for x, y in split.batches(4, shuffle=True, seed=1):
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())  # images stay paired with their labels


def test_crop_flip_takes_a_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 5, 7)
    out = CropFlip(padding=2, flip=True)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, dy : dy + 5, dx : dx + 7] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    identity = CropFlip(padding=0, flip=False)(x, torch.Generator())
    assert torch.equal(identity, x)
