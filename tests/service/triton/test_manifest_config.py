"""Our manifests described as Triton configurations."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import DataType

from service.manifest import Manifest
from service.triton.manifest_config import config_from_manifest
from service.triton.resolve import resolve_model
from service.triton.validation import check_servable, check_tensors
from tests.tiny_models import classifier, image_classifier, text_embedder


def test_same_tensors_as_completing_the_same_file(tmp_path: Path) -> None:
    """The manifest's description and Triton's completion of its ONNX file agree."""
    for directory in (
        classifier(tmp_path, max_batch=4),
        image_classifier(tmp_path),
        text_embedder(tmp_path),
    ):
        manifest = Manifest.read(directory)
        config = config_from_manifest(manifest, "onnxruntime_onnx", 4)
        completed = resolve_model(directory / "model.onnx", name=manifest.name).config
        assert list(config.input) == list(completed.input)
        assert list(config.output) == list(completed.output)
        assert config.max_batch_size == completed.max_batch_size
        check_servable(config)
        check_tensors(config)


def test_batch_size_platform_and_task(tmp_path: Path) -> None:
    manifest = Manifest.read(image_classifier(tmp_path))
    config = config_from_manifest(manifest, "pytorch_libtorch", 16)
    assert (config.name, config.platform, config.backend) == ("img", "pytorch_libtorch", "pytorch")
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [16]
    assert config.input[0].data_type == DataType.TYPE_UINT8
    assert list(config.input[0].dims) == [1, 8, 8]
    assert config.parameters["task"].string_value == "image_classification"
    assert config.version_policy.HasField("all")


def test_without_batching_the_batch_dimension_stays(tmp_path: Path) -> None:
    manifest = Manifest.read(classifier(tmp_path))
    config = config_from_manifest(manifest, "onnxruntime_onnx", 0)
    assert list(config.input[0].dims) == [-1, 4]
    assert not config.HasField("dynamic_batching")
