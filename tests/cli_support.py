"""Helper of the CLI tests: run `loopcoder ARGS` in this process."""
from __future__ import annotations


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`loopcoder ARGS` in this process: (exit code, stdout, stderr)."""
    from loopcoder.scenarios.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
