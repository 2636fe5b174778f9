"""Command line: `python -m training <model> [options]` and `python -m training all`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from training.config import (
    DEFAULT_HORIZON,
    DEFAULT_SPLIT_SEED,
    DEFAULT_STORE,
    DEFAULT_WINDOW,
    IMAGE_DATASETS,
    MODEL_NAMES,
    RECIPES,
    STORE_NAME,
    RunOptions,
)
from training.errors import TrainingError

DESCRIPTION = """\
Train the course models and export them for serving. Each run writes
<model-store>/<name>/<version>/ with model.onnx, model.pt (TorchScript), optionally
model.pt2, model.json (the manifest), metrics.json and PNG reports. Every export must
match eager PyTorch (max-abs difference <= 1e-4) or the run fails and writes nothing.

models:
  iris      tabular classification, MLP 4-16-3 (sklearn iris or --data file.csv)
  diabetes  tabular regression, MLP 10-64-32-1 (sklearn diabetes or --data file.csv)
  digits    image classification, TinyVGG CNN (sklearn digits at 28x28; FashionMNIST,
            CIFAR-10 or an ImageFolder with --dataset/--data)
  resnet18  image classification, torchvision resnet18 (digits at 32x32 RGB; --weights
            for transfer learning from a local ImageNet .pth, --freeze for the head only)
  minilm    text embedding, pretrained all-MiniLM-L6-v2 (export only, no training)
  lstm      time-series forecasting, LSTM over a window of past values (weekly Mauna
            Loa CO2 from statsmodels, or --data file.csv with a date and a value column)
  lstm_stream  the newest lstm's network as a streaming step model (one reading per
            request, its state kept by the server): a Triton folder with implicit state
  all       every model above with its defaults (add --missing to skip finished ones)
"""

EPILOG = """\
examples:
  python -m training all
  python -m training iris --epochs 200 --seed 1
  python -m training iris --data penguins.csv --target species --name penguins
  python -m training lstm --window 52 --horizon 4
  python -m training lstm --data sales.csv --date-column day --value-column units
  python -m training digits --dataset fashionmnist --data ~/data --download
  python -m training resnet18 --dataset imagefolder --data pizza_steak_sushi \\
      --weights resnet18-f37072fd.pth --freeze --image-size 64
run `python -m training <model> --help` for that model's options.
"""


class _OneLineParser(argparse.ArgumentParser):
    """Reports usage errors as a single line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parsed(text: str, convert: type[int] | type[float], noun: str) -> float:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None


def _positive_int(text: str) -> int:
    value = int(_parsed(text, int, "an integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(_parsed(text, int, "an integer"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _image_size(text: str) -> int:
    value = _positive_int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"images must be at least 8 pixels: {text}")
    return value


def _common_options() -> _OneLineParser:
    parent = _OneLineParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument(
        "--model-store",
        type=Path,
        default=DEFAULT_STORE,
        metavar="DIR",
        help="model store directory (default: %(default)s)",
    )
    group.add_argument(
        "--version",
        type=_positive_int,
        metavar="N",
        help="version to write (default: the next free one, starting at 1)",
    )
    group.add_argument(
        "--missing", action="store_true", help="skip a model that already has a finished version"
    )
    group.add_argument(
        "--pt2",
        action="store_true",
        help="also export model.pt2 with AOTInductor (about a minute per model)",
    )
    group.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="seed for weights and shuffling (default: %(default)s)",
    )
    group.add_argument(
        "--split-seed",
        type=_non_negative_int,
        default=DEFAULT_SPLIT_SEED,
        metavar="N",
        help="seed of the held-out split, kept apart from --seed so "
        "that the test set stays put (default: %(default)s)",
    )
    return parent


def _training_options() -> _OneLineParser:
    parent = _OneLineParser(add_help=False)
    group = parent.add_argument_group("training (defaults: the model's recipe)")
    group.add_argument("--epochs", type=_positive_int, help="training epochs")
    group.add_argument("--batch-size", type=_positive_int, metavar="N", help="training batch size")
    group.add_argument(
        "--lr", type=_positive_float, help="peak learning rate (AdamW, cosine decay)"
    )
    group.add_argument(
        "--max-samples",
        type=_positive_int,
        metavar="N",
        help="use at most N training and N held-out samples (quick runs)",
    )
    return parent


def _recipe_line(model: str) -> str:
    recipe = RECIPES[model]
    size = f", image size {recipe.image_size}" if recipe.image_size else ""
    return (
        f"defaults: {recipe.epochs} epochs, batch size {recipe.batch_size}, lr {recipe.lr:g}{size}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m training",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_subparsers(dest="model", metavar="model", required=True)
    common, training = _common_options(), _training_options()

    for model, help_text in (
        ("iris", "tabular classification (MLP)"),
        ("diabetes", "tabular regression (MLP)"),
    ):
        sub = models.add_parser(
            model,
            parents=[common, training],
            help=help_text,
            description=f"{help_text}; {_recipe_line(model)}",
        )
        data = sub.add_argument_group("data")
        data.add_argument(
            "--data",
            type=Path,
            metavar="FILE.csv",
            help="CSV with a header row instead of the built-in dataset",
        )
        data.add_argument(
            "--target", metavar="COLUMN", help="target column of --data (default: the last column)"
        )
        data.add_argument("--name", help="name in the model store (default: derived)")

    for model, help_text in (
        ("digits", "image classification with a TinyVGG CNN"),
        ("resnet18", "image classification with torchvision resnet18"),
    ):
        sub = models.add_parser(
            model,
            parents=[common, training],
            help=help_text,
            description=f"{help_text}; {_recipe_line(model)}",
        )
        data = sub.add_argument_group("data")
        data.add_argument(
            "--dataset",
            choices=IMAGE_DATASETS,
            help="digits (built in, default), fashionmnist or cifar10 (torchvision "
            "layout under --data), imagefolder (class folders under --data)",
        )
        data.add_argument("--data", type=Path, metavar="ROOT", help="dataset directory")
        data.add_argument(
            "--download",
            action="store_true",
            help="let torchvision download FashionMNIST/CIFAR-10 into --data",
        )
        data.add_argument(
            "--image-size",
            type=_image_size,
            metavar="PX",
            help=f"square input size (default: {RECIPES[model].image_size})",
        )
        data.add_argument("--name", help="name in the model store (default: derived)")
        if model == "resnet18":
            transfer = sub.add_argument_group("transfer learning")
            transfer.add_argument(
                "--weights",
                type=Path,
                metavar="PATH",
                help="local resnet18 ImageNet state dict (.pth); without it, trains from scratch",
            )
            transfer.add_argument(
                "--freeze",
                action="store_true",
                help="train only the new final layer (default: fine-tune all)",
            )

    minilm = models.add_parser(
        "minilm",
        parents=[common],
        help="text embedding (export only)",
        description="export pretrained all-MiniLM-L6-v2 (384-d, mean "
        "pooling, L2-normalized) with its tokenizer; no training",
    )
    minilm.add_argument("--name", help="name in the model store (default: minilm)")

    lstm = models.add_parser(
        "lstm",
        parents=[common, training],
        help="time-series forecasting (LSTM)",
        description=f"time-series forecasting with an LSTM; {_recipe_line('lstm')}",
    )
    data = lstm.add_argument_group("data")
    data.add_argument(
        "--data",
        type=Path,
        metavar="FILE.csv",
        help="CSV with a header, a date column and a value column instead of the weekly "
        "Mauna Loa CO2 record",
    )
    data.add_argument(
        "--date-column", metavar="COLUMN", help="date column of --data (default: the first)"
    )
    data.add_argument(
        "--value-column", metavar="COLUMN", help="value column of --data (default: the last)"
    )
    data.add_argument("--name", help="name in the model store (default: derived)")
    shape = lstm.add_argument_group("forecast")
    shape.add_argument(
        "--window",
        type=_positive_int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help="past values per forecast (default: %(default)s)",
    )
    shape.add_argument(
        "--horizon",
        type=_positive_int,
        default=DEFAULT_HORIZON,
        metavar="H",
        help="future values per forecast (default: %(default)s)",
    )
    shape.add_argument(
        "--season",
        type=_positive_int,
        metavar="N",
        help="steps per season for the seasonal-naive baseline (default: from the dates' "
        "frequency, 52 for weekly data)",
    )

    stream = models.add_parser(
        "lstm_stream",
        parents=[common],
        help="the lstm as a streaming step model (no training)",
        description="export the newest windowed lstm's network as a step model: one reading "
        "in, the next forecast out, the LSTM state carried by the server (Triton implicit "
        "state); checked against the windowed model on the held-out tail",
    )
    stream.add_argument(
        "--from",
        dest="source",
        default="lstm",
        metavar="NAME",
        help="the windowed forecaster in the store (default: %(default)s)",
    )
    stream.add_argument(
        "--data", type=Path, metavar="FILE.csv", help="the CSV the windowed model was trained on"
    )
    stream.add_argument("--date-column", metavar="COLUMN", help="date column of --data")
    stream.add_argument("--value-column", metavar="COLUMN", help="value column of --data")
    stream.add_argument("--name", help="name in the model store (default: lstm_stream)")

    models.add_parser(
        "all",
        parents=[common, training],
        help="every model with its defaults",
        description="train and export " + ", ".join(MODEL_NAMES) + " in turn",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> list[RunOptions]:
    """Validate paths and combinations; return one RunOptions per model to run."""
    values = {k: v for k, v in vars(args).items() if k != "model"}
    model: str = args.model
    data: Path | None = values.get("data")
    dataset: str | None = values.get("dataset")
    if model in ("digits", "resnet18"):
        if data is not None and dataset is None:
            dataset = _guess_dataset(data)
        if dataset not in (None, "digits") and data is None:
            raise TrainingError(f"--dataset {dataset} needs --data ROOT")
        if dataset in (None, "digits") and data is not None:
            raise TrainingError("--data is not used with the built-in digits dataset")
        values["dataset"] = dataset
    download = bool(values.get("download"))
    if data is not None and not data.exists() and not download:
        raise TrainingError(f"dataset path does not exist: {data}")
    name: str | None = values.get("name")
    if name is not None and not STORE_NAME.match(name):
        raise TrainingError(f"--name {name!r}: use lower-case letters, digits, '_' and '-'")
    weights: Path | None = values.get("weights")
    if weights is not None and not weights.is_file():
        raise TrainingError(f"weights file not found: {weights}")
    if model == "all":
        base = RunOptions(model="iris", **values)
        return [base.for_model(name) for name in MODEL_NAMES]
    return [RunOptions(model=model, **values)]


def _guess_dataset(root: Path) -> str:
    if (root / "FashionMNIST").is_dir():
        return "fashionmnist"
    if (root / "cifar-10-batches-py").is_dir():
        return "cifar10"
    return "imagefolder"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run each requested model, print a summary; raises TrainingError on user errors."""
    args = build_parser().parse_args(argv)
    runs = options_from_args(args)
    from training.pipeline import run  # heavy imports only once the arguments are valid

    started = time.perf_counter()
    outcomes = []
    for options in runs:
        label = options.store_name
        print(f"== {label}" + ("" if label == options.model else f" ({options.model})"), flush=True)
        outcome = run(options)
        if outcome is None:
            continue
        outcomes.append(outcome)
        metrics = " ".join(f"{k}={v:.4g}" for k, v in outcome.metrics.items())
        parity = " ".join(f"{k}={v:.3g}" for k, v in outcome.parity.items())
        print(
            f"{outcome.name} v{outcome.version}: {metrics} | parity {parity} | "
            f"{outcome.seconds:.1f}s -> {outcome.path}",
            flush=True,
        )
    if len(runs) > 1:
        print(
            f"done: {len(outcomes)} exported, {len(runs) - len(outcomes)} skipped, "
            f"{time.perf_counter() - started:.1f}s total",
            file=sys.stdout,
            flush=True,
        )
    return 0
