"""The streaming LSTM forecaster: the windowed `lstm` model's trained network, exported as a
step model (one reading in, the next forecast out, its state carried by the server) in a
Triton model folder that uses implicit state.

    python -m training lstm_stream            # from the newest `lstm` in the model store

It trains nothing: the step graph (`LSTMStepGraph`) takes the windowed model's weights and
scaling statistics as they are, so once `window` readings have gone in its forecasts equal
the windowed model's on the last `window` readings. The run checks that on the held-out
tail (the ONNX step model, streamed reading by reading, against the windowed network in
eager PyTorch) and fails past `STREAM_TOLERANCE`.

Layout written: `<store>/<name>/config.pbtxt` and `<store>/<name>/<version>/model.onnx`
(plus `metrics.json`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from service.manifest import MANIFEST_FILE, Manifest, SeriesPreprocessing
from training.config import RunOptions
from training.errors import ParityError, TrainingError
from training.export import ONNX_FILE, TORCHSCRIPT_FILE, quiet_export, quiet_torchscript
from training.models import LSTMForecasterGraph, LSTMStepGraph
from training.reports import write_json
from training.store import existing_versions, has_complete_version, next_version, staged_version_dir

STREAM_TOLERANCE = 1e-3
"""Largest difference (series units) allowed between the streamed and windowed forecasts."""
MAX_BATCH_SIZE = 64
IDLE_MICROSECONDS = 3_600_000_000
"""A sequence idle for an hour is freed (weekly readings come from a client that stays)."""
STATES = ("h", "c", "previous", "count")


def run_stream(options: RunOptions) -> tuple[int, Path, dict[str, float]] | None:
    """Export the step model; None when skipped (`--missing` and a version exists)."""
    name, store = options.store_name, options.model_store
    if options.missing and has_complete_version(store, name, ONNX_FILE):
        print(f"{name}: a finished version exists in {store / name}; skipping (--missing)")
        return None
    source, manifest = _windowed(store, options.source)
    pre = manifest.preprocessing
    assert isinstance(pre, SeriesPreprocessing)
    windowed = _load_windowed(source, pre.horizon)
    step = LSTMStepGraph(windowed, pre.window).eval()
    version = options.version or next_version(store, name)
    with staged_version_dir(store, name, version) as staging:
        _export(step, pre.window, staging / ONNX_FILE)
        series = _series(options, manifest)
        worst, weeks = check_stream(windowed, staging / ONNX_FILE, series, pre.window)
        report = {
            "source": f"{options.source} v{source.name}",
            "window": pre.window,
            "horizon": pre.horizon,
            "held_out_weeks_compared": weeks,
            "max_abs_difference": worst,
            "tolerance": STREAM_TOLERANCE,
        }
        write_json(staging / "metrics.json", report)
        # Before the version folder appears, so a loader never sees it without its config.
        _write_config(store / name, pre.window, windowed.lstm.hidden_size, pre.horizon)
    return version, store / name / str(version), {"stream_vs_windowed": worst}


def _windowed(store: Path, source: str) -> tuple[Path, Manifest]:
    versions = [
        v
        for v in existing_versions(store, source)
        if (store / source / str(v) / MANIFEST_FILE).is_file()
    ]
    if not versions:
        raise TrainingError(
            f"no finished {source!r} model in {store}: train it first (python -m training lstm)"
        )
    folder = store / source / str(versions[-1])
    manifest = Manifest.read(folder)
    if not isinstance(manifest.preprocessing, SeriesPreprocessing):
        raise TrainingError(f"{folder} is not a time-series forecaster")
    return folder, manifest


def _load_windowed(folder: Path, horizon: int) -> LSTMForecasterGraph:
    """The windowed graph with the exported weights (read from its TorchScript file)."""
    with quiet_torchscript():
        scripted = torch.jit.load(  # type: ignore[no-untyped-call]
            str(folder / TORCHSCRIPT_FILE), map_location="cpu"
        )
    state = dict(scripted.state_dict())
    if "step_scale" not in state:
        raise TrainingError(
            f"{folder} was trained before the forecaster's inputs became causal (it has no "
            "step_scale); train lstm again"
        )
    hidden = int(state["lstm.weight_hh_l0"].shape[1])
    graph = LSTMForecasterGraph(horizon, 0.0, 1.0, 1.0, [1.0] * horizon, hidden=hidden)
    graph.load_state_dict(state)
    return graph.eval()


def _export(step: LSTMStepGraph, window: int, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = _initial(3, window, step.hidden)
    example[0] += 340.0
    names = ["value", *(f"{state}_in" for state in STATES)]
    try:
        with torch.no_grad(), quiet_export(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            torch.onnx.export(
                step,
                tuple(example),
                str(path),
                input_names=names,
                output_names=["forecast", *(f"{state}_out" for state in STATES)],
                dynamic_shapes={
                    name: {0: batch} for name in ("value", "h", "c", "previous", "count")
                },
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise TrainingError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc


def _initial(rows: int, window: int, hidden: int) -> list[torch.Tensor]:
    return [
        torch.zeros(rows, 1),
        torch.zeros(rows, window, hidden),
        torch.zeros(rows, window, hidden),
        torch.zeros(rows, 1),
        torch.zeros(rows, 1),
    ]


def _series(options: RunOptions, manifest: Manifest) -> np.ndarray:
    from training.series_data import load_co2, read_csv

    if options.data is not None:
        return read_csv(options.data, options.date_column, options.value_column).values
    if not manifest.provenance.dataset.startswith("statsmodels"):
        raise TrainingError(
            f"the windowed model was trained on {manifest.provenance.dataset}: pass the same "
            "--data (and columns) to check the streamed forecasts against it"
        )
    return load_co2().values


def check_stream(
    windowed: LSTMForecasterGraph, onnx_path: Path, values: np.ndarray, window: int
) -> tuple[float, int]:
    """Stream the held-out tail (and the `window` - 1 readings before it) through the ONNX
    step model; from the `window`th reading on, each forecast must equal the windowed
    network's on the last `window` readings. Returns the largest difference and the count
    of forecasts compared."""
    import onnxruntime as ort

    from training.series_data import TEST_FRACTION

    split = len(values) - round(len(values) * TEST_FRACTION)
    stream = values[split - window + 1 :].astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    state = [t.numpy() for t in _initial(1, window, int(windowed.lstm.hidden_size))][1:]
    streamed = []
    for value in stream:
        outputs = session.run(None, {"value": np.array([[value]], np.float32), **_feed(state)})
        streamed.append(outputs[0][0])
        state = list(outputs[1:])
    windows = np.stack(
        [stream[end - window + 1 : end + 1] for end in range(window - 1, len(stream))]
    )
    with torch.no_grad():
        expected = windowed(torch.from_numpy(windows[:, :, None])).numpy()
    got = np.asarray(streamed[window - 1 :])
    worst = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not np.isfinite(worst) or worst > STREAM_TOLERANCE:
        raise ParityError(
            f"the streamed forecasts differ from the windowed model's by {worst:.3g} "
            f"(> {STREAM_TOLERANCE:g})"
        )
    return worst, len(got)


def _feed(state: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{name}_in": array for name, array in zip(STATES, state, strict=True)}


def stream_config(window: int, hidden: int, horizon: int) -> str:
    """The Triton configuration: the reading in, the forecast out, the rest implicit state."""
    states = []
    for name, dims in (
        ("h", [window, hidden]),
        ("c", [window, hidden]),
        ("previous", [1]),
        ("count", [1]),
    ):
        shape = ", ".join(map(str, dims))
        states.append(
            f'    {{ input_name: "{name}_in", output_name: "{name}_out", data_type: TYPE_FP32,'
            f' dims: [ {shape} ],\n      initial_state: {{ name: "zeros", data_type: TYPE_FP32,'
            f" dims: [ {shape} ], zero_data: true }} }}"
        )
    return (
        "# Written by `python -m training lstm_stream`: the windowed lstm's network, one weekly\n"
        "# reading per request; send sequence_id (and sequence_start on the first reading).\n"
        'backend: "onnxruntime"\n'
        f"max_batch_size: {MAX_BATCH_SIZE}\n"
        'input [ { name: "value", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
        f'output [ {{ name: "forecast", data_type: TYPE_FP32, dims: [ {horizon} ] }} ]\n'
        "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
        "sequence_batching {\n"
        f"  max_sequence_idle_microseconds: {IDLE_MICROSECONDS}\n"
        "  oldest { max_candidate_sequences: 1024 }\n"
        "  state [\n" + ",\n".join(states) + "\n  ]\n"
        "}\n"
    )


def _write_config(folder: Path, window: int, hidden: int, horizon: int) -> None:
    handle, temporary = tempfile.mkstemp(prefix=".config-", dir=folder)
    with os.fdopen(handle, "w") as sink:
        sink.write(stream_config(window, hidden, horizon))
    os.chmod(temporary, 0o644)
    os.replace(temporary, folder / "config.pbtxt")
