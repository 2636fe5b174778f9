"""The LSTM forecaster: CO2 from statsmodels, CSV series, the split by time, the baselines,
and exports that pass the parity gate with the window and horizon in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.manifest import SeriesPreprocessing, Task
from tests.training.conftest import read_manifest, run_module, train, version_dir
from training.errors import TrainingError
from training.parity import TOLERANCE
from training.series_data import (
    Series,
    load_co2,
    naive_forecast,
    read_csv,
    season_for,
    seasonal_naive_forecast,
    split_series,
)


def write_series_csv(
    path: Path, count: int = 120, gaps: tuple[int, ...] = (), header: str = "date,value"
) -> Path:
    """A monthly series: trend plus a yearly cycle plus noise; `gaps` rows have no value."""
    rng = np.random.default_rng(0)
    steps = np.arange(count)
    values = 10 + 0.05 * steps + 2 * np.sin(2 * np.pi * steps / 12) + rng.normal(0, 0.1, count)
    dates = np.datetime64("2010-01", "M") + steps
    lines = [header]
    for index, (date, value) in enumerate(zip(dates, values, strict=True)):
        cell = "" if index in gaps else f"{value:.4f}"
        lines.append(f"{date}-01,{cell}")
    # Out of order on disk: the reader sorts by date.
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def co2_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default recipe on the default data (about 30 s on 2 cores)."""
    store = tmp_path_factory.mktemp("lstm") / "store"
    assert train("lstm", "--model-store", store) == 0
    return store


@pytest.mark.slow
def test_default_run_beats_both_baselines_and_passes_parity(co2_store: Path) -> None:
    manifest = read_manifest(co2_store, "lstm")
    metrics = manifest.metrics
    assert metrics["mae"] < metrics["naive_mae"] < metrics["seasonal_naive_mae"]
    assert set(manifest.parity) == {"torchscript", "onnx"}
    assert max(manifest.parity.values()) <= TOLERANCE
    report = json.loads((version_dir(co2_store, "lstm") / "metrics.json").read_text())
    assert report["baselines"]["naive"]["mae"] == pytest.approx(metrics["naive_mae"])
    assert report["baselines"]["seasonal_naive"]["mae"] == pytest.approx(
        metrics["seasonal_naive_mae"]
    )
    assert report["split"]["filled_gaps"] == 59
    assert len(report["history"]["train_loss"]) == 40
    for picture in ("loss_curve.png", "forecast_vs_actual.png"):
        assert (version_dir(co2_store, "lstm") / picture).stat().st_size > 10_000


@pytest.mark.slow
def test_default_manifest_follows_the_forecasting_contract(co2_store: Path) -> None:
    manifest = read_manifest(co2_store, "lstm")
    assert manifest.task is Task.TIME_SERIES_FORECASTING
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("series", "FP32", [-1, 30, 1])
    ]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [
        ("forecast", "FP32", [-1, 1])
    ]
    pre = manifest.preprocessing
    assert isinstance(pre, SeriesPreprocessing)
    assert (pre.window, pre.horizon, pre.season, pre.frequency) == (30, 1, 52, "W-SAT")
    assert pre.value_range is not None and 310 < pre.value_range.min < pre.value_range.max < 380
    assert "statsmodels" in manifest.provenance.packages
    assert any("interpolation" in note for note in manifest.provenance.notes)


@pytest.mark.slow
def test_graph_takes_raw_ppm_and_any_batch(co2_store: Path) -> None:
    directory = version_dir(co2_store, "lstm")
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    values = load_co2().values
    windows = np.stack([values[end - 30 : end] for end in (1000, 1500, 2000)])
    series = windows.astype(np.float32)[:, :, None]
    (forecast,) = session.run(["forecast"], {"series": series})
    assert forecast.shape == (3, 1)
    np.testing.assert_allclose(forecast[:, 0], values[[1000, 1500, 2000]], atol=2.0)
    scripted = torch.jit.load(str(directory / "model.pt"))
    np.testing.assert_allclose(scripted(torch.from_numpy(series)).numpy(), forecast, atol=TOLERANCE)


def test_csv_series_with_horizon_window_and_gaps(model_store: Path, tmp_path: Path) -> None:
    data = write_series_csv(tmp_path / "sales.csv", gaps=(40, 41))
    args = ["--window", "12", "--horizon", "3", "--epochs", "2"]
    assert train("lstm", "--model-store", model_store, "--data", data, *args) == 0
    manifest = read_manifest(model_store, "lstm-sales")
    assert manifest.inputs[0].shape == [-1, 12, 1]
    assert manifest.outputs[0].shape == [-1, 3]
    pre = manifest.preprocessing
    assert isinstance(pre, SeriesPreprocessing)
    assert (pre.window, pre.horizon, pre.season, pre.frequency) == (12, 3, 12, "MS")
    assert {"mae", "rmse", "naive_mae", "seasonal_naive_mae"} <= set(manifest.metrics)
    assert "csv:" in manifest.provenance.dataset
    assert any("2 missing values" in note for note in manifest.provenance.notes)
    directory = version_dir(model_store, "lstm-sales")
    session = ort.InferenceSession(str(directory / "model.onnx"))
    series = np.linspace(10, 12, 12, dtype=np.float32).reshape(1, 12, 1).repeat(7, axis=0)
    assert session.run(["forecast"], {"series": series})[0].shape == (7, 3)


def test_named_columns_and_an_explicit_season(model_store: Path, tmp_path: Path) -> None:
    data = write_series_csv(tmp_path / "t.csv", header="day,units")
    args = ["--date-column", "day", "--value-column", "units", "--season", "6", "--epochs", "1"]
    assert train("lstm", "--model-store", model_store, "--data", data, "--window", "8", *args) == 0
    pre = read_manifest(model_store, "lstm-t").preprocessing
    assert isinstance(pre, SeriesPreprocessing)
    assert pre.season == 6


def test_split_is_by_time_and_never_shuffled() -> None:
    series = Series("test", np.arange(200, dtype=np.float64), None, 0)
    data = split_series(series, window=10, horizon=3, season=12)
    assert data.split == 160
    train_targets = data.train.ends[:, None] + np.arange(3)
    assert train_targets.max() < data.split <= data.test.ends.min()
    assert np.all(np.diff(data.train.ends) == 1) and np.all(np.diff(data.test.ends) == 1)
    assert data.test.ends.max() + 3 == 200  # the tail is used up to its last value
    np.testing.assert_array_equal(data.test.inputs[0, :, 0], np.arange(150, 160))
    np.testing.assert_array_equal(data.test.targets[0], [160, 161, 162])


def test_baselines() -> None:
    values = np.array([float(i % 4) * 10 + i for i in range(60)])
    data = split_series(Series("test", values, None, 0), window=5, horizon=6, season=4)
    naive = naive_forecast(data, data.test)
    seasonal = seasonal_naive_forecast(data, data.test)
    end = int(data.test.ends[0])
    np.testing.assert_array_equal(naive[0], [values[end - 1]] * 6)
    # Beyond one season the last season repeats.
    lags = [end - 4, end - 3, end - 2, end - 1, end - 4, end - 3]
    np.testing.assert_array_equal(seasonal[0], values[lags])


def test_co2_gaps_are_filled_in_time() -> None:
    series = load_co2()
    assert series.filled == 59 and np.isfinite(series.values).all()
    assert len(series.values) == 2284 and series.frequency == "W-SAT"
    assert season_for(series.frequency) == 52
    assert (season_for("MS"), season_for("D"), season_for("h"), season_for("5min")) == (
        12,
        7,
        24,
        None,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("date,value\n2020-01-01,1\nnot a date,2\n", "is not a date"),
        ("date,value\n2020-01-01,1\n2020-01-02,abc\n", "is not a number"),
        ("date,value\n2020-01-01,1\n2020-01-01,2\n", "repeated dates"),
        ("value\n1\n2\n", "a date column and a value column"),
        ("date,value\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n", "too few"),
    ],
)
def test_csv_problems_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)

    def load() -> None:
        split_series(read_csv(path, None, None), window=30, horizon=1, season=None)

    with pytest.raises(TrainingError, match=message):
        load()


def test_unknown_column_is_one_line(tmp_path: Path, one_line_error) -> None:  # type: ignore[no-untyped-def]
    data = write_series_csv(tmp_path / "s.csv")
    result = run_module("lstm", "--data", data, "--value-column", "price")
    assert "column 'price' not in CSV" in one_line_error(result)
