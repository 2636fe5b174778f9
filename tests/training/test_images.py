"""digits and resnet18 on tiny data, and every image dataset reader on files in its real format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from tests.training.conftest import (
    cifar_rows,
    read_manifest,
    train,
    version_dir,
    write_cifar10,
    write_fashionmnist,
    write_image_folder,
)
from training.cifar import read_cifar10
from training.errors import TrainingError
from training.image_data import convert_images, digits_to_uint8, load_images
from training.models import read_resnet18_weights
from training.parity import TOLERANCE


def _onnx_probabilities(directory: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return np.asarray(session.run(["probabilities"], {"images": images})[0])


def test_digits_tiny_run(model_store: Path) -> None:
    assert (
        train("digits", "--model-store", model_store, "--epochs", "1", "--max-samples", "64") == 0
    )
    manifest = read_manifest(model_store, "digits")
    assert manifest.task == "image_classification"
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("images", "UINT8", [-1, 1, 28, 28])
    ]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [
        ("probabilities", "FP32", [-1, 10])
    ]
    assert manifest.labels == [str(d) for d in range(10)]
    pre = manifest.preprocessing
    assert pre.kind == "image"
    assert (pre.height, pre.width, pre.channels, pre.layout) == (28, 28, 1, "NCHW")
    assert pre.invert is False
    assert len(pre.mean) == len(pre.std) == 1
    assert set(manifest.parity) == {"torchscript", "onnx"}
    assert max(manifest.parity.values()) <= TOLERANCE
    directory = version_dir(model_store, "digits")
    assert (directory / "confusion_matrix.png").is_file()
    assert (directory / "loss_curve.png").is_file()
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(_onnx_probabilities(directory, images).sum(axis=1), 1, atol=1e-5)


def test_digits_are_upscaled_with_pillow_bilinear() -> None:
    """Training pixels equal what the gateway makes of the 8x8 digit saved as a PNG."""
    data = load_images("digits", root=None, channels=None, size=28, split_seed=0, max_samples=None)
    assert data.train.images.dtype == np.uint8
    assert data.train.images.shape[1:] == (1, 28, 28)
    small = digits_to_uint8(load_digits().images)
    assert small.max() == 255
    expected = {
        np.asarray(
            Image.fromarray(image, mode="L").resize((28, 28), Image.Resampling.BILINEAR)
        ).tobytes()
        for image in small
    }
    assert all(image[0].tobytes() in expected for image in data.train.images)
    assert all(image[0].tobytes() in expected for image in data.test.images)
    assert len(data.train) + len(data.test) == len(small)


def test_resnet18_transfer_from_local_weights_with_frozen_backbone(
    model_store: Path, tmp_path: Path
) -> None:
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18-imagenet.pth"
    imagenet = resnet18(weights=None)  # stands in for the real ImageNet file (same layout)
    torch.save(imagenet.state_dict(), weights)
    assert (
        train(
            "resnet18",
            "--model-store",
            model_store,
            "--weights",
            weights,
            "--freeze",
            "--epochs",
            "1",
            "--max-samples",
            "24",
        )
        == 0
    )
    manifest = read_manifest(model_store, "resnet18")
    assert manifest.inputs[0].shape == [-1, 3, 32, 32]
    assert manifest.preprocessing.kind == "image"
    assert manifest.preprocessing.channels == 3
    assert manifest.preprocessing.mean == pytest.approx([0.485, 0.456, 0.406])
    assert manifest.batching.max_batch_size == 32
    assert any("transfer learning" in note for note in manifest.provenance.notes)
    exported = torch.jit.load(  # type: ignore[no-untyped-call]
        str(version_dir(model_store, "resnet18") / "model.pt")
    )
    state = exported.state_dict()
    frozen = imagenet.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean"):
        torch.testing.assert_close(state[f"net.backbone.{key}"], frozen[key], rtol=0, atol=0)
    assert state["net.backbone.fc.weight"].shape == (10, 512)


def test_resnet18_from_scratch_on_an_image_folder(
    model_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_image_folder(tmp_path / "pizza_steak_sushi", per_class=5)
    assert (
        train(
            "resnet18",
            "--model-store",
            model_store,
            "--dataset",
            "imagefolder",
            "--data",
            root,
            "--epochs",
            "1",
        )
        == 0
    )
    assert "from scratch" in capsys.readouterr().out
    manifest = read_manifest(model_store, "resnet18-pizza_steak_sushi")
    assert manifest.labels == ["pizza", "steak", "sushi"]
    assert manifest.outputs[0].shape == [-1, 3]
    assert manifest.preprocessing.kind == "image"
    assert manifest.preprocessing.channels == 3
    assert any("from scratch" in note for note in manifest.provenance.notes)
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    directory = version_dir(model_store, "resnet18-pizza_steak_sushi")
    assert _onnx_probabilities(directory, images).shape == (2, 3)


def test_tinyvgg_on_fashionmnist_files(model_store: Path, tmp_path: Path) -> None:
    root = write_fashionmnist(tmp_path / "data", train=24, test=12)
    assert (
        train(
            "digits",
            "--model-store",
            model_store,
            "--dataset",
            "fashionmnist",
            "--data",
            root,
            "--epochs",
            "1",
        )
        == 0
    )
    manifest = read_manifest(model_store, "digits-fashionmnist")
    assert manifest.labels is not None
    assert manifest.labels[0] == "T-shirt/top"
    assert len(manifest.labels) == 10
    assert manifest.inputs[0].shape == [-1, 1, 28, 28]


def test_fashionmnist_reader_resizes_and_replicates(tmp_path: Path) -> None:
    root = write_fashionmnist(tmp_path / "data", train=10, test=6)
    data = load_images("fashionmnist", root=root, channels=3, size=32, split_seed=0, max_samples=8)
    assert data.train.images.shape == (8, 3, 32, 32)
    assert data.test.images.shape == (6, 3, 32, 32)
    assert np.array_equal(data.train.images[:, 0], data.train.images[:, 2])


def test_fashionmnist_missing_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="FashionMNIST not found"):
        load_images(
            "fashionmnist",
            root=tmp_path / "empty",
            channels=None,
            size=28,
            split_seed=0,
            max_samples=None,
        )


def test_cifar10_reader_keeps_pixel_layout(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "data", per_batch=3)
    train_split, test_split, names = read_cifar10(root)
    assert names[:3] == ["airplane", "automobile", "bird"]
    assert train_split.images.shape == (15, 3, 32, 32)
    assert test_split.images.shape == (3, 3, 32, 32)
    row = cifar_rows(3, seed=0)[1]  # data_batch_1, second image
    image = train_split.images[1]
    assert image[0, 0, 0] == row[0]  # red plane first, row-major
    assert image[1, 0, 0] == row[1024]
    assert image[2, 31, 31] == row[3071]
    assert image[0, 2, 5] == row[2 * 32 + 5]
    assert train_split.labels[:3].tolist() == [0, 1, 2]


def test_cifar10_as_gray_digits_input(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "data", per_batch=2)
    data = load_images("cifar10", root=root, channels=1, size=28, split_seed=0, max_samples=4)
    assert data.train.images.shape == (4, 1, 28, 28)
    rgb = np.ascontiguousarray(read_cifar10(root)[1].images[0].transpose(1, 2, 0))
    gray = Image.fromarray(rgb, mode="RGB").convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    assert np.array_equal(data.test.images[0, 0], np.asarray(gray))


def test_cifar10_reader_refuses_foreign_pickles(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "data", per_batch=2)

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("should never run",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(TrainingError, match=r"refusing to load builtins\.print"):
        read_cifar10(root)


def test_cifar10_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="CIFAR-10 not found"):
        read_cifar10(tmp_path)


def test_image_folder_with_train_and_test_folders(tmp_path: Path) -> None:
    root = tmp_path / "pss"
    write_image_folder(root / "train", per_class=4, mode="L")
    write_image_folder(root / "test", per_class=2)
    data = load_images(
        "imagefolder", root=root, channels=3, size=16, split_seed=0, max_samples=None
    )
    assert data.labels == ["pizza", "steak", "sushi"]
    assert data.train.images.shape == (12, 3, 16, 16)
    assert data.test.images.shape == (6, 3, 16, 16)
    assert data.split == "the test/ folder"
    assert np.array_equal(data.train.images[:, 0], data.train.images[:, 1])  # gray -> RGB


def test_image_folder_split_is_stratified(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "flat", per_class=10)
    data = load_images(
        "imagefolder", root=root, channels=1, size=20, split_seed=3, max_samples=None
    )
    assert data.train.images.shape == (24, 1, 20, 20)
    assert sorted(np.bincount(data.test.labels).tolist()) == [2, 2, 2]


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "broken", per_class=3)
    (root / "steak" / "steak_1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(TrainingError, match=r"corrupt image .*steak_1\.png"):
        load_images("imagefolder", root=root, channels=3, size=16, split_seed=0, max_samples=None)


def test_empty_image_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "nothing" / "cats").mkdir(parents=True)
    with pytest.raises(TrainingError, match="not an image folder"):
        load_images(
            "imagefolder",
            root=tmp_path / "nothing",
            channels=3,
            size=16,
            split_seed=0,
            max_samples=None,
        )


def test_convert_images_gray_to_rgb_without_resize() -> None:
    images = np.arange(2 * 1 * 8 * 8, dtype=np.uint8).reshape(2, 1, 8, 8)
    converted = convert_images(images, channels=3, size=8)
    assert converted.shape == (2, 3, 8, 8)
    assert all(np.array_equal(converted[:, c], images[:, 0]) for c in range(3))


def test_resnet18_weights_reader(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    wrapped = tmp_path / "checkpoint.pth"
    state = {
        f"module.{k}": v for k, v in resnet18(weights=None, num_classes=7).state_dict().items()
    }
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    loaded = read_resnet18_weights(wrapped)
    assert "conv1.weight" in loaded
    assert not any(key.startswith("fc.") for key in loaded)  # the head is always replaced
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(TrainingError, match="cannot load weights"):
        read_resnet18_weights(garbage)
    not_tensors = tmp_path / "numbers.pth"
    torch.save({"lr": 0.1}, not_tensors)
    with pytest.raises(TrainingError, match="not a state dict of tensors"):
        read_resnet18_weights(not_tensors)
