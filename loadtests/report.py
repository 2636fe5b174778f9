"""Turn a benchmark results JSON into `docs/benchmarks.md`, `docs/benchmarks.json` and plots.

`python -m loadtests.report [RESULTS.json] [--docs DIR]` regenerates the documents from a saved
run (default: `loadtests/results/latest.json`) without measuring again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.records import Baseline, GoalRow, Point, RawModel, RawPoint, Results

REPO = Path(__file__).resolve().parent.parent
THROUGHPUT_PLOT = "images/bench_throughput.png"
LATENCY_PLOT = "images/bench_latency.png"
ABSENT = "\u2013"  # an en dash
"""A figure this run does not have (a histogram the gateway does not export, a point not run)."""


RATIO_OF_MS = "ms, as a ratio"
"""A goal row's unit: two latencies (ms) and their ratio."""
RATIO_OF_S = "s, as a ratio"
"""A goal row's unit: two durations (s) and their ratio."""


@dataclass(frozen=True)
class Goal:
    title: str
    kind: str
    """'ratio_at' (ours ÷ theirs at one concurrency), 'ratio_raw' (best ÷ raw limit),
    'ratio_formed' (best ÷ raw items/s at the batch size that point formed), 'p50_ratio_at'
    (ours ÷ theirs p50 latency at one concurrency), 'cold_start_ratio' (the cold start of the
    server running `ours` ÷ that of `theirs`), 'overhead' (ours
    p50 at c=1 - raw batch-1 p50), 'backend' (the gateway's backend time per batch ÷ the raw
    call at the same batch size, at `concurrency`), 'cold_start' (seconds to ready) and 'rss'
    (MiB once ready) of the server that runs `ours`, 'baseline' (ours ÷ the same system in the
    previously recorded run, at `concurrency`)."""
    pairs: tuple[tuple[str, str], ...]
    """(our system, their system); 'raw' for the in-process limit."""
    target: float
    models: tuple[str, ...] | None = None
    """None: every model measured."""
    concurrency: int = 32

    @property
    def at_most(self) -> bool:
        """The figure must stay at or below the target (a time, a size), not reach it."""
        return self.kind in (
            "overhead",
            "backend",
            "cold_start",
            "rss",
            "p50_ratio_at",
            "cold_start_ratio",
        )


SYSTEMS = {
    "gateway-v2-json": "our gateway, embedded ONNX Runtime, Open Inference Protocol V2 JSON",
    "gateway-v2-binary": "the same gateway, V2 binary tensor extension (binary in and out)",
    "gateway-predictions": "the same gateway, TorchServe-style `/predictions/{model}` with the "
    "body a TorchServe user sends (PNG file, text, JSON features)",
    "gateway-2workers-v2-json": "the same gateway with `GATEWAY_WORKERS=2` (two serving "
    "processes on the same ports), V2 JSON",
    "gateway-torchserve-v2-json": "our gateway (V2 JSON) with its `torchserve` backend: each "
    "batch one pre-batched request to a second TorchServe (`torchserve-behind-gateway`, "
    "batch_size 1, as `BACKEND=torchserve make run` deploys it)",
    "gateway-native-mar": "our gateway's `torchserve-native` backend on the same `.mar` "
    "archives as `torchserve` (its handler in a worker process, the gateway's batcher), same "
    "body as `gateway-predictions`",
    "torchserve": "TorchServe 0.12 directly, the project's handler on the TorchScript export of "
    "the same model, same body as `gateway-predictions`, token auth on",
    "pytriton-v2-json": "Triton through NVIDIA PyTriton (dynamic batcher, Python function "
    "calling ONNX Runtime), V2 JSON",
    "pytriton-v2-binary": "the same PyTriton, V2 binary tensor extension",
    "gateway-v2-grpc": "the same gateway over gRPC (`inference.GRPCInferenceService/ModelInfer`, "
    "the V2 binary tensors as `raw_input_contents`), loaded by the gRPC generator",
    "pytriton-v2-grpc": "the same PyTriton through Triton's gRPC endpoint, the same "
    "ModelInferRequest",
    "kserve-v2-json": "KServe `ModelServer` with a `kserve.Model` calling ONNX Runtime, V2 JSON",
    "mlserver-v2-json": "Seldon MLServer with a custom runtime calling ONNX Runtime, adaptive "
    "batching, V2 JSON",
    "litserve-v2-json": "Lightning LitServe with one `LitAPI` per model calling ONNX Runtime, "
    "its own batching (`max_batch_size` from the manifest, `batch_timeout` 1 ms), the same V2 "
    "JSON body at the same path",
    "gateway-torchscript-v2-binary": "GPU only: the gateway's TorchScript backend on CUDA, fp16",
}

REST_SYSTEMS = ("gateway-v2-json", "gateway-v2-binary", "gateway-predictions")
GATEWAY_REST = (("gateway-v2-binary", "raw"), ("gateway-v2-json", "raw"))
SMALL_MODELS = ("iris", "digits")
COMPUTE_BOUND = ("minilm", "resnet18")
BASELINE_TARGET = 0.90
"""'No worse than before' with room for this machine's run-to-run spread of a point (the
recorded run's repeats differ by 1.2x in the median): a drop past 10 % counts as worse."""

GOALS = (
    Goal(
        "c=1 p50 overhead: gateway - raw batch-1 ONNX Runtime call (goal ≤ 1.0 ms)",
        "overhead",
        GATEWAY_REST,
        1.0,
    ),
    Goal(
        "c=1 p50 overhead, small models: gateway - raw batch-1 call (goal ≤ 0.5 ms)",
        "overhead",
        GATEWAY_REST,
        0.5,
        SMALL_MODELS,
    ),
    Goal(
        "Backend time per batch ÷ raw call at the same batch size, c=1 (goal ≤ 1.10)",
        "backend",
        GATEWAY_REST,
        1.10,
        concurrency=1,
    ),
    Goal(
        "Backend time per batch ÷ raw call at the same batch size, c=16 (goal ≤ 1.10)",
        "backend",
        GATEWAY_REST,
        1.10,
        concurrency=16,
    ),
    Goal(
        "Compute-bound: best throughput ÷ raw items/s at the batch size it formed (goal ≥ 0.90)",
        "ratio_formed",
        GATEWAY_REST,
        0.90,
        COMPUTE_BOUND,
    ),
    Goal(
        "Compute-bound: best throughput ÷ raw limit at its best batch (kept beside; goal ≥ 0.90)",
        "ratio_raw",
        GATEWAY_REST,
        0.90,
        COMPUTE_BOUND,
    ),
    Goal(
        "Gateway ÷ TorchServe direct throughput at c=32, same request body (goal ≥ 1.5)",
        "ratio_at",
        (("gateway-predictions", "torchserve"),),
        1.5,
        SMALL_MODELS,
    ),
    Goal(
        "Gateway ÷ LitServe throughput at c=32, same V2 JSON body (goal ≥ 1.2)",
        "ratio_at",
        (("gateway-v2-json", "litserve-v2-json"),),
        1.2,
        SMALL_MODELS,
    ),
    Goal(
        "2 workers ÷ 1 worker throughput at c=64 (goal ≥ 1.3)",
        "ratio_at",
        (("gateway-2workers-v2-json", "gateway-v2-json"),),
        1.3,
        ("iris",),
        concurrency=64,
    ),
    Goal(
        "Gateway cold start to ready, one worker, every benchmarked model warmed (goal ≤ 5 s)",
        "cold_start",
        (("gateway", ""),),
        5.0,
        ("all",),
    ),
    Goal(
        "Gateway RSS once ready, one worker, ONNX Runtime only (goal ≤ 400 MiB)",
        "rss",
        (("gateway", ""),),
        400.0,
        ("all",),
    ),
    Goal(
        "REST throughput at c=32 ÷ the same system in the previous recorded run "
        f"(goal ≥ {BASELINE_TARGET:.2f}: no worse, within the noise)",
        "baseline",
        tuple((system, "previous run") for system in REST_SYSTEMS),
        BASELINE_TARGET,
    ),
    Goal(
        "Native archives: `torchserve-native` ÷ TorchServe direct throughput at c=32, same "
        "archive and body (goal ≥ 2)",
        "ratio_at",
        (("gateway-native-mar", "torchserve"),),
        2.0,
        ("digits", "resnet18"),
    ),
    Goal(
        "Native archives: c=1 p50 of `torchserve-native` ÷ TorchServe direct's (goal ≤ 0.5)",
        "p50_ratio_at",
        (("gateway-native-mar", "torchserve"),),
        0.5,
        concurrency=1,
    ),
    Goal(
        "Native archives: cold start from archives to ready ÷ TorchServe's (goal ≤ 0.33)",
        "cold_start_ratio",
        (("gateway-native-mar", "torchserve"),),
        1 / 3,
        ("all",),
    ),
)
"""This issue's goals (performance: the serving tax, every core, Triton-style measurement),
and the native-archive runtime's."""

EARLIER_GOALS = (
    Goal(
        "Gateway ÷ PyTriton throughput at c=32 (goal ≥ 1.5)",
        "ratio_at",
        (
            ("gateway-v2-json", "pytriton-v2-json"),
            ("gateway-v2-binary", "pytriton-v2-binary"),
            ("gateway-v2-grpc", "pytriton-v2-grpc"),
        ),
        1.5,
        SMALL_MODELS,
    ),
    Goal(
        "Gateway ÷ TorchServe direct throughput at c=32, same request body (goal ≥ 2.5)",
        "ratio_at",
        (("gateway-predictions", "torchserve"),),
        2.5,
    ),
    Goal(
        "Gateway in front of TorchServe ÷ TorchServe direct throughput at c=32 (goal ≥ 1.0)",
        "ratio_at",
        (("gateway-torchserve-v2-json", "torchserve"),),
        1.0,
    ),
    Goal(
        "c=1 p50 overhead over gRPC: gateway - raw batch-1 ONNX Runtime call (goal ≤ 1.0 ms)",
        "overhead",
        (("gateway-v2-grpc", "raw"),),
        1.0,
        SMALL_MODELS,
    ),
)
"""Goals of earlier issues, still reported so a regression shows."""


def _points(results: Results, system: str, model: str) -> list[Point]:
    found = [p for p in results.points if p.system == system and p.model == model]
    return sorted(found, key=lambda p: p.concurrency)


def _at(results: Results, system: str, model: str, concurrency: int) -> Point | None:
    return next((p for p in _points(results, system, model) if p.concurrency == concurrency), None)


def _baseline_at(results: Results, system: str, model: str, concurrency: int) -> Point | None:
    """The same point in the previously recorded run (`baseline`, copied in by the bench)."""
    points = results.baseline.points if results.baseline else []
    return next(
        (p for p in points if (p.system, p.model, p.concurrency) == (system, model, concurrency)),
        None,
    )


def baseline_of(previous: dict[str, Any]) -> Baseline:
    """What a new run keeps of the previous recorded run to compare the REST figures with."""
    keep = ("system", "model", "concurrency", "throughput", "latency_ms")
    return Baseline.model_validate(
        {
            "date": previous.get("machine", {}).get("date", "?"),
            "points": [
                {key: point[key] for key in keep if key in point}
                for point in previous.get("points", [])
                if point.get("system") in REST_SYSTEMS
            ],
        }
    )


def _best(results: Results, system: str, model: str) -> Point | None:
    points = _points(results, system, model)
    return max(points, key=lambda p: p.throughput) if points else None


def models_of(results: Results) -> list[str]:
    seen = [*results.raw]
    for point in results.points:
        if point.model not in seen:
            seen.append(point.model)
    order = results.config.models
    return sorted(seen, key=lambda m: order.index(m) if m in order else len(order))


def systems_of(results: Results) -> list[str]:
    found: list[str] = []
    for point in results.points:
        if point.system not in found:
            found.append(point.system)
    return found


def raw_at_formed(raw: RawModel | None, point: Point | None) -> RawPoint | None:
    """The raw call at the batch size `point` formed inside the gateway (None: unknown)."""
    if raw is None or point is None or point.server_ms is None:
        return None
    batch = point.server_ms.formed_batch
    return raw.at(batch) if batch is not None else None


def backend_ratio(raw: RawModel | None, point: Point | None) -> tuple[float | None, float | None]:
    """(gateway backend mean per batch, raw mean per call at the same batch size), ms."""
    mine = point.server_ms.backend_mean_ms if point and point.server_ms else None
    same = raw_at_formed(raw, point)
    return mine, same.mean_ms if same else None


def _figures(
    goal: Goal, results: Results, model: str, ours: str, theirs: str
) -> tuple[float | None, float | None, float | None, str]:
    """(ours, theirs, the goal's figure, unit) for one throughput or latency goal."""
    raw = results.raw.get(model)
    if goal.kind == "baseline":
        a = _at(results, ours, model, goal.concurrency)
        b = _baseline_at(results, ours, model, goal.concurrency)
        mine, other = (a.throughput if a else None), (b.throughput if b else None)
        return mine, other, (mine / other if mine and other else None), "req/s"
    if goal.kind == "ratio_at":
        a, b = (_at(results, s, model, goal.concurrency) for s in (ours, theirs))
        mine, other = (a.throughput if a else None), (b.throughput if b else None)
        return mine, other, (mine / other if mine and other else None), "req/s"
    if goal.kind == "ratio_raw":
        best = _best(results, ours, model)
        mine = best.throughput if best else None
        other = raw.limit_items_per_s if raw else None
        return mine, other, (mine / other if mine and other else None), "items/s"
    if goal.kind == "ratio_formed":
        best = _best(results, ours, model)
        same = raw_at_formed(raw, best)
        mine = best.throughput if best else None
        other = same.items_per_s if same else None
        return mine, other, (mine / other if mine and other else None), "items/s"
    if goal.kind == "p50_ratio_at":
        a, b = (_at(results, s, model, goal.concurrency) for s in (ours, theirs))
        mine, other = (a.latency_ms.p50 if a else None), (b.latency_ms.p50 if b else None)
        return mine, other, (mine / other if mine and other else None), RATIO_OF_MS
    if goal.kind == "backend":
        mine, other = backend_ratio(raw, _at(results, ours, model, goal.concurrency))
        return mine, other, (mine / other if mine is not None and other else None), "ms/batch"
    point = _at(results, ours, model, 1)
    mine = point.latency_ms.p50 if point else None
    other = raw.batch1_p50_ms if raw else None
    value = mine - other if mine is not None and other is not None else None
    return mine, other, value, "ms"


def _note(goal: Goal, results: Results, model: str, ours: str, theirs: str) -> str | None:
    if goal.kind == "ratio_formed":
        best = _best(results, ours, model)
        if best and best.server_ms and best.server_ms.formed_batch:
            return f"c={best.concurrency}, batch {best.server_ms.formed_batch}"
    if goal.kind == "backend":
        point = _at(results, ours, model, goal.concurrency)
        if point and point.server_ms and point.server_ms.formed_batch:
            return f"batch {point.server_ms.formed_batch}"
    skipped = [s for s in results.skipped if ours in s.systems or theirs in s.systems]
    return f"`{skipped[0].server}` skipped: {skipped[0].reason}" if skipped else None


def evaluate(results: Results, goals: Sequence[Goal] = GOALS) -> list[GoalRow]:
    """One row per goal, model and system pair: the figures, and whether the goal is met. A
    goal of this issue whose figures are missing stays as 'not measured' (with the reason
    when a server was skipped); an earlier goal with nothing measured is left out."""
    rows = []
    for goal in goals:
        measured = models_of(results)
        for model in [m for m in goal.models or measured if m == "all" or m in measured]:
            for ours, theirs in goal.pairs:
                row = GoalRow(
                    goal=goal.title,
                    model=model,
                    ours=ours,
                    theirs=theirs,
                    target=goal.target,
                    unit="",
                )
                if goal.kind == "cold_start_ratio":
                    mine_server, their_server = (results.servers.get(s) for s in (ours, theirs))
                    if mine_server is None or their_server is None:
                        continue
                    row.unit = RATIO_OF_S
                    row.mine, row.other = mine_server.cold_start_s, their_server.cold_start_s
                    row.value = row.mine / row.other if row.other else None
                    row.met = row.value is not None and row.value <= goal.target
                    rows.append(row)
                    continue
                if goal.kind in ("cold_start", "rss"):
                    server = results.servers.get(ours)
                    if server is None:
                        continue
                    figure = (
                        server.cold_start_s if goal.kind == "cold_start" else server.rss_ready_mb
                    )
                    row.unit = "s" if goal.kind == "cold_start" else "MiB"
                    row.mine = row.value = figure
                    row.met = figure <= goal.target
                    rows.append(row)
                    continue
                if goal.kind == "baseline":
                    if results.baseline is None:
                        continue
                    row.theirs = f"previous run ({results.baseline.date})"
                mine, other, value, row.unit = _figures(goal, results, model, ours, theirs)
                if mine is None and other is None and goals is not GOALS:
                    continue
                if mine is None and other is None and goal.kind == "baseline":
                    continue
                row.mine, row.other, row.value = mine, other, value
                row.note = _note(goal, results, model, ours, theirs)
                if goal.kind == "overhead":
                    point = _at(results, ours, model, 1)
                    split = point.server_ms if point else None
                    if split and split.request_mean_ms is not None and split.compute_mean_ms:
                        row.own_ms = split.request_mean_ms - split.compute_mean_ms
                if value is not None:
                    row.met = value <= goal.target if goal.at_most else value >= goal.target
                rows.append(row)
    return rows


def best_within_slo(results: Results, system: str, model: str, slo_ms: float) -> Point | None:
    fits = [
        p for p in _points(results, system, model) if p.latency_ms.p99 <= slo_ms and not p.errors
    ]
    return max(fits, key=lambda p: p.throughput) if fits else None


# --- markdown ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ABSENT
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ABSENT
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "**met**" if met else "**not met**"


def _machine(results: Results) -> list[str]:
    machine = results.machine
    versions = ", ".join(f"{k} {v}" for k, v in machine.versions.items())
    config = results.config
    lines = [
        "| | |",
        "|---|---|",
        f"| Date | {machine.date} |",
        f"| CPU | {machine.cpu}, {machine.logical_cores} logical / "
        f"{machine.physical_cores} physical cores, {machine.memory_gib} GiB |",
        f"| OS | {machine.os} |",
        f"| Device | {machine.device}" + (f" ({machine.gpu})" if machine.gpu else "") + " |",
        f"| Versions | {versions} |",
        f"| Load average (1/5/15 min) | start {machine.load_average_start}, end "
        f"{machine.load_average_end or ABSENT} |",
        f"| Points | {config.duration_s:g} s each after {config.warmup_s:g} s warm-up"
        + (
            f", median of {config.repeat} runs, the systems taking turns"
            if config.repeat > 1
            else ""
        )
        + "; "
        f"concurrency {', '.join(map(str, config.concurrency))}; whole run "
        f"{_num(config.wall_s, 0)} s |",
    ]
    return lines


def raw_spread(results: Results) -> tuple[float, float] | None:
    """Median and largest ratio between two rounds of the same raw measurement (model, batch
    size, spinning): how much the machine alone moved the same in-process call during the run."""
    ratios = []
    for entry in results.raw.values():
        rounds: dict[tuple[int, bool], list[float]] = {}
        for point in entry.batches:
            rounds.setdefault((point.batch, point.spinning), []).append(point.items_per_s)
        ratios += [max(v) / min(v) for v in rounds.values() if len(v) > 1 and min(v) > 0]
    if not ratios:
        return None
    ratios.sort()
    return ratios[len(ratios) // 2], ratios[-1]


def repeat_spread(results: Results) -> tuple[float, float] | None:
    """Median and largest max÷min throughput over the repeated runs of each point."""
    ratios = sorted(
        max(point.repeats) / min(point.repeats)
        for point in results.points
        if point.repeats and len(point.repeats) > 1 and min(point.repeats) > 0
    )
    if not ratios:
        return None
    return ratios[len(ratios) // 2], ratios[-1]


def _noise(results: Results) -> str:
    machine = results.machine
    cores = machine.logical_cores or 1
    loads = [*machine.load_average_start, *(machine.load_average_end or [])]
    text = (
        f"**Noise.** A shared {cores}-core virtual machine: other engineers' tests ran beside "
        "this benchmark, and the load generator (wrk, or the gRPC one) takes CPU from the same "
        "cores as the server it loads. "
    )
    if loads:
        text += (
            f"The load average reached {max(loads):.1f} (above {cores} means processes "
            "waited for a core). "
        )
    spread = raw_spread(results)
    if spread is not None:
        text += (
            "The same in-process ONNX Runtime measurement, repeated after a model's points, "
            f"moved by {spread[0]:.2f}x in the median and {spread[1]:.1f}x at worst. "
        )
    repeats = repeat_spread(results)
    if repeats is not None:
        text += (
            "Repeated runs of the same server point differed by "
            f"{repeats[0]:.2f}x (max ÷ min) in the median and {repeats[1]:.1f}x at worst. "
        )
    return text + (
        "Compare systems at the same model and concurrency (measured within minutes of each "
        "other), not across runs; treat single points as ±20 % at best."
    )


def _goal_table(rows: Sequence[GoalRow]) -> list[str]:
    """The verdicts; for the c=1 overhead also the gateway's own time (server request time
    minus compute, from /metrics), which the machine's noise in the compute does not reach."""
    if not rows:
        return ["No goal applies to what this run measured."]
    lines = [
        "| Goal | Model | Ours | Theirs | Ours | Theirs | Figure | Verdict |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        unit = row.unit
        if unit in (RATIO_OF_MS, RATIO_OF_S):
            shown = "ms" if unit == RATIO_OF_MS else "s"
            digits = 2 if unit == RATIO_OF_MS else 1
            figures = (
                f"{_num(row.mine, digits)} {shown}" if row.mine is not None else ABSENT,
                f"{_num(row.other, digits)} {shown}" if row.other is not None else ABSENT,
                f"{row.value:.2f}x" if row.value is not None else ABSENT,
            )
        elif unit in ("s", "MiB"):
            mine = row.mine or 0.0
            figures = (f"{mine:.1f} {unit}" if unit == "s" else f"{mine:.0f} {unit}", "-", "-")
        elif unit in ("ms", "ms/batch"):
            figures = (
                f"{_ms(row.mine)} ms" if row.mine is not None else ABSENT,
                f"{_ms(row.other)} ms" if row.other is not None else ABSENT,
                (
                    (f"{row.value:+.2f} ms" if unit == "ms" else f"{row.value:.2f}x")
                    if row.value is not None
                    else ABSENT
                )
                + (f" (own time {row.own_ms:.2f} ms)" if row.own_ms is not None else ""),
            )
        else:
            figures = (
                f"{_num(row.mine)} {unit}" if row.mine is not None else ABSENT,
                f"{_num(row.other)} {unit}" if row.other is not None else ABSENT,
                f"{row.value:.2f}x" if row.value is not None else ABSENT,
            )
        theirs = (
            "raw ORT"
            if row.theirs == "raw"
            else row.theirs
            if row.theirs.startswith("previous run")
            else f"`{row.theirs}`"
            if row.theirs
            else "-"
        )
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.goal} | {row.model} | `{row.ours}` | {theirs} | "
            f"{figures[0]} | {figures[1]} | {figures[2]} | {_verdict(row.met)}{note} |"
        )
    return lines


def _model_table(results: Results, model: str) -> list[str]:
    concurrency = results.config.concurrency
    slo = results.config.slo_p99_ms
    header = (
        "| System | "
        + " | ".join(f"c={c}" for c in concurrency)
        + f" | Best with p99 ≤ {slo:g} ms |"
    )
    lines = [header, "|---|" + "---:|" * (len(concurrency) + 1)]
    for system in systems_of(results):
        if not _points(results, system, model):
            continue
        cells = []
        for c in concurrency:
            point = _at(results, system, model, c)
            if point is None:
                cells.append(ABSENT)
                continue
            cell = (
                f"{_num(point.throughput)} ({_ms(point.latency_ms.p50)} / "
                f"{_ms(point.latency_ms.p99)})"
            )
            if point.errors:
                cell += f" ⚠ {point.errors} errors"
            cells.append(cell)
        best = best_within_slo(results, system, model, slo)
        best_cell = f"{_num(best.throughput)} at c={best.concurrency}" if best else ABSENT
        lines.append(f"| `{system}` | " + " | ".join(cells) + f" | {best_cell} |")
    raw = results.raw.get(model)
    if raw:
        lines.append(
            f"| raw ORT limit | {_num(raw.limit_items_per_s)} items/s at batch "
            f"{raw.limit_batch}" + " |" * len(concurrency) + " |"
        )
    return lines


def _raw_table(results: Results) -> list[str]:
    """Every batch size measured: the configured ones, then those the gateway formed."""
    batches = sorted(
        {*results.config.raw_batches, *(p.batch for r in results.raw.values() for p in r.batches)}
    )
    lines = [
        "| Model | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|---|" + "---:|" * len(batches),
    ]
    for model, raw in results.raw.items():
        cells = []
        for batch in batches:
            best = raw.at(batch)
            cells.append(f"{_num(best.items_per_s)} ({_ms(best.p50_ms)} ms)" if best else ABSENT)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _split_table(results: Results) -> list[str]:
    """Per point of a gateway system: client and server time, then the compute step per batch
    split as Triton splits it, beside the raw call at the batch size this point formed."""
    lines = [
        "| Model | System | c | Client p50 | Server mean | Queue mean | Rows per batch | "
        "Compute | Input | Backend | Output | Hand-off | Raw call at that batch | "
        "Backend ÷ raw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in results.points:
        split = point.server_ms
        if split is None:
            continue
        backend, same = backend_ratio(results.raw.get(point.model), point)
        ratio = f"{backend / same:.2f}x" if backend is not None and same else ABSENT
        batch = split.formed_batch
        raw_cell = f"{_ms(same)} (batch {batch})" if same is not None else ABSENT
        lines.append(
            f"| {point.model} | `{point.system}` | {point.concurrency} | "
            f"{_ms(point.latency_ms.p50)} | {_ms(split.request_mean_ms)} | "
            f"{_ms(split.queue_mean_ms)} | {_num(split.mean_batch_size, 1)} | "
            f"{_ms(split.compute_mean_ms)} | {_ms(split.input_mean_ms)} | "
            f"{_ms(split.backend_mean_ms)} | {_ms(split.output_mean_ms)} | "
            f"{_ms(split.handoff_mean_ms)} | {raw_cell} | {ratio} |"
        )
    return lines if len(lines) > 2 else []


def _ratio_table(results: Results) -> list[str]:
    """Per model and gateway system, the best point against the raw call twice: at the batch
    size that point formed (fair: what the gateway could have computed with its batches) and
    at the raw limit's best batch (what this machine can compute at all)."""
    lines = [
        "| Model | System | Best (req/s) | At | Rows per batch formed | Raw items/s at that "
        "batch | Ratio at formed batch | Raw limit (items/s) | Best-batch ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in models_of(results):
        raw = results.raw.get(model)
        if raw is None:
            continue
        for system in systems_of(results):
            best = _best(results, system, model)
            if best is None or best.server_ms is None:
                continue
            same = raw_at_formed(raw, best)
            fair = f"{best.throughput / same.items_per_s:.2f}x" if same else ABSENT
            limit = raw.limit_items_per_s
            lines.append(
                f"| {model} | `{system}` | {_num(best.throughput)} | c={best.concurrency} | "
                f"{_num(best.server_ms.mean_batch_size, 1)} | "
                f"{_num(same.items_per_s) if same else ABSENT} | {fair} | "
                f"{_num(limit)} (batch {raw.limit_batch}) | "
                f"{best.throughput / limit:.2f}x |"
                if limit
                else ""
            )
    return [line for line in lines if line] if len(lines) > 2 else []


GENERATOR_NAMES = {
    "cpp": "`grpc_gen` (C++, `loadtests/grpc_gen/grpc_gen.cc`: gRPC's generic stub, one channel "
    "and completion queue per thread, the request pre-serialized, answers unparsed)",
    "python": "`grpc.aio` worker processes (Python, `loadtests/grpc_load.py`: one event loop and "
    "channel per process, the request pre-serialized, answers unparsed)",
}


def _generator_section(results: Results) -> list[str]:
    """The gRPC generator's ceiling (a do-nothing server) beside the fastest gRPC points."""
    info = results.grpc_generator
    if info is None:
        return []
    engine = info.engine
    when = (
        f"measured on {info.measured}, separately from the figures on this page"
        if info.measured
        else "measured at the start of this run"
    )
    lines = [
        "## gRPC load generator",
        "",
        f"The `-grpc` systems are loaded by {GENERATOR_NAMES.get(engine, engine)}, keeping "
        "`concurrency` calls in flight back to back for the same duration as wrk's points. "
        f"Its ceiling here ({when}) is its rate against `{info.server}`, a server that "
        "answers every call with one fixed, pre-serialized response, on the same shared cores "
        "as every benchmarked server:",
        "",
        "| Generator | Concurrency | Ceiling (req/s) | p50 (ms) | Generator CPU per call (µs) "
        "| Fastest gRPC system here (req/s) | Fastest ÷ ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    grpc_points = [p for p in results.points if p.system.endswith("-grpc")]
    for row in info.points:
        same = [p for p in grpc_points if p.concurrency == row.concurrency]
        fastest = max(same, key=lambda p: p.throughput) if same else None
        used = row.generator == engine
        ratio = (
            f"{fastest.throughput / row.throughput:.2f} (`{fastest.system}`, {fastest.model})"
            if fastest and row.throughput and used
            else ABSENT
        )
        lines.append(
            f"| {row.generator}{'' if used else ' (not used)'} | "
            f"{row.concurrency} | {_num(row.throughput)} | {_ms(row.p50_ms)} | "
            f"{row.client_cpu_us_per_call:.0f} | "
            f"{_num(fastest.throughput) if fastest and used else ABSENT} | {ratio} |"
        )
    return [
        *lines,
        "",
        "A ratio well below 1 means the server, not the generator, set the figure; the CPU per "
        "call times a system's rate is the share of a core the generator took from the server "
        "(it grows against a slow server, where fewer answers arrive per wake-up: per point "
        "it is in `client_cpu_us_per_call` in benchmarks.json).",
        *(["", info.note] if info.note else []),
        "",
    ]


def _server_table(results: Results) -> list[str]:
    lines = [
        "| Server | Cold start (s) | RSS ready (MiB) | RSS after load (MiB) | Settings |",
        "|---|---:|---:|---:|---|",
    ]
    for name, info in results.servers.items():
        lines.append(
            f"| {name} | {info.cold_start_s:.1f} | {info.rss_ready_mb:.0f} | "
            f"{info.rss_loaded_mb:.0f} | {info.settings} |"
        )
    return lines


def render(results: Results, plots: Sequence[str]) -> str:
    config = results.config
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by loadtests/report.py from docs/benchmarks.json; do not edit by hand. -->",
        "",
        f"Reproduce: `{config.command}` (about {_num((config.wall_s or 0) / 60, 0)} "
        "minutes; it writes this page, `docs/benchmarks.json` and the plots). "
        "Regenerate the page from saved results: `python -m loadtests.report`.",
        "",
        "Every system serves the **same ONNX files** with ONNX Runtime on 127.0.0.1 (TorchServe: "
        "the TorchScript export of the same model), loaded by the same generator (wrk with "
        "`loadtests/wrk_post.lua`, one fixed request body per model and system, keep-alive "
        "connections = concurrency; the `-grpc` systems: one fixed ModelInferRequest per "
        "model, concurrency = calls in flight, see *gRPC load generator*), one system at a "
        "time; every server loads one version of each model (the newest in the store). "
        + (
            "All servers are started first (cold start measured one by one), then for each "
            "model and concurrency the systems are loaded one after another, so that the systems "
            "compared at one point are measured within a minute or two of each other. "
            if config.order == "interleaved"
            else "One server runs at a time and is swept whole. "
        )
        + "The raw limit is ONNX Runtime called in-process, no server, at batch sizes 1…64 with "
        "intra-op spinning on and off, before and after each model's points; its best items/s "
        "is what this machine can compute at all.",
        "",
        "## Machine",
        "",
        *_machine(results),
        "",
        _noise(results),
        "",
        "## Goals",
        "",
        "This issue's goals, side by side in this run. The backend ratio compares the "
        "gateway's `gateway_batch_backend_seconds` per batch with the raw call at the batch size "
        "that point formed (its mean rows per batch, rounded; the raw limit measures that size "
        "too); the formed-batch ratio is the best throughput ÷ raw items/s at that size.",
        "",
        *_goal_table(results.goals),
        "",
        "### Earlier goals",
        "",
        *_goal_table(evaluate(results, EARLIER_GOALS)),
        "",
        *_generator_section(results),
    ]
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    out += [
        "## Systems",
        "",
        *(f"- `{name}`: {text}" for name, text in SYSTEMS.items() if name in systems_of(results)),
        "",
        "## Throughput and latency",
        "",
        "Each cell: requests/s (p50 / p99 latency in ms); every request carries one row "
        "(one image, one sentence, one feature vector), so requests/s = items/s.",
        "",
    ]
    for model in models_of(results):
        out += [f"### {model}", "", *_model_table(results, model), ""]
    if results.raw:
        out += [
            "## Raw ONNX Runtime (in-process)",
            "",
            "Best items/s per batch size (p50 per call) over intra-op spinning on and off and both "
            "rounds (before and after the servers), and at the batch sizes the gateway formed "
            "(measured after a model's points); the best figure per model is the limit.",
            "",
            *_raw_table(results),
            "",
        ]
    ratios = _ratio_table(results)
    if ratios:
        out += [
            "## Throughput against the raw limit",
            "",
            "Each gateway system's best point ÷ the raw call's items/s at the batch size that "
            "point formed (fair: the batches it actually had), and ÷ the raw limit at its best "
            "batch (what this machine can compute at all).",
            "",
            *ratios,
            "",
        ]
    split = _split_table(results)
    if split:
        out += [
            "## Inside the gateway",
            "",
            "The gateway's own split of each point, from two scrapes of its `/metrics` "
            "around the measured run (ms, means): server = request decoded to answer encoded; "
            "queue = wait for a batch slot; then per batch: compute = the whole step, thread "
            "hand-off included, split as Triton splits it into input (merge, pad, convert), "
            "backend (the runtime call alone), output (split back per request) and hand-off "
            "(event loop to compute thread and back). The raw call is ONNX Runtime's mean per "
            "call at the batch size this point formed; backend ÷ raw is the runtime's cost "
            f"inside the server. {ABSENT}: the gateway does not export that histogram. Client "
            "minus server time is the HTTP stack and the loopback.",
            "",
            *split,
            "",
        ]
    if results.servers:
        out += [
            "## Cold start and memory",
            "",
            "Cold start: process start until every model answers ready. RSS: the server's "
            "whole process tree, once ready and right after its load sweep.",
            "",
            *_server_table(results),
            "",
        ]
    notes = [
        f"- `{s.server}` ({', '.join(s.systems)}): skipped: {s.reason}" for s in results.skipped
    ]
    notes += [f"- `{f.system}` / {f.model}: not measured: {f.error}" for f in results.failures]
    notes += [f"- model {s.model}: skipped: {s.reason}" for s in results.skipped_models]
    if notes:
        out += ["## Skipped", "", *notes, ""]
    out += [
        "## GPU",
        "",
        "`python -m loadtests.bench --device cuda` runs the same sweep with ONNX Runtime's "
        "TensorRT/CUDA providers (raw limit, gateway, peers in `onnxruntime-gpu` venvs), adds "
        "the gateway's TorchScript backend on CUDA with fp16 autocast "
        "(`gateway-torchscript-v2-binary`), includes `resnet50` when the store has it, and "
        "reports the best images/s with p99 ≤ 15 ms in the last column above, with the GPU's "
        "name under Machine. "
        + (
            "This run was on the GPU."
            if config.device == "cuda"
            else "**Not run**: this recorded run had no GPU, so the H100 goal (≥ 3,000 images/s of "
            "ResNet-50 through the gateway) is not measured."
        ),
        "",
    ]
    return "\n".join(out)


# --- plots -------------------------------------------------------------------------------------


def plot(results: Results, docs: Path) -> list[str]:
    """Throughput vs concurrency and p99 vs throughput, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in models_of(results) if any(p.model == m for p in results.points)]
    if not models:
        return []
    (docs / "images").mkdir(parents=True, exist_ok=True)
    systems = systems_of(results)
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(systems)}
    columns = min(2, len(models))
    rows = math.ceil(len(models) / columns)
    written = []
    for name, draw in ((THROUGHPUT_PLOT, _draw_throughput), (LATENCY_PLOT, _draw_latency)):
        figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.6 * rows), squeeze=False)
        for index, model in enumerate(models):
            draw(axes[index // columns][index % columns], results, model, systems, colors)
        for index in range(len(models), rows * columns):
            axes[index // columns][index % columns].axis("off")
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(
            handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
        )
        figure.suptitle(
            f"{results.machine.cpu}, {results.machine.logical_cores} cores, {results.machine.date}",
            fontsize=10,
        )
        figure.tight_layout(rect=(0, 0.08, 1, 0.96))
        figure.savefig(docs / name, dpi=110)
        plt.close(figure)
        written.append(name)
    return written


def _draw_throughput(
    axis: Any, results: Results, model: str, systems: list[str], colors: dict[str, Any]
) -> None:
    for system in systems:
        points = _points(results, system, model)
        if points:
            axis.plot(
                [p.concurrency for p in points],
                [p.throughput for p in points],
                marker="o",
                label=system,
                color=colors[system],
            )
    raw = results.raw.get(model)
    highest = max((p.throughput for p in results.points if p.model == model), default=0.0)
    if raw and raw.limit_items_per_s <= 3 * highest:
        axis.axhline(
            raw.limit_items_per_s,
            color="black",
            linestyle="--",
            linewidth=1,
            label="raw ORT limit",
        )
    elif raw:  # far above every server: say it rather than squash the curves
        axis.text(
            0.02,
            0.96,
            f"raw ORT limit {raw.limit_items_per_s:,.0f} items/s (off scale)",
            transform=axis.transAxes,
            fontsize=8,
            va="top",
        )
    axis.set_xscale("log", base=2)
    axis.set_xticks(results.config.concurrency, [str(c) for c in results.config.concurrency])
    axis.set_title(f"{model}: throughput vs concurrency")
    axis.set_xlabel("concurrent connections")
    axis.set_ylabel("requests / s")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)


def _draw_latency(
    axis: Any, results: Results, model: str, systems: list[str], colors: dict[str, Any]
) -> None:
    for system in systems:
        points = _points(results, system, model)
        if points:
            axis.plot(
                [p.throughput for p in points],
                [p.latency_ms.p99 for p in points],
                marker="o",
                label=system,
                color=colors[system],
            )
    axis.set_yscale("log")
    axis.set_title(f"{model}: p99 latency vs throughput")
    axis.set_xlabel("requests / s")
    axis.set_ylabel("p99 latency (ms)")
    axis.grid(alpha=0.3, which="both")


def write_docs(results: Results, docs: Path) -> list[Path]:
    """Write benchmarks.json, benchmarks.md and the plots under `docs`; return the paths."""
    docs.mkdir(parents=True, exist_ok=True)
    results = results.model_copy(update={"goals": evaluate(results)})
    plots = plot(results, docs)
    (docs / "benchmarks.json").write_text(json.dumps(results.dump(), indent=1) + "\n")
    (docs / "benchmarks.md").write_text(render(results, plots) + "\n")
    return [docs / "benchmarks.json", docs / "benchmarks.md", *(docs / p for p in plots)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.report", description=__doc__)
    parser.add_argument(
        "results", type=Path, nargs="?", default=REPO / "loadtests" / "results" / "latest.json"
    )
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    results = Results.model_validate_json(args.results.read_text())
    for path in write_docs(results, args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
