"""`python -m service inspect <model file or folder>`: print the completed configuration as
`config.pbtxt` text, ready to edit (or Triton's JSON form with `--json`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from service.errors import ModelConfigError

PROG = "python -m service inspect"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Print the configuration the gateway completes for a Triton model folder "
        "or a bare model file (model.onnx, model.pt2), as config.pbtxt text.",
    )
    parser.add_argument("path", type=Path, help="a model folder or a model file")
    parser.add_argument("--name", help="the model's name (default: the folder's or file's)")
    parser.add_argument(
        "--json", action="store_true", help="print Triton's JSON form (GET .../config) instead"
    )
    args = parser.parse_args(list(argv))
    from service.triton.resolve import resolve_model

    try:
        model = resolve_model(args.path, name=args.name)
    except ModelConfigError as error:
        print(f"{PROG}: error: {error.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(model.config_json(), indent=2))
    else:
        print(model.pbtxt(), end="")
    return 0
