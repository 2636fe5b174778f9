"""Image datasets as uint8 NCHW arrays: sklearn digits, FashionMNIST, CIFAR-10, ImageFolder.

Every resize goes through Pillow's bilinear filter, the same call the gateway makes on uploads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sklearn.model_selection import train_test_split

from training.errors import TrainingError

TEST_FRACTION = 0.2
NATIVE_CHANNELS = {"digits": 1, "fashionmnist": 1, "cifar10": 3, "imagefolder": 3}


@dataclass(frozen=True)
class ImageSplit:
    images: NDArray[np.uint8]
    """[N, C, H, W], 0..255."""
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageDataset:
    source: str
    labels: list[str]
    channels: int
    size: int
    train: ImageSplit
    test: ImageSplit
    split: str
    """How the held-out split was made."""


def resize_gray(pixels: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """Resize one 2-D uint8 image to size x size, exactly as the gateway does."""
    image = Image.fromarray(pixels, mode="L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def pil_to_chw(image: Image.Image, channels: int, size: int) -> NDArray[np.uint8]:
    """Convert to "L" or "RGB", resize bilinearly, and return [C, H, W] uint8."""
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels: NDArray[np.uint8] = np.asarray(image, dtype=np.uint8)
    if channels == 1:
        return pixels[None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def digits_to_uint8(values: NDArray[np.floating]) -> NDArray[np.uint8]:
    """sklearn digits hold 0..16 (ink bright); scale to 0..255."""
    scaled: NDArray[np.uint8] = np.rint(np.clip(values, 0, 16) * (255.0 / 16.0)).astype(np.uint8)
    return scaled


def convert_images(images: NDArray[np.uint8], channels: int, size: int) -> NDArray[np.uint8]:
    """Bring [N, C, H, W] uint8 images to the wanted channel count and size.

    Gray to RGB replicates the channel; RGB to gray and every resize go through Pillow.
    """
    count, native, height, width = images.shape
    if native == channels and (height, width) == (size, size):
        return images
    if native == 1 and (height, width) == (size, size):
        return np.repeat(images, channels, axis=1)
    out = np.empty((count, channels, size, size), dtype=np.uint8)
    for i in range(count):
        mode = "L" if native == 1 else "RGB"
        pixels = images[i, 0] if native == 1 else images[i].transpose(1, 2, 0)
        out[i] = pil_to_chw(
            Image.fromarray(np.ascontiguousarray(pixels), mode=mode), channels, size
        )
    return out


def channel_stats(images: NDArray[np.uint8]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images scaled to [0, 1]."""
    channels = images.shape[1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    chunk = 2048
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
    count = max(1, images.shape[0] * images.shape[2] * images.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return [float(m) for m in mean], [float(s) for s in std]


def load_images(
    dataset: str,
    *,
    root: Path | None,
    channels: int | None,
    size: int,
    split_seed: int,
    max_samples: int | None,
    download: bool = False,
) -> ImageDataset:
    """Load `dataset` at `size` x `size` with `channels` (None: the dataset's own)."""
    if dataset not in NATIVE_CHANNELS:
        raise TrainingError(
            f"unknown image dataset {dataset!r} (choose from {list(NATIVE_CHANNELS)})"
        )
    channels = channels or NATIVE_CHANNELS[dataset]
    if dataset != "digits":
        if root is None:
            raise TrainingError(f"--dataset {dataset} needs --data pointing at its directory")
        if not root.exists() and not download:
            raise TrainingError(f"dataset path does not exist: {root}")
    rng = np.random.default_rng(split_seed)
    if dataset == "digits":
        return _digits(channels, size, split_seed, max_samples)
    assert root is not None
    if dataset == "fashionmnist":
        return _fashionmnist(root, channels, size, rng, max_samples, download)
    if dataset == "cifar10":
        return _cifar10(root, channels, size, rng, max_samples, download)
    return _imagefolder(root, channels, size, split_seed, max_samples)


def _cap(split: ImageSplit, count: int | None, rng: np.random.Generator | None) -> ImageSplit:
    """At most `count` samples: a seeded random subset, or the first ones when rng is None."""
    if count is None or len(split) <= count:
        return split
    chosen = np.sort(rng.permutation(len(split))[:count]) if rng is not None else np.arange(count)
    return ImageSplit(split.images[chosen], split.labels[chosen])


def _stratified(
    images: NDArray[np.uint8], labels: NDArray[np.int64], seed: int
) -> tuple[ImageSplit, ImageSplit]:
    _, counts = np.unique(labels, return_counts=True)
    can_stratify = counts.min() >= 2 and int(np.ceil(len(labels) * TEST_FRACTION)) >= len(counts)
    if len(labels) < 2:
        raise TrainingError("need at least two images to make a train and a test split")
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=TEST_FRACTION,
        random_state=seed,
        stratify=labels if can_stratify else None,
    )
    return ImageSplit(x_train, y_train), ImageSplit(x_test, y_test)


def _digits(channels: int, size: int, seed: int, max_samples: int | None) -> ImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = digits_to_uint8(np.asarray(digits.images))
    gray = np.stack([resize_gray(image, size) for image in small])[:, None]
    images = np.repeat(gray, channels, axis=1) if channels > 1 else gray
    train, test = _stratified(images, np.asarray(digits.target, dtype=np.int64), seed)
    return ImageDataset(
        source=f"sklearn.datasets.load_digits (8x8, 0..16 scaled to 0..255, Pillow bilinear "
        f"to {size}x{size}, {channels} channel(s))",
        labels=[str(d) for d in range(10)],
        channels=channels,
        size=size,
        train=_cap(train, max_samples, None),
        test=_cap(test, max_samples, None),
        split=f"{int(TEST_FRACTION * 100)}% stratified, split seed {seed}",
    )


def _fashionmnist(
    root: Path,
    channels: int,
    size: int,
    rng: np.random.Generator,
    max_samples: int | None,
    download: bool,
) -> ImageDataset:
    from torchvision.datasets import FashionMNIST

    splits = []
    for train in (True, False):
        try:
            data = FashionMNIST(str(root), train=train, download=download)
        except RuntimeError as exc:
            raise TrainingError(
                f"FashionMNIST not found under {root / 'FashionMNIST' / 'raw'} (needs the four "
                f"unpacked *-idx?-ubyte files; pass --download to fetch them): {exc}"
            ) from exc
        except (OSError, ValueError, TypeError, AssertionError) as exc:
            raise TrainingError(f"cannot read FashionMNIST under {root}: {exc}") from exc
        split = ImageSplit(data.data.numpy()[:, None], data.targets.numpy().astype(np.int64))
        split = _cap(split, max_samples, rng)
        splits.append(ImageSplit(convert_images(split.images, channels, size), split.labels))
        labels = [str(c) for c in data.classes]
    return ImageDataset(
        f"torchvision FashionMNIST at {root} ({size}x{size}, {channels} channel(s))",
        labels,
        channels,
        size,
        splits[0],
        splits[1],
        split="the official t10k test set",
    )


def _cifar10(
    root: Path,
    channels: int,
    size: int,
    rng: np.random.Generator,
    max_samples: int | None,
    download: bool,
) -> ImageDataset:
    from training.cifar import read_cifar10

    if download:
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(root), train=True, download=True)
        except (OSError, RuntimeError) as exc:
            raise TrainingError(f"cannot download CIFAR-10 into {root}: {exc}") from exc
    train, test, labels = read_cifar10(root)
    splits = []
    for split in (train, test):
        capped = _cap(ImageSplit(split.images, split.labels), max_samples, rng)
        splits.append(ImageSplit(convert_images(capped.images, channels, size), capped.labels))
    return ImageDataset(
        f"CIFAR-10 python batches at {root} ({size}x{size}, {channels} channel(s))",
        labels,
        channels,
        size,
        splits[0],
        splits[1],
        split="the official test_batch",
    )


def _decode_folder(
    folder: Path, channels: int, size: int
) -> tuple[NDArray[np.uint8], NDArray[np.int64], list[str]]:
    from torchvision.datasets import ImageFolder

    def decode(path: str) -> NDArray[np.uint8]:
        try:
            with Image.open(path) as image:
                return pil_to_chw(image, channels, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise TrainingError(f"corrupt image {path}: {exc}") from exc

    try:
        folder_data = ImageFolder(str(folder), loader=decode)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise TrainingError(f"not an image folder ({folder}): {exc}") from exc
    if len(folder_data) == 0:
        raise TrainingError(f"no images under {folder}")
    images = np.empty((len(folder_data), channels, size, size), dtype=np.uint8)
    labels = np.empty(len(folder_data), dtype=np.int64)
    for i in range(len(folder_data)):
        images[i], labels[i] = folder_data[i]
    return images, labels, list(folder_data.classes)


def _imagefolder(
    root: Path, channels: int, size: int, seed: int, max_samples: int | None
) -> ImageDataset:
    if not root.is_dir():
        raise TrainingError(f"image folder is not a directory: {root}")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    if has_splits:
        x_train, y_train, classes = _decode_folder(root / "train", channels, size)
        x_test, y_test, test_classes = _decode_folder(root / "test", channels, size)
        if test_classes != classes:
            raise TrainingError(
                f"{root}/train and {root}/test have different class folders: "
                f"{classes} vs {test_classes}"
            )
        train, test = ImageSplit(x_train, y_train), ImageSplit(x_test, y_test)
        how = "the test/ folder"
    else:
        images, labels, classes = _decode_folder(root, channels, size)
        train, test = _stratified(images, labels, seed)
        how = f"{int(TEST_FRACTION * 100)}% stratified, split seed {seed}"
    rng = np.random.default_rng(seed)
    return ImageDataset(
        f"ImageFolder {root} ({size}x{size}, {channels} channel(s))",
        [str(c) for c in classes],
        channels,
        size,
        _cap(train, max_samples, rng),
        _cap(test, max_samples, rng),
        split=how,
    )
