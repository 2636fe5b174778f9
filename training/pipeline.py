"""One model run: load data, train, export, check parity, write reports and the manifest."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from service.manifest import (
    Artifacts,
    Batching,
    ImagePreprocessing,
    Manifest,
    Provenance,
    SeriesPreprocessing,
    TabularPreprocessing,
    Task,
    TensorSpec,
    ValueRange,
)
from training.built import BuiltModel
from training.config import RunOptions
from training.errors import TrainingError
from training.export import GraphSignature, export_all
from training.loop import FitSettings, History, fit, predict
from training.parity import check_parity, tiled_batches
from training.reports import (
    classification_metrics,
    plot_confusion_matrix,
    plot_forecast,
    plot_loss_curve,
    plot_pred_vs_actual,
    regression_metrics,
    write_json,
)
from training.runtime import configure_threads, package_versions, seed_everything, utc_timestamp
from training.store import has_complete_version, next_version, staged_version_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Outcome:
    """What a run produced, for the command line's summary."""

    name: str
    version: int
    path: Path
    metrics: dict[str, float]
    parity: dict[str, float]
    seconds: float


def run(options: RunOptions) -> Outcome | None:
    """Train (or, for minilm, just export) one model into the store; None when skipped."""
    name = options.store_name
    store = options.model_store
    if options.model == "lstm_stream":
        from training.stream import run_stream

        started = time.perf_counter()
        streamed = run_stream(options)
        if streamed is None:
            return None
        version, path, parity = streamed
        return Outcome(name, version, path, {}, parity, time.perf_counter() - started)
    if options.missing and has_complete_version(store, name):
        print(f"{name}: a finished version exists in {store / name}; skipping (--missing)")
        return None
    version = options.version or next_version(store, name)
    seed_everything(options.seed)
    configure_threads()
    started = time.perf_counter()
    with staged_version_dir(store, name, version) as staging:
        if options.model in ("iris", "diabetes"):
            built = _tabular(options, staging)
        elif options.model in ("digits", "resnet18"):
            built = _image(options, staging)
        elif options.model == "minilm":
            from training.minilm import build_minilm

            built = build_minilm(options, staging)
        elif options.model == "lstm":
            built = _forecaster(options, staging)
        else:
            raise TrainingError(f"unknown model {options.model!r}")
        manifest = _manifest(options, name, version, built)
        manifest.write(staging)
        seconds = time.perf_counter() - started
        write_json(staging / "metrics.json", _metrics_json(manifest, built, seconds))
    return Outcome(
        name, version, store / name / str(version), manifest.metrics, built.parity, seconds
    )


def _manifest(options: RunOptions, name: str, version: int, built: BuiltModel) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        task=built.task,
        inputs=built.signature.inputs,
        outputs=built.signature.outputs,
        labels=built.labels,
        preprocessing=built.preprocessing,
        batching=Batching(max_batch_size=options.recipe.max_batch_size),
        artifacts=built.artifacts,
        metrics={k: v for k, v in built.metrics.items() if math.isfinite(v)},
        parity=built.parity,
        provenance=Provenance(
            dataset=built.dataset,
            seed=options.seed,
            epochs=built.epochs,
            packages=package_versions(built.extra_packages),
            created=utc_timestamp(),
            notes=built.notes,
        ),
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _metrics_json(manifest: Manifest, built: BuiltModel, seconds: float) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "version": manifest.version,
        "task": str(manifest.task),
        "dataset": built.dataset,
        "metrics": {k: _finite_or_none(v) for k, v in built.metrics.items()},
        "parity": built.parity,
        **built.report,
        "total_seconds": round(seconds, 2),
    }


def _fit_settings(
    options: RunOptions,
    label: str,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> FitSettings:
    return FitSettings(
        epochs=options.resolved_epochs,
        batch_size=options.resolved_batch_size,
        lr=options.resolved_lr,
        weight_decay=options.recipe.weight_decay,
        seed=options.seed,
        description=label,
        augment=augment,
    )


def _value_range(values: np.ndarray) -> ValueRange:
    return ValueRange(min=float(np.min(values)), max=float(np.max(values)))


def _history_report(options: RunOptions, history: History, train: int, test: int) -> dict[str, Any]:
    return {
        "samples": {"train": train, "test": test},
        "hyperparameters": {
            "epochs": options.resolved_epochs,
            "batch_size": options.resolved_batch_size,
            "lr": options.resolved_lr,
            "weight_decay": options.recipe.weight_decay,
            "seed": options.seed,
            "split_seed": options.split_seed,
            "torch_threads": torch.get_num_threads(),
        },
        "history": {
            "train_loss": [round(v, 6) for v in history.train_loss],
            "test_loss": [_finite_or_none(round(v, 6)) for v in history.test_loss],
        },
        "train_seconds": round(history.seconds, 2),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _title(options: RunOptions) -> str:
    name = options.store_name
    return name if name == options.model else f"{name} ({options.model})"


def _export_and_check(
    graph: nn.Module,
    signature: GraphSignature,
    held_out: Tensor,
    out_dir: Path,
    pt2: bool,
) -> tuple[Artifacts, dict[str, float], float]:
    started = time.perf_counter()
    cases = tiled_batches(held_out)
    artifacts = export_all(graph, cases[1], signature, out_dir, pt2=pt2)
    parity = check_parity(graph, out_dir, artifacts, cases, signature.input_names)
    return artifacts, parity, time.perf_counter() - started


def _tabular(options: RunOptions, out_dir: Path) -> BuiltModel:
    from training.models import TabularClassifierGraph, TabularRegressorGraph, mlp
    from training.tabular_data import load_tabular

    classification = options.model == "iris"
    data = load_tabular(
        classification=classification,
        csv_path=options.data,
        target=options.target,
        split_seed=options.split_seed,
        max_samples=options.max_samples,
    )
    x_train = torch.from_numpy(np.ascontiguousarray(data.train.features))
    x_test = torch.from_numpy(np.ascontiguousarray(data.test.features))
    mean = x_train.mean(dim=0).tolist()
    std = x_train.std(dim=0, unbiased=False).tolist() if len(x_train) > 1 else [1.0] * len(mean)
    features = len(data.feature_names)
    graph: TabularClassifierGraph | TabularRegressorGraph
    if classification:
        assert data.labels is not None
        y_train = torch.from_numpy(data.train.targets.astype(np.int64))
        y_test = torch.from_numpy(data.test.targets.astype(np.int64))
        graph = TabularClassifierGraph(mlp([features, 16, len(data.labels)]), mean, std)
        output = TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(data.labels)])
        task = Task.TABULAR_CLASSIFICATION
    else:
        y_train = torch.from_numpy(data.train.targets.astype(np.float32))
        y_test = torch.from_numpy(data.test.targets.astype(np.float32))
        target_std = float(y_train.std(unbiased=False)) if len(y_train) > 1 else 1.0
        graph = TabularRegressorGraph(
            mlp([features, 64, 32, 1]), mean, std, float(y_train.mean()), target_std
        )
        output = TensorSpec(name="prediction", datatype="FP32", shape=[-1, 1])
        task = Task.TABULAR_REGRESSION
    history = fit(
        graph, (x_train, y_train), (x_test, y_test), _fit_settings(options, options.model)
    )
    predictions = predict(graph, x_test).numpy()
    report = _history_report(options, history, len(x_train), len(x_test))
    title = _title(options)
    plot_loss_curve(history, out_dir / "loss_curve.png", f"{title}: loss per epoch")
    if classification:
        assert data.labels is not None
        metrics, matrix = classification_metrics(
            predictions, y_test.numpy(), num_classes=len(data.labels)
        )
        plot_confusion_matrix(
            matrix,
            data.labels,
            out_dir / "confusion_matrix.png",
            f"{title}: held-out accuracy {metrics['accuracy']:.3f}",
        )
        report["confusion_matrix"] = matrix.tolist()
    else:
        metrics = regression_metrics(predictions[:, 0], y_test.numpy())
        plot_pred_vs_actual(
            predictions[:, 0],
            y_test.numpy(),
            out_dir / "pred_vs_actual.png",
            f"{title}: held-out R² {metrics['r2']:.3f}",
        )
    metrics["test_loss"] = history.test_loss[-1] if history.test_loss else math.nan
    signature = GraphSignature(
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, features])],
        outputs=[output],
        dynamic_axes={"features": {0: "batch"}},
    )
    artifacts, parity, export_seconds = _export_and_check(
        graph, signature, x_test, out_dir, options.pt2
    )
    report["export_seconds"] = round(export_seconds, 2)
    return BuiltModel(
        task=task,
        signature=signature,
        preprocessing=TabularPreprocessing(
            feature_names=data.feature_names,
            feature_ranges=[_value_range(column) for column in data.train.features.T],
            target_range=None if classification else _value_range(data.train.targets),
        ),
        labels=data.labels,
        dataset=data.source,
        metrics=metrics,
        parity=parity,
        artifacts=artifacts,
        epochs=options.resolved_epochs,
        notes=[
            f"held-out split: 20% (stratified for classification), split seed {options.split_seed}",
            "standardization (train-split mean/std) is inside the graph; send raw features",
        ],
        report=report,
    )


def _image(options: RunOptions, out_dir: Path) -> BuiltModel:
    from training.augment import random_shift, shift_for
    from training.image_data import channel_stats, load_images
    from training.models import (
        ImageClassifierGraph,
        ResNet18Classifier,
        TinyVGG,
        read_resnet18_weights,
    )

    is_resnet = options.model == "resnet18"
    size = options.resolved_image_size
    weights = read_resnet18_weights(options.weights) if is_resnet and options.weights else None
    data = load_images(
        options.resolved_dataset,
        root=options.data,
        channels=3 if is_resnet else None,
        size=size,
        split_seed=options.split_seed,
        max_samples=options.max_samples,
        download=options.download,
    )
    notes = [
        f"held-out split: {data.split}",
        "images enter as UINT8 NCHW; the graph scales to [0, 1], normalizes and applies softmax",
    ]
    net: nn.Module
    if is_resnet:
        resnet = ResNet18Classifier(len(data.labels), frozen=options.freeze)
        if weights is not None and options.weights is not None:
            loaded = resnet.load_backbone(weights)
            mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
            notes.append(
                f"transfer learning from {options.weights.name} ({loaded} tensors, "
                f"sha256 {_sha256(options.weights)[:16]}...)"
            )
        else:
            print("resnet18: no --weights given; training from scratch (weights=None)")
            if options.freeze:
                print("resnet18: --freeze without --weights trains only fc on random features")
            mean, std = channel_stats(data.train.images)
            notes.append("trained from scratch (no pretrained weights)")
        notes.append(
            "frozen backbone: only the new fc layer trained"
            if options.freeze
            else "all layers trained"
        )
        net = resnet
    else:
        net = TinyVGG(data.channels, len(data.labels), size)
        mean, std = channel_stats(data.train.images)
    graph = ImageClassifierGraph(net, mean, std)
    x_train = torch.from_numpy(data.train.images)
    x_test = torch.from_numpy(data.test.images)
    y_train = torch.from_numpy(data.train.labels)
    y_test = torch.from_numpy(data.test.labels)
    max_shift = shift_for(size)
    notes.append(f"training augmentation: random shifts of up to {max_shift} px")
    settings = _fit_settings(
        options, options.model, lambda batch, gen: random_shift(batch, max_shift, gen)
    )
    history = fit(graph, (x_train, y_train), (x_test, y_test), settings)
    probabilities = predict(graph, x_test).numpy()
    metrics, matrix = classification_metrics(probabilities, y_test.numpy(), len(data.labels))
    metrics["test_loss"] = history.test_loss[-1] if history.test_loss else math.nan
    title = _title(options)
    plot_loss_curve(history, out_dir / "loss_curve.png", f"{title}: loss per epoch")
    plot_confusion_matrix(
        matrix,
        data.labels,
        out_dir / "confusion_matrix.png",
        f"{title}: held-out accuracy {metrics['accuracy']:.3f}",
    )
    report = _history_report(options, history, len(x_train), len(x_test))
    report["confusion_matrix"] = matrix.tolist()
    signature = GraphSignature(
        inputs=[TensorSpec(name="images", datatype="UINT8", shape=[-1, data.channels, size, size])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(data.labels)])],
        dynamic_axes={"images": {0: "batch"}},
    )
    artifacts, parity, export_seconds = _export_and_check(
        graph, signature, x_test, out_dir, options.pt2
    )
    report["export_seconds"] = round(export_seconds, 2)
    channels: Literal[1, 3] = 1 if data.channels == 1 else 3
    return BuiltModel(
        task=Task.IMAGE_CLASSIFICATION,
        signature=signature,
        preprocessing=ImagePreprocessing(
            height=size, width=size, channels=channels, mean=mean, std=std, invert=False
        ),
        labels=data.labels,
        dataset=data.source,
        metrics=metrics,
        parity=parity,
        artifacts=artifacts,
        epochs=options.resolved_epochs,
        notes=notes,
        report=report,
    )


def _forecaster(options: RunOptions, out_dir: Path) -> BuiltModel:
    from training.models import LSTMForecasterGraph
    from training.series_data import (
        load_co2,
        naive_forecast,
        read_csv,
        seasonal_naive_forecast,
        split_series,
    )

    if options.data is None:
        series = load_co2()
    else:
        series = read_csv(options.data, options.date_column, options.value_column)
    data = split_series(
        series,
        window=options.window,
        horizon=options.horizon,
        season=options.season,
        max_samples=options.max_samples,
    )
    x_train = torch.from_numpy(data.train.inputs)
    y_train = torch.from_numpy(data.train.targets)
    x_test = torch.from_numpy(data.test.inputs)
    y_test = torch.from_numpy(data.test.targets)
    train_values = series.values[: data.split]
    steps = np.diff(data.train.inputs, axis=1)
    changes = data.train.targets - data.train.inputs[:, -1, :]
    graph = LSTMForecasterGraph(
        horizon=options.horizon,
        mean=float(train_values.mean()),
        std=float(train_values.std()),
        step_scale=float(np.sqrt(np.mean(steps**2))),
        change_scale=np.sqrt(np.mean(changes**2, axis=0)).tolist(),
    )
    history = fit(graph, (x_train, y_train), (x_test, y_test), _fit_settings(options, "lstm"))
    forecast = predict(graph, x_test).numpy()
    actual = data.test.targets
    naive = naive_forecast(data, data.test)
    seasonal = seasonal_naive_forecast(data, data.test)
    metrics = regression_metrics(forecast.reshape(-1), actual.reshape(-1))
    metrics.pop("r2", None)
    metrics["naive_mae"] = float(np.mean(np.abs(naive - actual)))
    metrics["seasonal_naive_mae"] = float(np.mean(np.abs(seasonal - actual)))
    metrics["test_loss"] = history.test_loss[-1] if history.test_loss else math.nan
    beaten = [
        name for name in ("naive", "seasonal_naive") if not metrics["mae"] < metrics[f"{name}_mae"]
    ]
    if beaten:
        print(f"lstm: warning: MAE {metrics['mae']:.4g} does not beat {', '.join(beaten)}")
    title = _title(options)
    plot_loss_curve(history, out_dir / "loss_curve.png", f"{title}: loss per epoch")
    plot_forecast(
        actual[:, 0],
        forecast[:, 0],
        out_dir / "forecast_vs_actual.png",
        f"{title}: held-out tail, one step ahead: MAE {metrics['mae']:.3g} "
        f"(naive {metrics['naive_mae']:.3g}, seasonal naive {metrics['seasonal_naive_mae']:.3g})",
        baseline=seasonal[:, 0],
        unit=series.name,
    )
    report = _history_report(options, history, len(x_train), len(x_test))
    report["baselines"] = {
        "naive": {"mae": metrics["naive_mae"], "description": "the window's last value"},
        "seasonal_naive": {
            "mae": metrics["seasonal_naive_mae"],
            "description": f"the value one season ({data.season} steps) earlier",
        },
    }
    report["split"] = {
        "values": len(series.values),
        "first_test_index": data.split,
        "filled_gaps": series.filled,
    }
    signature = GraphSignature(
        inputs=[TensorSpec(name="series", datatype="FP32", shape=[-1, options.window, 1])],
        outputs=[TensorSpec(name="forecast", datatype="FP32", shape=[-1, options.horizon])],
        dynamic_axes={"series": {0: "batch"}},
    )
    artifacts, parity, export_seconds = _export_and_check(
        graph, signature, x_test, out_dir, options.pt2
    )
    report["export_seconds"] = round(export_seconds, 2)
    notes = [
        f"split by time: the last {len(series.values) - data.split} of {len(series.values)} "
        "values are held out; windows never cross into the training part's future",
        "scaling (training-split mean/std and typical changes) is inside the graph; send raw "
        "values, oldest first",
        f"baselines on the held-out tail: naive (last value) MAE {metrics['naive_mae']:.4g}, "
        f"seasonal naive ({data.season} steps) MAE {metrics['seasonal_naive_mae']:.4g}",
    ]
    if series.filled:
        notes.append(f"{series.filled} missing values filled by linear interpolation in time")
    return BuiltModel(
        task=Task.TIME_SERIES_FORECASTING,
        signature=signature,
        preprocessing=SeriesPreprocessing(
            window=options.window,
            horizon=options.horizon,
            frequency=series.frequency,
            season=data.season,
            value_range=_value_range(train_values),
        ),
        labels=None,
        dataset=series.source,
        metrics=metrics,
        parity=parity,
        artifacts=artifacts,
        epochs=options.resolved_epochs,
        notes=notes,
        extra_packages=("statsmodels", "pandas"),
        report=report,
    )
