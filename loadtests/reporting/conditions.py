"""The conditions a run was measured in: the machine, and how much the same measurement moved
during the run (its noise)."""

from __future__ import annotations

from loadtests.reporting.records import Results
from loadtests.reporting.text import ABSENT, num


def machine_table(results: Results) -> list[str]:
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
        f"{num(config.wall_s, 0)} s |",
    ]
    return lines


def raw_spread(results: Results) -> tuple[float, float] | None:
    """Median and largest ratio between two rounds of the same raw measurement (model, batch
    size, spinning, paced or not): how much the machine alone moved the same in-process call
    during the run."""
    ratios = []
    for entry in results.raw.values():
        rounds: dict[tuple[int, bool, bool], list[float]] = {}
        for point in entry.batches:
            key = (point.batch, point.spinning, point.paced)
            rounds.setdefault(key, []).append(point.items_per_s)
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


def noise(results: Results) -> str:
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
