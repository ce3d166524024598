"""Tiny datasets for the vision tests, written in the real on-disk formats (one torch thread: tests/conftest.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar10(root: Path, per_batch: int = 8, test: int = 10, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with data_batch_1..5 and test_batch in CIFAR's python-pickle format.

    Images are random uint8 rows of 3072 values (R plane, then G, then B, each 32×32 row-major); labels cycle 0..9.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int((k * n + i) % 10) for i in range(n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{k}_{i}.png".encode() for i in range(n)],
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, handle, protocol=2)
    return folder


def write_cifar100(root: Path, train: int = 12, test: int = 6, seed: int = 1) -> Path:
    """``root/cifar-100-python/`` with ``train``, ``test`` and ``meta`` in CIFAR-100's python-pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"fine_labels": [int(i * 7 % 100) for i in range(n)],
            b"coarse_labels": [int(i % 20) for i in range(n)],
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with (folder / "meta").open("wb") as handle:
        pickle.dump({b"fine_label_names": [b"f%d" % i for i in range(100)]}, handle, protocol=2)
    return folder


def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    """A solid-colour RGB image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def write_tiny_imagenet(root: Path, classes: int = 3, per_class: int = 2, val_per_class: int = 1) -> Path:
    """``root/tiny-imagenet-200/`` in the original layout: train/<wnid>/images/*.JPEG, val/images/ and
    val/val_annotations.txt. Class c's images have red channel 40 * (c + 1)."""
    base = root / "tiny-imagenet-200"
    wnids = [f"n{c:08d}" for c in range(classes)]
    (base).mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            write_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (64, 64), (40 * (c + 1), 10, 200))
        for i in range(val_per_class):
            name = f"val_{c}_{i}.JPEG"
            write_image(base / "val" / "images" / name, (64, 64), (40 * (c + 1), 10, 200))
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base
