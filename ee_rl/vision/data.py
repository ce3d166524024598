"""Vision datasets read from local files only (nothing is ever downloaded), and fast batch iterators.

Datasets (``DATASETS``) and the layout expected under ``--data-dir``:

- ``cifar10`` / ``cifar2``: ``cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5`` and ``test_batch``
  (the python-pickle release). ``cifar2`` maps CIFAR-10 to ZTW appendix C.4's two superclasses.
- ``cifar100``: ``cifar-100-python/`` with ``train`` and ``test`` (fine labels).
- ``tinyimagenet``: ``tiny-imagenet-200/`` with ``train/<wnid>/images/*.JPEG`` and either the original
  ``val/images/`` + ``val/val_annotations.txt`` or ``val/<wnid>/*.JPEG``.
- ``imagenet``: ``imagenet/train/<wnid>/*`` and ``imagenet/val/<wnid>/*`` (torchvision ImageFolder layout).
- ``imagefolder``: ``--data-dir`` itself holds ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``), e.g. OCT2017
  for the transfer-learning recipe of ZTW appendix B.3.
- ``digits`` / ``digits-noisy``: scikit-learn's bundled 8×8 handwritten digits (no files needed). Per seed, one
  stratified 60/40 train/test split. ``digits-noisy`` adds Gaussian pixel noise σ = 0.3 to the [0, 1] images with a
  fixed noise seed (the same noisy images for every seed) and keeps one third of the training split.

Images reach the model as float32 in [0, 1] (``B, C, H, W``); the backbone's own preprocess normalises them. Training
augmentation runs on whole batches on the target device (random crop with zero padding, horizontal flip); ImageNet's
random-resized crop runs per image in the loader workers.
"""

from __future__ import annotations

import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ee_rl.errors import UserError

DATASETS = ("cifar10", "cifar100", "cifar2", "tinyimagenet", "imagenet", "imagefolder", "digits", "digits-noisy")

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: ZTW appendix C.4: "modes of transportation" (airplane, automobile, horse, ship, truck) vs "animals".
CIFAR2_TRANSPORT = frozenset({0, 1, 7, 8, 9})
CIFAR2_CLASSES = ("transportation", "animals")

DIGITS_NOISE_STD = 0.3
DIGITS_NOISE_SEED = 20210  # fixed: digits-noisy is the same noisy image set for every split seed
DIGITS_TEST_FRACTION = 0.4
DIGITS_NOISY_TRAIN_FRACTION = 1 / 3

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


# --------------------------------------------------------------------------------------------------- batch augmentation
@dataclass(frozen=True)
class CropFlip:
    """Batch augmentation: random ``size``-crop of the zero-padded image (``padding`` px each side), random h-flip.

    Works on a float batch ``(B, C, H, W)`` on any device, one crop offset and flip per image, drawn from ``generator``
    (a CPU generator, so a seed gives the same augmentation on every device).
    """

    padding: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        if p > 0:
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]  # (B, 1, 1, W)
            batch = torch.arange(b, device=x.device)[:, None, None, None]
            chans = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.flip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
        return x


# --------------------------------------------------------------------------------------------------------- splits
class ImageSplit(ABC):
    """One split (train or test) of a dataset: labels plus a batch iterator yielding float images in [0, 1].

    Subclasses load the images of given sample indices (:meth:`_load_batches`); the order and the batch
    augmentation (``augmentation``, applied on the device) are handled here, the same for every split.
    """

    labels: torch.Tensor  # (N,) long
    augmentation: CropFlip | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` on ``device``: images float32 ``(B, C, H, W)`` in [0, 1], labels long ``(B,)``.

        ``shuffle`` and ``augment`` draw from a generator seeded with ``seed`` (pass e.g. ``base_seed + epoch`` for a
        new but reproducible order every epoch). Without shuffling, batches follow the split's order.
        """
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for x, y in self._load_batches(order, batch_size, augment=augment, seed=seed, device=device):
            if augment and self.augmentation is not None:
                x = self.augmentation(x, generator)
            yield x, y

    @abstractmethod
    def _load_batches(
        self, order: torch.Tensor, batch_size: int, *, augment: bool, seed: int, device: str | torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the samples ``order`` in batches of ``batch_size`` on ``device``, before batch augmentation: images
        float32 in [0, 1] and labels. ``augment`` and ``seed`` are for per-image training transforms."""

    def num_batches(self, batch_size: int) -> int:
        """Number of batches :meth:`batches` yields for ``batch_size`` (the last one may be smaller)."""
        return math.ceil(len(self) / batch_size)


class TensorSplit(ImageSplit):
    """A split held in memory: uint8 images (scaled by 1/255 on the fly) or float images already in [0, 1].

    Args:
        images: ``(N, C, H, W)`` uint8 or float tensor.
        labels: ``(N,)`` integer labels.
        augmentation: batch augmentation applied when ``batches(augment=True)`` (None: no augmentation).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augmentation: CropFlip | None = None) -> None:
        if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.augmentation = augmentation

    def _load_batches(
        self, order: torch.Tensor, batch_size: int, *, augment: bool, seed: int, device: str | torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = self.images[idx].to(device, non_blocking=True)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            yield x, self.labels[idx].to(device, non_blocking=True)


# ------------------------------------------------------------------------------------------- per-image PIL transforms
def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a ``(3, H, W)`` uint8 tensor."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _resize_shorter(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if min(w, h) == size:
        return image
    scale = size / min(w, h)
    return image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)


@dataclass(frozen=True)
class ResizeCenterCrop:
    """Evaluation transform: resize the shorter side to ``resize``, then take the central ``size × size`` crop."""

    resize: int
    size: int

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = _resize_shorter(image.convert("RGB"), self.resize)
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        return pil_to_uint8(image.crop((left, top, left + self.size, top + self.size)))


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """ImageNet training transform: a random crop of 8–100 % of the area and aspect ratio 3/4–4/3, resized to
    ``size × size``, then a random horizontal flip (the standard recipe; falls back to a centre crop after 10 tries).
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = image.convert("RGB")
        w, h = image.size
        box = None
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(4, generator=generator).tolist()
            area = w * h * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = int(u[2] * (w - cw + 1)), int(u[3] * (h - ch + 1))
                box = (left, top, left + cw, top + ch)
                break
        if box is None:
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        image = image.resize((self.size, self.size), Image.BILINEAR, box=box)
        if float(torch.rand(1, generator=generator)) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return pil_to_uint8(image)


class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, files: Sequence[Path], labels: torch.Tensor, transform: Callable, seed: int) -> None:
        self.files, self.labels, self.transform, self.seed = list(files), labels, transform, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # One generator per (seed, image): the same seed gives the same crops whatever the worker layout.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        with Image.open(self.files[i]) as image:
            return self.transform(image, generator), self.labels[i]


class FolderSplit(ImageSplit):
    """A split of image files read with PIL in DataLoader workers.

    Args:
        files: image paths.
        labels: ``(N,)`` labels.
        train_transform / eval_transform: ``(PIL image, generator) -> (3, H, W)`` uint8 tensor of a fixed size.
        augmentation: batch augmentation applied on the device after loading (``augment=True`` only).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: torch.Tensor,
        train_transform: Callable,
        eval_transform: Callable,
        augmentation: CropFlip | None = None,
        num_workers: int = 0,
    ) -> None:
        self.files = list(files)
        self.labels = labels.long()
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.augmentation = augmentation
        self.num_workers = num_workers

    def _load_batches(
        self, order: torch.Tensor, batch_size: int, *, augment: bool, seed: int, device: str | torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        transform = self.train_transform if augment else self.eval_transform
        dataset = _FolderDataset(self.files, self.labels, transform, seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order.tolist()),
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.device(device).type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            yield x.to(device, non_blocking=True).float().div_(255.0), y.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class VisionData:
    """A dataset ready for training: both splits plus what the backbone needs to know about its inputs.

    Attributes:
        name: dataset name (one of ``DATASETS``).
        num_classes: K.
        input_shape: ``(C, H, W)`` of one image as the model receives it.
        mean / std: per-channel normalisation constants (applied by the backbone's preprocess).
        train / test: the splits.
        class_names: one name per class index.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read {path} as a CIFAR python-pickle batch: {exc}") from None


def _cifar_arrays(
    batch: dict, label_key: bytes, path: Path, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if b"data" not in batch or label_key not in batch:
        raise UserError(f"{path} has no {b'data'!r} / {label_key!r} entries: not a CIFAR python-pickle batch")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: 'data' must be (N, 3072) uint8 rows, got shape {data.shape}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if labels.shape != (len(data),):
        raise UserError(f"{path}: {len(data)} images but {labels.size} labels")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:  # caught here, not as an IndexError deep in training
        raise UserError(f"{path}: labels must be in 0..{num_classes - 1}, found {int(bad[0])}")
    return images, torch.as_tensor(labels)


def _find_root(data_dir: Path, folder: str) -> Path:
    """``data_dir/folder``, or ``data_dir`` itself when the user pointed at the folder directly."""
    return data_dir if data_dir.name == folder else data_dir / folder


def _require_files(root: Path, names: Sequence[str], what: str, layout: str) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise UserError(f"{what} not found: expected {root}/ with {layout} (missing: {', '.join(missing)})")


def load_cifar(data_dir: Path, name: str) -> VisionData:
    """CIFAR-10, CIFAR-100 or CIFAR-2 from the python-pickle files (see the module docstring for the layout)."""
    crop = CropFlip(padding=4, flip=True)
    if name == "cifar100":
        root = _find_root(data_dir, "cifar-100-python")
        _require_files(root, ["train", "test"], "CIFAR-100", "the python-pickle files 'train' and 'test'")
        x_train, y_train = _cifar_arrays(_unpickle(root / "train"), b"fine_labels", root / "train", 100)
        x_test, y_test = _cifar_arrays(_unpickle(root / "test"), b"fine_labels", root / "test", 100)
        meta = root / "meta"
        names = tuple(n.decode() for n in _unpickle(meta)[b"fine_label_names"]) if meta.is_file() else ()
        classes = names or tuple(str(i) for i in range(100))
        return VisionData(
            name, 100, (3, 32, 32), CIFAR100_MEAN, CIFAR100_STD,
            TensorSplit(x_train, y_train, crop), TensorSplit(x_test, y_test), classes,
        )
    root = _find_root(data_dir, "cifar-10-batches-py")
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    _require_files(root, [*batches, "test_batch"], "CIFAR-10", "data_batch_1..data_batch_5 and test_batch")
    parts = [_cifar_arrays(_unpickle(root / b), b"labels", root / b, 10) for b in batches]
    x_train, y_train = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    x_test, y_test = _cifar_arrays(_unpickle(root / "test_batch"), b"labels", root / "test_batch", 10)
    if name == "cifar2":
        to_super = torch.tensor([0 if c in CIFAR2_TRANSPORT else 1 for c in range(10)])
        y_train, y_test = to_super[y_train], to_super[y_test]
        return VisionData(
            name, 2, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD,
            TensorSplit(x_train, y_train, crop), TensorSplit(x_test, y_test), CIFAR2_CLASSES,
        )
    return VisionData(
        name, 10, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD,
        TensorSplit(x_train, y_train, crop), TensorSplit(x_test, y_test), CIFAR10_CLASSES,
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _class_folders(split_dir: Path, what: str, layout: str) -> list[Path]:
    if not split_dir.is_dir():
        raise UserError(f"{what} not found: expected {split_dir}/ ({layout})")
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{what}: {split_dir}/ has no class sub-folders ({layout})")
    return classes


def _folder_split_files(
    split_dir: Path, class_index: dict[str, int], what: str, layout: str
) -> tuple[list[Path], torch.Tensor]:
    files, labels = [], []
    for folder in _class_folders(split_dir, what, layout):
        if folder.name not in class_index:
            raise UserError(f"{what}: class folder {folder} is not one of the {len(class_index)} training classes")
        found = _image_files(folder)
        files += found
        labels += [class_index[folder.name]] * len(found)
    if not files:
        raise UserError(f"{what}: no image files under {split_dir}/ ({layout})")
    return files, torch.tensor(labels, dtype=torch.long)


def _train_classes(train_dir: Path, what: str, layout: str) -> tuple[list[Path], dict[str, int]]:
    folders = _class_folders(train_dir, what, layout)
    empty = [f.name for f in folders if not _image_files(f)]
    if empty:
        raise UserError(f"{what}: class folder(s) without images under {train_dir}/: {', '.join(empty[:5])}")
    return folders, {f.name: i for i, f in enumerate(folders)}


def load_tiny_imagenet(data_dir: Path, num_workers: int) -> VisionData:
    """Tiny ImageNet (200 classes, 64×64); the official validation split is the test split (its test labels are
    not public)."""
    root = _find_root(data_dir, "tiny-imagenet-200")
    layout = "train/<wnid>/images/*.JPEG and val/images/ + val/val_annotations.txt (or val/<wnid>/*.JPEG)"
    what = "Tiny ImageNet"
    _, class_index = _train_classes(root / "train", what, layout)
    train_files, train_labels = _folder_split_files(root / "train", class_index, what, layout)
    annotations = root / "val" / "val_annotations.txt"
    if annotations.is_file():
        test_files, labels = [], []
        for line in annotations.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in class_index:
                raise UserError(f"{annotations}: class {fields[1]!r} is not one of the training classes")
            path = root / "val" / "images" / fields[0]
            if not path.is_file():
                raise UserError(f"{what}: {path} is listed in {annotations} but missing")
            test_files.append(path)
            labels.append(class_index[fields[1]])
        test_labels = torch.tensor(labels, dtype=torch.long)
    else:
        test_files, test_labels = _folder_split_files(root / "val", class_index, what, layout)
    fit = ResizeCenterCrop(64, 64)
    return VisionData(
        "tinyimagenet", len(class_index), (3, 64, 64), IMAGENET_MEAN, IMAGENET_STD,
        FolderSplit(train_files, train_labels, fit, fit, CropFlip(padding=8, flip=True), num_workers),
        FolderSplit(test_files, test_labels, fit, fit, None, num_workers),
        tuple(class_index),
    )


def load_image_folders(
    root: Path, name: str, what: str, image_size: int, resize: int, num_workers: int
) -> VisionData:
    """ImageNet-style folders ``root/train/<class>/*`` and ``root/val|test/<class>/*`` at ``image_size`` pixels."""
    layout = "train/<class>/* and val/<class>/* (or test/<class>/*) image folders"
    _, class_index = _train_classes(root / "train", what, layout)
    train_files, train_labels = _folder_split_files(root / "train", class_index, what, layout)
    test_dir = root / "val" if (root / "val").is_dir() else root / "test"
    test_files, test_labels = _folder_split_files(test_dir, class_index, what, layout)
    return VisionData(
        name, len(class_index), (3, image_size, image_size), IMAGENET_MEAN, IMAGENET_STD,
        FolderSplit(
            train_files, train_labels, RandomResizedCropFlip(image_size),
            ResizeCenterCrop(resize, image_size), None, num_workers,
        ),
        FolderSplit(
            test_files, test_labels, ResizeCenterCrop(resize, image_size),
            ResizeCenterCrop(resize, image_size), None, num_workers,
        ),
        tuple(class_index),
    )


def noisy_digit_images(images: np.ndarray, std: float = DIGITS_NOISE_STD, seed: int = DIGITS_NOISE_SEED) -> np.ndarray:
    """``images`` (in [0, 1]) plus i.i.d. Gaussian noise of ``std``, from a fixed seed (not clipped)."""
    rng = np.random.default_rng(seed)
    return (images + rng.normal(0.0, std, size=images.shape)).astype(np.float32)


def digits_split(labels: np.ndarray, seed: int, noisy: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of the stratified split for ``seed`` (one third of the train part if ``noisy``)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(labels.shape[0])
    train, test = train_test_split(
        indices, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=seed, shuffle=True
    )
    if noisy:
        train, _ = train_test_split(
            train, train_size=DIGITS_NOISY_TRAIN_FRACTION, stratify=labels[train], random_state=seed, shuffle=True
        )
    return np.sort(train), np.sort(test)


def _digits_arrays(noisy: bool) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as ``(N, 1, 8, 8)`` float images in [0, 1] (plus the fixed noise if ``noisy``) and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return (noisy_digit_images(images) if noisy else images), bunch.target.astype(np.int64)


def digits_noisy_left_out(seed: int) -> TensorSplit:
    """The digits-noisy images (with labels) that ``seed``'s split uses neither to train nor to test: the two thirds
    of the stratified training part that digits-noisy drops. No backbone trained on that split has seen them."""
    images, labels = _digits_arrays(noisy=True)
    full_train, _ = digits_split(labels, seed, noisy=False)
    kept, _ = digits_split(labels, seed, noisy=True)
    left = np.setdiff1d(full_train, kept)
    return TensorSplit(torch.from_numpy(images[left]), torch.from_numpy(labels[left]))


def load_digits_data(name: str, seed: int) -> VisionData:
    """scikit-learn's bundled 8×8 digits as 1-channel float images in [0, 1] (pixels / 16), split by ``seed``."""
    noisy = name == "digits-noisy"
    images, labels = _digits_arrays(noisy)
    train, test = digits_split(labels, seed, noisy)
    x_train = torch.from_numpy(images[train])
    mean, std = float(x_train.mean()), float(x_train.std())
    return VisionData(
        name, 10, (1, 8, 8), (mean,), (std,),
        TensorSplit(x_train, torch.from_numpy(labels[train])),
        TensorSplit(torch.from_numpy(images[test]), torch.from_numpy(labels[test])),
        tuple(str(i) for i in range(10)),
    )


def check_dataset_source(name: str, data_dir: str | Path | None) -> None:
    """Raise :class:`UserError` unless ``name`` is a known dataset and, for those read from local files,
    ``data_dir`` is an existing folder: the cheap checks a CLI makes before it creates any output.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    if name in ("digits", "digits-noisy"):
        return
    if data_dir is None:
        raise UserError(f"dataset {name!r} is read from local files: pass --data-dir (see ee_rl.vision.data)")
    if not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {str(data_dir)!r} is not a folder (dataset {name!r} is read from local files)")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    num_workers: int = 0,
    image_size: int = 224,
    resize: int = 256,
) -> VisionData:
    """Load dataset ``name`` (one of ``DATASETS``) from ``data_dir``.

    ``seed`` only matters for ``digits`` / ``digits-noisy`` (it picks the split). ``image_size`` / ``resize`` set the
    crop and the shorter-side resize of ``imagenet`` and ``imagefolder``. A missing or malformed dataset is a
    :class:`UserError` naming the expected path and layout.
    """
    check_dataset_source(name, data_dir)
    if name in ("digits", "digits-noisy"):
        return load_digits_data(name, seed)
    data_dir = Path(data_dir)  # type: ignore[arg-type]  (checked above)
    if name in ("cifar10", "cifar100", "cifar2"):
        return load_cifar(data_dir, name)
    if name == "tinyimagenet":
        return load_tiny_imagenet(data_dir, num_workers)
    if name == "imagenet":
        return load_image_folders(
            _find_root(data_dir, "imagenet"), name, "ImageNet", image_size, resize, num_workers
        )
    return load_image_folders(data_dir, name, f"image folder dataset {data_dir}", image_size, resize, num_workers)
