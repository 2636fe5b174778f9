"""iris and diabetes: tiny runs export every format, pass parity and write a valid manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.manifest import Manifest, Task
from tests.training.conftest import read_manifest, train, version_dir
from training.errors import TrainingError
from training.parity import TOLERANCE
from training.tabular_data import load_tabular

IRIS_FEATURES = [
    "sepal length (cm)",
    "sepal width (cm)",
    "petal length (cm)",
    "petal width (cm)",
]


@pytest.fixture(scope="module")
def iris_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("iris") / "store"
    assert train("iris", "--model-store", store, "--epochs", "3") == 0
    return store


def test_iris_writes_every_artifact(iris_store: Path) -> None:
    files = {p.name for p in version_dir(iris_store, "iris").iterdir()}
    assert {
        "model.onnx",
        "model.pt",
        "model.json",
        "metrics.json",
        "confusion_matrix.png",
        "loss_curve.png",
    } <= files
    assert "model.pt2" not in files
    assert not [p for p in (iris_store / "iris").iterdir() if p.name != "1"]  # no staging left


def test_iris_manifest_follows_the_contract(iris_store: Path) -> None:
    manifest = read_manifest(iris_store, "iris")
    assert manifest.name == "iris"
    assert manifest.version == 1
    assert manifest.task is Task.TABULAR_CLASSIFICATION
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("features", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [
        ("probabilities", "FP32", [-1, 3])
    ]
    assert manifest.labels == ["setosa", "versicolor", "virginica"]
    assert manifest.preprocessing.kind == "tabular"
    assert manifest.preprocessing.feature_names == IRIS_FEATURES
    assert manifest.batching.max_batch_size == 64
    assert manifest.artifacts.onnx == "model.onnx"
    assert manifest.artifacts.torchscript == "model.pt"
    assert manifest.artifacts.pt2 is None
    assert set(manifest.parity) == {"torchscript", "onnx"}
    assert all(0 <= v <= TOLERANCE for v in manifest.parity.values())
    assert {"accuracy", "macro_f1"} <= set(manifest.metrics)
    provenance = manifest.provenance
    assert provenance.seed == 0
    assert provenance.epochs == 3
    assert {"torch", "torchvision", "onnx", "onnxruntime", "scikit-learn"} <= set(
        provenance.packages
    )
    assert provenance.created.endswith("+00:00")


def test_iris_metrics_json_has_history_and_confusion_matrix(iris_store: Path) -> None:
    report = json.loads((version_dir(iris_store, "iris") / "metrics.json").read_text())
    assert len(report["history"]["train_loss"]) == 3
    assert len(report["history"]["test_loss"]) == 3
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == report["samples"]["test"] == 30


def test_iris_graph_takes_raw_features_and_returns_probabilities(iris_store: Path) -> None:
    directory = version_dir(iris_store, "iris")
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    raw = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 3)
    probabilities = session.run(["probabilities"], {"features": raw.astype(np.float32)})[0]
    assert probabilities.shape == (9, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    scripted = torch.jit.load(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
    torchscript = scripted(torch.from_numpy(raw.astype(np.float32))).numpy()
    np.testing.assert_allclose(torchscript, probabilities, atol=TOLERANCE)


def test_next_run_gets_the_next_version_and_missing_skips(iris_store: Path) -> None:
    assert train("iris", "--model-store", iris_store, "--missing") == 0
    assert not version_dir(iris_store, "iris", 2).exists()
    with pytest.raises(TrainingError, match="already exists"):
        train("iris", "--model-store", iris_store, "--version", "1", "--epochs", "1")


def test_same_seed_repeats_the_run(iris_store: Path) -> None:
    assert train("iris", "--model-store", iris_store, "--epochs", "3") == 0
    first = json.loads((version_dir(iris_store, "iris", 1) / "metrics.json").read_text())
    second = json.loads((version_dir(iris_store, "iris", 2) / "metrics.json").read_text())
    assert second["version"] == 2
    assert first["history"] == second["history"]
    assert first["metrics"] == second["metrics"]


def test_diabetes_regression_in_raw_units(model_store: Path) -> None:
    assert train("diabetes", "--model-store", model_store, "--epochs", "2") == 0
    manifest = read_manifest(model_store, "diabetes")
    assert manifest.task is Task.TABULAR_REGRESSION
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("features", "FP32", [-1, 10])
    ]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [
        ("prediction", "FP32", [-1, 1])
    ]
    assert manifest.labels is None
    assert manifest.preprocessing.kind == "tabular"
    assert manifest.preprocessing.feature_names[:4] == ["age", "sex", "bmi", "bp"]
    assert {"mse", "mae", "r2", "rmse"} <= set(manifest.metrics)
    directory = version_dir(model_store, "diabetes")
    assert (directory / "pred_vs_actual.png").is_file()
    assert (directory / "loss_curve.png").is_file()
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    patient = np.array([[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]], dtype=np.float32)
    prediction = session.run(["prediction"], {"features": patient})[0]
    assert prediction.shape == (1, 1)
    assert 0 < prediction[0, 0] < 600  # disease progression is in the tens to hundreds


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_classification_with_named_target(model_store: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    for i in range(40):
        species = ["gentoo", "adelie"][i % 2]
        rows.append([species, *np.round(rng.normal(size=3) + (i % 2), 3)])
    csv = _write_csv(tmp_path / "Penguins Small.csv", ["species", "bill", "flipper", "mass"], rows)
    assert (
        train(
            "iris",
            "--model-store",
            model_store,
            "--data",
            csv,
            "--target",
            "species",
            "--epochs",
            "2",
        )
        == 0
    )
    manifest = Manifest.read(model_store / "iris-penguins-small" / "1")
    assert manifest.labels == ["adelie", "gentoo"]
    assert manifest.preprocessing.kind == "tabular"
    assert manifest.preprocessing.feature_names == ["bill", "flipper", "mass"]
    assert manifest.outputs[0].shape == [-1, 2]
    assert manifest.provenance.dataset.startswith("csv:")


def test_csv_regression_defaults_to_last_column(tmp_path: Path) -> None:
    rows: list[list[object]] = [[i, i * 2.0, 3.0 * i + 1] for i in range(20)]
    csv = _write_csv(tmp_path / "line.csv", ["a", "b", "y"], rows)
    data = load_tabular(
        classification=False, csv_path=csv, target=None, split_seed=0, max_samples=None
    )
    assert data.feature_names == ["a", "b"]
    assert data.labels is None
    assert len(data.train) == 16
    assert len(data.test) == 4


@pytest.mark.parametrize(
    ("header", "rows", "target", "message"),
    [
        (
            ["a", "label"],
            [[1, "x"], ["oops", "y"], [2, "x"]],
            "label",
            "column 'a' is not a number",
        ),
        (["a", "label"], [[1, "x"], [2, "y"], [3, "x"]], "kind", "target column 'kind' not in"),
        (["a", "label"], [[1, "x"]], "label", "at least two data rows"),
        (["a", "b"], [[1, 2], [3], [4, 5]], "b", "expected 2 fields"),
    ],
)
def test_csv_problems_are_named(
    tmp_path: Path, header: list[str], rows: list[list[object]], target: str, message: str
) -> None:
    csv = _write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(TrainingError, match=message):
        load_tabular(
            classification=True, csv_path=csv, target=target, split_seed=0, max_samples=None
        )


def test_regression_target_must_be_numeric(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "bad.csv", ["a", "y"], [[1, "x"], [2, "y"], [3, "z"]])
    with pytest.raises(TrainingError, match="must be numeric"):
        load_tabular(classification=False, csv_path=csv, target="y", split_seed=0, max_samples=None)
