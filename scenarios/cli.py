"""The ``loopcoder`` command line: one typer app, sub-apps mounted from the parts they drive.

Bad input never prints a traceback: every user-facing error type is turned into one line on
stderr and exit code 2. Heavy imports (torch, transformers) happen inside the commands so that
``loopcoder --help`` stays instant.
"""
from __future__ import annotations

import os
import sys

# OpenMP threads that spin while waiting for work cost far more than they give when the CPU is shared (the
# model server beside Docker sandboxes running tests): measured on the 2-core machine with two test workers
# busy, a 300-token prefill plus 16 decoded tokens of LoopCoder-Nano took 8.9 + 9.4 s with the default
# policy and 2.8 + 4.3 s with PASSIVE. It must be set before torch loads libgomp; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from loopcoder.configs import ConfigError
from loopcoder.scenarios.agent_cli import agent_app, replay_command
from loopcoder.scenarios.model_cli import diagnose_command, model_app
from loopcoder.scenarios.nano_cli import nano_app
from loopcoder.runtime.errors import RuntimeFailure
from loopcoder.scenarios.sandbox_cli import doctor_command, sandbox_app
from loopcoder.scenarios.resolve_cli import resolve_command
from loopcoder.scenarios.serve_cli import serve_command
from loopcoder.scenarios.swebench_cli import swebench_app
from loopcoder.scenarios.terminal_cli import terminal_app
from loopcoder.scenarios.train_cli import train_command

app = typer.Typer(
    name="loopcoder",
    help="Agentic software engineering on Parallel Loop Transformer coder models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(model_app, name="model")
app.command("diagnose")(diagnose_command)
app.add_typer(sandbox_app, name="sandbox")
app.command("doctor")(doctor_command)
app.command("serve")(serve_command)
app.add_typer(swebench_app, name="swebench")
app.add_typer(agent_app, name="agent")
app.add_typer(terminal_app, name="terminal")
app.add_typer(nano_app, name="nano")
app.command("replay")(replay_command)
app.command("resolve")(resolve_command)
app.command("train")(train_command)

# Exception types whose message is meant for the user; each part of the system adds its own here.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, RuntimeFailure)
# Options that take several values (`--loops 1 2 3 4`); click wants `--loops 1 --loops 2 ...`.
VARIADIC_OPTIONS = {"--loops"}


# Parts imported only by the commands that need them (model_server imports torch, which takes seconds):
# their error types are known once they are loaded, which any of their errors implies.
LAZY_USER_ERRORS = {"loopcoder.model_server.errors": "ModelError", "loopcoder.agent.client": "ModelError",
                    "loopcoder.agent.trajectory": "TrajectoryError"}


def _user_error_types() -> tuple[type[BaseException], ...]:
    loaded = tuple(getattr(sys.modules[name], attr) for name, attr in LAZY_USER_ERRORS.items()
                   if name in sys.modules)
    return USER_ERRORS + loaded


def expand_variadic(argv: list[str]) -> list[str]:
    """Rewrite `--opt a b c` as `--opt a --opt b --opt c` for the options in VARIADIC_OPTIONS."""
    out, current = [], None
    for arg in argv:
        if arg in VARIADIC_OPTIONS:
            current = arg
            continue
        if current and not arg.startswith("-"):
            out += [current, arg]
            continue
        current = None
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = app(args=expand_variadic(sys.argv[1:] if argv is None else argv), prog_name="loopcoder",
                   standalone_mode=False)
    except typer.TyperException as exc:
        # typer 0.29 vendors click (typer._click): its usage errors are TyperExceptions, not click's own.
        _show_usage_error(exc)
        sys.exit(getattr(exc, "exit_code", 2))
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if not isinstance(exc, _user_error_types()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    # Without standalone mode, typer hands back the code of `typer.Exit(code)` (and of --help: 0).
    if isinstance(code, int) and not isinstance(code, bool) and code:
        if code == 130:  # typer turns Ctrl-C inside a command into Exit(130)
            print("interrupted", file=sys.stderr)
        sys.exit(code)


def _show_usage_error(exc: typer.TyperException) -> None:
    """One line on stderr: the mistake and where the help is. A bare group shows its help instead."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # how typer itself tells it apart (rich_utils)
        text = exc.format_message().rstrip()  # typer's rich help prints itself to stdout and returns ""
        if text:
            print(text, file=sys.stderr)
        return
    message = " ".join(exc.format_message().split()).rstrip(".")
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    print(f"error: {message}{hint}", file=sys.stderr)


if __name__ == "__main__":
    main()
