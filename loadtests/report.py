"""Turn a benchmark results JSON into `docs/benchmarks.md`, `docs/benchmarks.json` and plots.

`python -m loadtests.report [RESULTS.json] [--docs DIR]` regenerates the documents from a saved
run (default: `loadtests/results/latest.json`) without measuring again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.reporting.evaluate import evaluate
from loadtests.reporting.page import render
from loadtests.reporting.plots import plot
from loadtests.reporting.records import Results

REPO = Path(__file__).resolve().parent.parent


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
