"""`python -m loadtests.locust_run` (`make loadtest`): a bounded headless Locust run against a
running gateway, then the gateway's own split of the time beside Locust's percentiles.

Writes `<out>/<prefix>_stats.csv` (and Locust's other CSV files) and `<out>/<prefix>.html`.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.systems import server_metrics
from loadtests.systems.server_metrics import ModelSplit

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
REPO = Path(__file__).resolve().parent.parent
TAGS = ("v2json", "v2binary", "upload", "text", "grpc", "torchserve")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.locust_run", description=__doc__)
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="the gateway's URL")
    parser.add_argument(
        "--tags",
        default="v2json,v2binary,upload,text",
        help=f"comma-separated scenarios: {','.join(TAGS)}",
    )
    parser.add_argument(
        "--grpc-host",
        default=os.environ.get("LOADTEST_GRPC_HOST"),
        help="the gateway's gRPC host:port for the `grpc` scenario "
        "(default: the --host's name on port 8001)",
    )
    parser.add_argument("--steps", default="1,4,16,32", help="users per scenario, step by step")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--ramp-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=REPO / "loadtests" / "results")
    parser.add_argument("--prefix", default="locust")
    parser.add_argument(
        "--token",
        default=os.environ.get("GATEWAY_INFERENCE_TOKEN"),
        help="bearer token for /metrics when the gateway protects it",
    )
    args = parser.parse_args(argv)
    args.tags = [item.strip() for item in args.tags.split(",") if item.strip()]
    unknown = sorted(set(args.tags) - set(TAGS))
    if unknown:
        parser.error(f"unknown tags {unknown}; choose from {', '.join(TAGS)}")
    return args


def read_stats(path: Path) -> list[dict[str, str]]:
    """Locust's `_stats.csv` rows (the Aggregated row last)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _fmt(value: float | str | None, digits: int = 1) -> str:
    if value is None or value == "" or value == "N/A":
        return "-"
    return f"{float(value):.{digits}f}"


def client_table(rows: list[dict[str, str]]) -> list[str]:
    lines = [
        f"{'client side (Locust)':58s} {'reqs':>7s} {'fail':>5s} {'req/s':>8s} "
        f"{'p50':>7s} {'p95':>7s} {'p99':>7s}  ms"
    ]
    for row in rows:
        name = f"{row.get('Type', '')} {row.get('Name', '')}".strip()
        lines.append(
            f"{name[:58]:58s} {row.get('Request Count', '-'):>7s} "
            f"{row.get('Failure Count', '-'):>5s} {_fmt(row.get('Requests/s')):>8s} "
            f"{_fmt(row.get('50%'), 0):>7s} {_fmt(row.get('95%'), 0):>7s} "
            f"{_fmt(row.get('99%'), 0):>7s}"
        )
    return lines


def server_table(rows: list[ModelSplit]) -> list[str]:
    lines = [
        f"{'server side (/metrics)':22s} {'reqs':>7s} {'mean':>7s} {'p50~':>7s} "
        f"{'p99~':>7s} {'queue':>7s} {'compute':>8s} {'batches':>8s} {'rows/batch':>10s}"
    ]
    for row in rows:
        lines.append(
            f"{row.model + '/' + row.version:22s} {row.requests:7d} "
            f"{_fmt(row.request_mean_ms, 2):>7s} {_fmt(row.request_p50_ms, 2):>7s} "
            f"{_fmt(row.request_p99_ms, 2):>7s} {_fmt(row.queue_mean_ms, 2):>7s} "
            f"{_fmt(row.compute_mean_ms, 2):>8s} {row.batches:8d} "
            f"{_fmt(row.mean_batch_size, 2):>10s}"
        )
    lines.append(
        "  (ms; mean = request time inside the gateway, p50~/p99~ estimated from "
        "histogram buckets,\n   queue = mean wait per request, compute = mean time "
        "per batch; torchserve-direct traffic is not seen here)"
    )
    return lines


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / args.prefix
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    bound_s = len(steps) * args.step_seconds
    try:
        before = server_metrics.scrape(args.host, args.token)
    except OSError as error:
        print(
            f"cannot read {args.host}/metrics ({error}); is the gateway running?", file=sys.stderr
        )
        return 2
    env = {
        **os.environ,
        "LOADTEST_STEPS": args.steps,
        "LOADTEST_STEP_SECONDS": str(args.step_seconds),
        "LOADTEST_RAMP_SECONDS": str(args.ramp_seconds),
    }
    if args.grpc_host:
        env["LOADTEST_GRPC_HOST"] = args.grpc_host
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        args.host,
        "--tags",
        *args.tags,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
    ]
    print(
        f"locust: {', '.join(args.tags)}; {args.steps} users per scenario, "
        f"{args.step_seconds:g} s each (about {bound_s:.0f} s)",
        flush=True,
    )
    try:
        done = subprocess.run(command, env=env, check=False, timeout=bound_s + 120)
        code = done.returncode
    except subprocess.TimeoutExpired:
        print("locust overran its time bound and was stopped", file=sys.stderr)
        code = 3
    after = server_metrics.scrape(args.host, args.token)
    print()
    print("\n".join(client_table(read_stats(Path(f"{prefix}_stats.csv")))))
    print()
    print("\n".join(server_table(server_metrics.split(before, after))))
    print(f"\nreport: {prefix}.html, CSV: {prefix}_stats.csv")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
