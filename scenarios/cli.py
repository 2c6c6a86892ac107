"""The ``loopcoder`` command line: one typer app, sub-apps mounted from the parts they drive.

Bad input never prints a traceback: every user-facing error type is turned into one line on
stderr and exit code 2. Heavy imports (torch, transformers) happen inside the commands so that
``loopcoder --help`` stays instant.
"""
from __future__ import annotations

import sys

import click
import typer

from loopcoder.configs import ConfigError
from loopcoder.model_server.errors import ModelError

app = typer.Typer(
    name="loopcoder",
    help="Agentic software engineering on Parallel Loop Transformer coder models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Exception types whose message is meant for the user; each part of the system adds its own here.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ModelError, FileNotFoundError)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="loopcoder", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
