"""Image classifiers for the torch backends, written as model-store versions: torchvision ResNets
with random weights (nothing downloaded) or a tiny CNN, exported by `training.export` to
TorchScript and, on request, AOTInductor `.pt2` compiled for the device that will serve it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.manifest import (
    Artifacts,
    Batching,
    ImagePreprocessing,
    Manifest,
    Provenance,
    Task,
    TensorSpec,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED = 0


@dataclass(frozen=True)
class ImageModel:
    """How to build one image classifier."""

    name: str
    image_size: int
    classes: int
    max_batch_size: int


BUILT = {
    "resnet18": ImageModel("resnet18", 224, 1000, 64),
    "resnet50": ImageModel("resnet50", 224, 1000, 64),
    "tiny": ImageModel("tiny", 16, 10, 16),
}
"""The models this module can build, by name."""


def network(spec: ImageModel) -> Any:
    """The serving graph (uint8 images in, probabilities out), random weights, eval mode."""
    import torch

    from training.models import ImageClassifierGraph, TinyVGG

    torch.manual_seed(SEED)
    if spec.name == "tiny":
        net = TinyVGG(3, spec.classes, spec.image_size, hidden=8)
    else:
        import torchvision

        net = getattr(torchvision.models, spec.name)(weights=None, num_classes=spec.classes)
    return ImageClassifierGraph(net, IMAGENET_MEAN, IMAGENET_STD).eval().requires_grad_(False)


def manifest(spec: ImageModel, artifacts: Artifacts) -> Manifest:
    size = spec.image_size
    return Manifest(
        name=spec.name,
        version=1,
        task=Task.IMAGE_CLASSIFICATION,
        inputs=[TensorSpec(name="images", datatype="UINT8", shape=[-1, 3, size, size])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, spec.classes])],
        labels=[str(i) for i in range(spec.classes)],
        preprocessing=ImagePreprocessing(
            height=size, width=size, channels=3, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)
        ),
        batching=Batching(max_batch_size=spec.max_batch_size),
        artifacts=artifacts,
        provenance=Provenance(
            dataset="none: random weights",
            seed=SEED,
            created=dt.datetime.now(dt.UTC).isoformat(),
            notes=["built by loadtests.systems.torch_store for throughput checks only"],
        ),
    )


def write_version(spec: ImageModel, store: Path, device: str, *, pt2: bool) -> Path:
    """`store/<name>/1/` with model.json, model.pt and (pt2) model.pt2 compiled for `device`."""
    import torch

    from training.export import (
        PT2_FILE,
        TORCHSCRIPT_FILE,
        GraphSignature,
        export_pt2,
        export_torchscript,
    )

    directory = store / spec.name / "1"
    directory.mkdir(parents=True, exist_ok=True)
    module = network(spec).to(device)
    size = spec.image_size
    example = (torch.zeros((2, 3, size, size), dtype=torch.uint8, device=device),)
    export_torchscript(module, example, directory / TORCHSCRIPT_FILE)
    built = manifest(spec, Artifacts(onnx=None, torchscript=TORCHSCRIPT_FILE))
    if pt2:
        signature = GraphSignature(built.inputs, built.outputs, {"images": {0: "batch"}})
        export_pt2(module, example, signature, directory / PT2_FILE)
        built = manifest(spec, Artifacts(onnx=None, torchscript=TORCHSCRIPT_FILE, pt2=PT2_FILE))
    built.write(directory)
    return directory
