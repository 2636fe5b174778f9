"""`python -m service`: start the gateway. Every setting is a flag, derived from `Settings`.

`python -m service inspect <model file or folder>` prints a model's completed configuration
(service/triton/inspect_command.py) instead."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import CliApp

from service.logs import configure
from service.settings import Settings


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    """Settings from these flags over `GATEWAY_*` and `.env`; `None` reads `sys.argv[1:]`.

    `--help` and unknown flags exit as argparse does; invalid values raise ValidationError."""
    return CliApp.run(Settings, cli_args=None if argv is None else list(argv))


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["inspect"]:
        from service.triton.inspect_command import main as inspect

        raise SystemExit(inspect(args[1:]))
    try:
        settings = settings_from_args(argv)
    except ValidationError as error:
        # Like argparse's own usage errors: one line and exit status 2, no traceback. The value
        # may come from a flag, GATEWAY_* or .env, so name the setting.
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']} (got {item['input']!r})"
            for item in error.errors()
        )
        print(f"python -m service: error: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(settings.log_level)
    if settings.workers > 1:
        from service.supervisor import supervise

        raise SystemExit(supervise(settings))
    # Imported here so that `--help` and bad flags answer without loading the app stack.
    from service.server import run

    run(settings)


if __name__ == "__main__":
    main()
