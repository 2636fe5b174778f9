"""Entry point: `python -m training`. User errors print one line and exit 1, no traceback."""

from __future__ import annotations

import sys

from training.cli import main
from training.errors import TrainingError


def entry() -> int:
    try:
        return main()
    except TrainingError as exc:
        print(f"python -m training: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("python -m training: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
