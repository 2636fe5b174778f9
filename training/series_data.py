"""Time series: the weekly Mauna Loa CO2 record from statsmodels, or a CSV of dates and values.

A series is split by time: the first 80% trains, the last 20% (the held-out tail) tests, and
nothing is shuffled across that line. Each example is a window of past values and the next
`horizon` values; a test example's targets all lie in the tail, its window may reach back into
the training part (as it would when serving).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.errors import TrainingError

TEST_FRACTION = 0.2
CO2_SOURCE = "statsmodels.datasets.co2 (Mauna Loa weekly CO2, ppm, 1958-2001)"
_SEASONS = {"h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "MS": 12, "ME": 12, "Q": 4, "QS": 4}
"""Steps per season for a pandas frequency's base: hours in a day, days in a week, ..."""


@dataclass(frozen=True)
class Series:
    source: str
    values: NDArray[np.float64]
    """The whole series, gaps filled, oldest first."""
    frequency: str | None
    """pandas offset alias of the spacing (e.g. `W-SAT`), when it is regular."""
    filled: int
    """How many missing values were interpolated."""
    name: str = "value"


@dataclass(frozen=True)
class Windows:
    inputs: NDArray[np.float32]
    """[N, window, 1] raw values, oldest first."""
    targets: NDArray[np.float32]
    """[N, horizon] the values that follow each window."""
    ends: NDArray[np.int64]
    """Index in the series of each window's first target (its forecast origin + 1)."""

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class SeriesDataset:
    series: Series
    window: int
    horizon: int
    season: int
    split: int
    """Index of the first held-out value."""
    train: Windows
    test: Windows


def load_co2() -> Series:
    """The weekly CO2 record; its 59 missing weeks are filled by linear interpolation in time."""
    from statsmodels.datasets import co2

    frame = co2.load_pandas().data
    return _filled(frame["co2"], CO2_SOURCE, "CO2 (ppm)")


def read_csv(path: Path, date_column: str | None, value_column: str | None) -> Series:
    """A CSV with a header, a date column and a value column; rows are sorted by date."""
    import pandas as pd

    if not path.is_file():
        raise TrainingError(f"dataset file not found: {path}")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrainingError(f"cannot read CSV {path}: {' '.join(str(exc).split())}") from exc
    columns = [str(column).strip() for column in frame.columns]
    frame.columns = columns
    if len(columns) < 2:
        raise TrainingError(f"CSV {path} needs a date column and a value column")
    date_column = date_column or columns[0]
    value_column = value_column or columns[-1]
    for wanted in (date_column, value_column):
        if wanted not in columns:
            raise TrainingError(f"column {wanted!r} not in CSV {path} (columns: {columns})")
    dates = pd.to_datetime(frame[date_column], errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0]) + 2
        raise TrainingError(
            f"{path}:{row}: column {date_column!r} is not a date: {frame[date_column].iloc[row - 2]!r}"
        )
    values = pd.to_numeric(frame[value_column], errors="coerce")
    bad = values.isna() & frame[value_column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise TrainingError(
            f"{path}:{row}: column {value_column!r} is not a number: "
            f"{frame[value_column].iloc[row - 2]!r}"
        )
    series = pd.Series(values.to_numpy(dtype=np.float64), index=pd.DatetimeIndex(dates))
    series = series.sort_index()
    if series.index.has_duplicates:
        raise TrainingError(f"CSV {path} has repeated dates in {date_column!r}")
    return _filled(series, f"csv:{path} (date={date_column}, value={value_column})", value_column)


def _filled(series: object, source: str, name: str) -> Series:
    import pandas as pd

    assert isinstance(series, pd.Series)
    values = series.astype(np.float64)
    if not np.isfinite(values.dropna().to_numpy()).all():
        raise TrainingError(f"{source}: the series holds infinite values")
    missing = int(values.isna().sum())
    if values.notna().sum() < 2:
        raise TrainingError(f"{source}: the series needs at least two values")
    if missing:
        # Linear in time between the neighbouring observations; the ends take the nearest one.
        values = values.interpolate(method="time").bfill().ffill()
    frequency = None
    if isinstance(series.index, pd.DatetimeIndex) and len(series.index) >= 3:
        frequency = series.index.freqstr
        if frequency is None:
            with pd.option_context("future.infer_freq_returns_offset", True):
                offset = pd.infer_freq(series.index)
            frequency = None if offset is None else str(getattr(offset, "freqstr", offset))
    return Series(source, values.to_numpy(dtype=np.float64), frequency, missing, name)


def season_for(frequency: str | None) -> int | None:
    """Steps per season of a regular series (52 for weekly data), None when unknown."""
    if frequency is None:
        return None
    base = frequency.split("-", 1)[0].lstrip("0123456789")
    return _SEASONS.get(base) or _SEASONS.get(base.upper())


def make_windows(
    values: NDArray[np.float64], ends: NDArray[np.int64], window: int, horizon: int
) -> Windows:
    inputs = np.stack([values[end - window : end] for end in ends]) if len(ends) else None
    targets = np.stack([values[end : end + horizon] for end in ends]) if len(ends) else None
    if inputs is None or targets is None:
        return Windows(
            np.zeros((0, window, 1), np.float32), np.zeros((0, horizon), np.float32), ends
        )
    return Windows(
        inputs.astype(np.float32)[:, :, None], targets.astype(np.float32), ends.astype(np.int64)
    )


def split_series(
    series: Series,
    *,
    window: int,
    horizon: int,
    season: int | None,
    max_samples: int | None = None,
) -> SeriesDataset:
    """Windows before and after the split point; the held-out tail is the last 20%."""
    count = len(series.values)
    split = count - max(horizon, round(count * TEST_FRACTION))
    season = season or season_for(series.frequency) or 1
    first = max(window, season)  # every example has a full window and a seasonal-naive value
    if split - horizon + 1 - first < 2 or split < first:
        raise TrainingError(
            f"{series.source}: {count} values are too few for a window of {window}, "
            f"a horizon of {horizon} and a season of {season} (need about "
            f"{int((first + horizon + 2) / (1 - TEST_FRACTION)) + 1})"
        )
    train_ends = np.arange(first, split - horizon + 1)
    test_ends = np.arange(max(split, first), count - horizon + 1)
    if max_samples is not None:
        train_ends, test_ends = train_ends[-max_samples:], test_ends[:max_samples]
    return SeriesDataset(
        series=series,
        window=window,
        horizon=horizon,
        season=season,
        split=split,
        train=make_windows(series.values, train_ends, window, horizon),
        test=make_windows(series.values, test_ends, window, horizon),
    )


def naive_forecast(dataset: SeriesDataset, windows: Windows) -> NDArray[np.float32]:
    """The last value of each window, repeated over the horizon."""
    return np.repeat(windows.inputs[:, -1, :], dataset.horizon, axis=1)


def seasonal_naive_forecast(dataset: SeriesDataset, windows: Windows) -> NDArray[np.float32]:
    """Each step takes the value one season before it (repeating the last season when the
    horizon is longer than a season)."""
    values, season = dataset.series.values, dataset.season
    steps = np.arange(dataset.horizon)
    rows = []
    for end in windows.ends:
        lag = end - season + (steps % season)
        rows.append(values[lag])
    return np.asarray(rows, dtype=np.float32).reshape(len(windows), dataset.horizon)
