"""Entry point: `python -m training`. User errors print one line and exit 1, no traceback."""

from __future__ import annotations

import os
import sys

from training.cli import main
from training.errors import TrainingError


def entry() -> int:
    # Idle OpenMP threads sleep instead of spinning. On a small, shared machine (2 cores, other
    # processes busy) spinning threads slowed training several-fold; must precede importing torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
