"""The goals the benchmark reports, as data: each a typed kind, a target and the systems, models
and concurrency it applies to. `evaluate.py` turns a kind into figures, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class GoalKind(StrEnum):
    """What a goal compares; `evaluate.MEASURES` holds how each kind is measured."""

    RATIO_AT = "ratio_at"
    """Ours ÷ theirs throughput at the goal's concurrency."""
    RATIO_RAW = "ratio_raw"
    """Best throughput ÷ the raw limit (the raw call's best items/s at any batch)."""
    RATIO_FORMED = "ratio_formed"
    """Best throughput ÷ raw items/s at the batch size that point formed."""
    P50_RATIO_AT = "p50_ratio_at"
    """Ours ÷ theirs p50 latency at the goal's concurrency."""
    COLD_START_RATIO = "cold_start_ratio"
    """The cold start of the server running `ours` ÷ that of `theirs`."""
    OVERHEAD = "overhead"
    """Ours p50 at c=1 minus the raw batch-1 p50, calls back to back (ms)."""
    OVERHEAD_PACED = "overhead_paced"
    """Ours p50 at c=1 minus the raw batch-1 p50 of calls paced as a server's are at c=1, each
    after an idle gap (ms)."""
    BACKEND = "backend"
    """The gateway's backend time per batch ÷ the raw call at the same batch size, at the goal's
    concurrency."""
    COLD_START = "cold_start"
    """Seconds to ready of the server that runs `ours`."""
    RSS = "rss"
    """MiB resident once ready, of the server that runs `ours`."""
    BASELINE = "baseline"
    """Ours ÷ the same system in the previously recorded run, at the goal's concurrency."""
    CPU_RATIO_AT = "cpu_ratio_at"
    """Ours ÷ theirs server CPU time per answered request at the goal's concurrency."""

    @property
    def at_most(self) -> bool:
        """The figure must stay at or below the target (a time, a size), not reach it."""
        return self in AT_MOST


AT_MOST = frozenset(
    {
        GoalKind.OVERHEAD,
        GoalKind.OVERHEAD_PACED,
        GoalKind.BACKEND,
        GoalKind.COLD_START,
        GoalKind.RSS,
        GoalKind.P50_RATIO_AT,
        GoalKind.COLD_START_RATIO,
        GoalKind.CPU_RATIO_AT,
    }
)
"""The kinds whose figure is a cost; every other kind's figure must reach its target."""


class Unit(StrEnum):
    """The unit of a goal row's figures (`GoalRow.unit`), which also says how they are shown."""

    REQ_PER_S = "req/s"
    ITEMS_PER_S = "items/s"
    MS = "ms"
    """Ours and theirs in ms; the figure is their difference."""
    MS_PER_BATCH = "ms/batch"
    """Ours and theirs in ms per batch; the figure is their ratio."""
    S = "s"
    MIB = "MiB"
    RATIO_OF_MS = "ms, as a ratio"
    """Two latencies (ms) and their ratio."""
    RATIO_OF_S = "s, as a ratio"
    """Two durations (s) and their ratio."""
    CPU_MS = "ms CPU per request, as a ratio"
    """Two servers' CPU time per answered request (ms) and their ratio."""


@dataclass(frozen=True)
class Goal:
    title: str
    kind: GoalKind
    pairs: tuple[tuple[str, str], ...]
    """(our system, their system); 'raw' for the in-process limit. For the server kinds (cold
    start, RSS) the names are servers."""
    target: float
    models: tuple[str, ...] | None = None
    """None: every model measured; ("all",): one row for the whole run."""
    concurrency: int = 32

    @property
    def at_most(self) -> bool:
        return self.kind.at_most


@dataclass(frozen=True)
class GoalTable:
    """A set of goals reported together."""

    goals: tuple[Goal, ...]
    keep_unmeasured: bool
    """True: a row whose figures are all missing stays, as 'not measured' (this issue's goals);
    False: it is left out (earlier goals, reported so that a regression shows)."""

    def __iter__(self) -> Iterator[Goal]:
        return iter(self.goals)


REST_SYSTEMS = ("gateway-v2-json", "gateway-v2-binary", "gateway-predictions")
GATEWAY_REST = (("gateway-v2-binary", "raw"), ("gateway-v2-json", "raw"))
SMALL_MODELS = ("iris", "digits")
COMPUTE_BOUND = ("minilm", "resnet18")
GRPC_PEER_MODELS = ("iris", "digits", "lstm")
TORCHSERVE_USERS = (
    ("gateway-predictions", "torchserve"),
    ("gateway-native-mar", "torchserve"),
)
"""What a TorchServe user can switch to, against TorchServe direct, with the same body."""
BASELINE_TARGET = 0.90
"""'No worse than before' with room for this machine's run-to-run spread of a point (the
recorded run's repeats differ by 1.2x in the median): a drop past 10 % counts as worse."""

CPU_GOALS = (
    Goal(
        "REST: gateway CPU per request ÷ the uvicorn + httptools + uvloop floor, V2 JSON, "
        "c=32 (goal ≤ 3)",
        GoalKind.CPU_RATIO_AT,
        (("gateway-v2-json", "floor-uvicorn"),),
        3.0,
        ("iris",),
    ),
    Goal(
        "gRPC: gateway CPU per request ÷ the grpc.aio floor, c=32 (goal ≤ 1.5)",
        GoalKind.CPU_RATIO_AT,
        (("gateway-v2-grpc", "floor-grpc-aio"),),
        1.5,
        ("iris",),
    ),
    Goal(
        "gRPC: gateway ÷ PyTriton gRPC throughput at c=32 (goal ≥ 1.5)",
        GoalKind.RATIO_AT,
        (("gateway-v2-grpc", "pytriton-v2-grpc"),),
        1.5,
        GRPC_PEER_MODELS,
    ),
    Goal(
        "TorchServe's users: `/predictions` and `torchserve-native` ÷ TorchServe direct "
        "throughput at c=32, same body (goal ≥ 2)",
        GoalKind.RATIO_AT,
        TORCHSERVE_USERS,
        2.0,
    ),
    Goal(
        "TorchServe's users: CPU per request ÷ TorchServe direct's (JVM and workers), c=32 "
        "(goal ≤ 0.5)",
        GoalKind.CPU_RATIO_AT,
        TORCHSERVE_USERS,
        0.5,
    ),
)
"""Issue 22's goals: CPU per request against the floors, gRPC against PyTriton, TorchServe's
users against TorchServe direct. Compute-bound and c=1 goals are the ones below."""

GOALS = GoalTable(
    keep_unmeasured=True,
    goals=(
        *CPU_GOALS,
        Goal(
            "c=1 p50 overhead: gateway - raw batch-1 ONNX Runtime call (goal ≤ 1.0 ms)",
            GoalKind.OVERHEAD,
            GATEWAY_REST,
            1.0,
        ),
        Goal(
            "c=1 p50 overhead, small models: gateway - raw batch-1 call (goal ≤ 0.5 ms)",
            GoalKind.OVERHEAD,
            GATEWAY_REST,
            0.5,
            SMALL_MODELS,
        ),
        Goal(
            "c=1 p50 overhead, paced raw: gateway - raw batch-1 call, each after an idle gap as "
            "a server's calls are (goal ≤ 1.0 ms)",
            GoalKind.OVERHEAD_PACED,
            GATEWAY_REST,
            1.0,
        ),
        Goal(
            "Backend time per batch ÷ raw call at the same batch size, c=1 (goal ≤ 1.10)",
            GoalKind.BACKEND,
            GATEWAY_REST,
            1.10,
            concurrency=1,
        ),
        Goal(
            "Backend time per batch ÷ raw call at the same batch size, c=16 (goal ≤ 1.10)",
            GoalKind.BACKEND,
            GATEWAY_REST,
            1.10,
            concurrency=16,
        ),
        Goal(
            "Compute-bound: best throughput ÷ raw items/s at the batch size it formed (goal ≥ 0.90)",
            GoalKind.RATIO_FORMED,
            GATEWAY_REST,
            0.90,
            COMPUTE_BOUND,
        ),
        Goal(
            "Compute-bound: best throughput ÷ raw limit at its best batch (kept beside; goal ≥ 0.90)",
            GoalKind.RATIO_RAW,
            GATEWAY_REST,
            0.90,
            COMPUTE_BOUND,
        ),
        Goal(
            "Gateway ÷ TorchServe direct throughput at c=32, same request body (goal ≥ 1.5)",
            GoalKind.RATIO_AT,
            (("gateway-predictions", "torchserve"),),
            1.5,
            SMALL_MODELS,
        ),
        Goal(
            "Gateway ÷ LitServe throughput at c=32, same V2 JSON body (goal ≥ 1.2)",
            GoalKind.RATIO_AT,
            (("gateway-v2-json", "litserve-v2-json"),),
            1.2,
            SMALL_MODELS,
        ),
        Goal(
            "2 workers ÷ 1 worker throughput at c=64 (goal ≥ 1.3)",
            GoalKind.RATIO_AT,
            (("gateway-2workers-v2-json", "gateway-v2-json"),),
            1.3,
            ("iris",),
            concurrency=64,
        ),
        Goal(
            "Gateway cold start to ready, one worker, every benchmarked model warmed (goal ≤ 5 s)",
            GoalKind.COLD_START,
            (("gateway", ""),),
            5.0,
            ("all",),
        ),
        Goal(
            "Gateway RSS once ready, one worker, ONNX Runtime only (goal ≤ 400 MiB)",
            GoalKind.RSS,
            (("gateway", ""),),
            400.0,
            ("all",),
        ),
        Goal(
            "REST throughput at c=32 ÷ the same system in the previous recorded run "
            f"(goal ≥ {BASELINE_TARGET:.2f}: no worse, within the noise)",
            GoalKind.BASELINE,
            tuple((system, "previous run") for system in REST_SYSTEMS),
            BASELINE_TARGET,
        ),
        Goal(
            "Native archives: `torchserve-native` ÷ TorchServe direct throughput at c=32, same "
            "archive and body (goal ≥ 2)",
            GoalKind.RATIO_AT,
            (("gateway-native-mar", "torchserve"),),
            2.0,
            ("digits", "resnet18"),
        ),
        Goal(
            "Native archives: c=1 p50 of `torchserve-native` ÷ TorchServe direct's (goal ≤ 0.5)",
            GoalKind.P50_RATIO_AT,
            (("gateway-native-mar", "torchserve"),),
            0.5,
            concurrency=1,
        ),
        Goal(
            "Native archives: cold start from archives to ready ÷ TorchServe's (goal ≤ 0.33)",
            GoalKind.COLD_START_RATIO,
            (("gateway-native-mar", "torchserve"),),
            1 / 3,
            ("all",),
        ),
    ),
)
"""This issue's goals (CPU per request, then the serving tax, every core, Triton-style
measurement), and the native-archive runtime's."""

EARLIER_GOALS = GoalTable(
    keep_unmeasured=False,
    goals=(
        Goal(
            "Gateway ÷ PyTriton throughput at c=32 (goal ≥ 1.5)",
            GoalKind.RATIO_AT,
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
            GoalKind.RATIO_AT,
            (("gateway-predictions", "torchserve"),),
            2.5,
        ),
        Goal(
            "Gateway in front of TorchServe ÷ TorchServe direct throughput at c=32 (goal ≥ 1.0)",
            GoalKind.RATIO_AT,
            (("gateway-torchserve-v2-json", "torchserve"),),
            1.0,
        ),
        Goal(
            "c=1 p50 overhead over gRPC: gateway - raw batch-1 ONNX Runtime call (goal ≤ 1.0 ms)",
            GoalKind.OVERHEAD,
            (("gateway-v2-grpc", "raw"),),
            1.0,
            SMALL_MODELS,
        ),
    ),
)
"""Goals of earlier issues, still reported so a regression shows."""
