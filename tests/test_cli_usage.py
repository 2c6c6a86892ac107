"""Every `loopcoder` command answers a usage mistake with one line on stderr and exit code 2, never a
traceback, both in process (``main([...])``) and through the installed console script.

Commands are enumerated from the typer app, so a command added later is covered without touching this file.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from loopcoder.scenarios.cli import app, main

BOGUS = "--no-such-option-xyz"
SCRIPT = Path(sys.executable).with_name("loopcoder")


def _walk(command, path: list[str]):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, path + [name])


COMMANDS = list(_walk(typer.main.get_command(app), []))
PATHS = [path for path, _ in COMMANDS]
LEAVES_WITH_REQUIRED = [(path, [p.name for p in cmd.params if p.required])
                        for path, cmd in COMMANDS if not hasattr(cmd, "commands") and any(p.required for p in cmd.params)]


def ids(path: list[str]) -> str:
    return " ".join(path) or "loopcoder"


def in_process(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)  # main returns normally on success
    out = capsys.readouterr()
    code = exit_info.value.code
    return 0 if code is None else code, out.out, out.err


def assert_one_line_usage_error(code: int, out: str, err: str, *expected: str) -> None:
    assert "Traceback" not in err + out, err
    assert code == 2, (code, err)
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("error: ") and all(e in err for e in expected), err


def test_the_walk_finds_every_command():
    assert {"serve", "doctor", "diagnose", "model init", "model generate", "sandbox build-base",
            "sandbox build-env", "sandbox gc", "terminal run", "terminal tasks"} <= {" ".join(p) for p in PATHS}
    assert LEAVES_WITH_REQUIRED  # else the missing-argument tests below check nothing


@pytest.mark.parametrize("path", PATHS, ids=ids)
def test_unknown_option_is_a_one_line_usage_error(path, capsys):
    code, out, err = in_process(path + [BOGUS], capsys)
    assert_one_line_usage_error(code, out, err, f"No such option: {BOGUS}", f"loopcoder {' '.join(path)}".rstrip())


@pytest.mark.parametrize("path, required", LEAVES_WITH_REQUIRED, ids=[ids(p) for p, _ in LEAVES_WITH_REQUIRED])
def test_missing_required_argument_is_a_one_line_usage_error(path, required, capsys):
    code, out, err = in_process(path, capsys)
    assert_one_line_usage_error(code, out, err, "Missing")


@pytest.mark.parametrize("path", PATHS, ids=ids)
def test_help_still_exits_zero(path, capsys):
    code, out, err = in_process(path + ["--help"], capsys)
    assert code == 0 and "Usage: loopcoder" in out and "Traceback" not in err, (code, err)


def test_other_usage_mistakes(capsys):
    for args, expected in [(["model", "no-such-command"], "No such command 'no-such-command'"),
                           (["serve", "--port", "eighty"], "Invalid value for '--port'"),
                           (["sandbox", "gc", "--set", "x=1"], "No such option: --set"),
                           (["model", "init", "--out"], "--out")]:
        code, out, err = in_process(args, capsys)
        assert_one_line_usage_error(code, out, err, expected)


def test_a_group_without_its_command_shows_its_help(capsys):
    code, out, err = in_process(["sandbox"], capsys)
    assert code == 2 and "Usage: loopcoder sandbox" in out + err and "Traceback" not in out + err


def test_the_console_script_answers_the_same(tmp_path):
    """Each command with a bogus option, and each one missing a required argument, in a real subprocess."""
    cases = [path + [BOGUS] for path in PATHS] + [path for path, _ in LEAVES_WITH_REQUIRED]
    procs = [(args, subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=tmp_path)) for args in cases]
    for args, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert_one_line_usage_error(proc.returncode, out, err, "No such option" if BOGUS in args else "Missing")
    help_proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert help_proc.returncode == 0 and "Usage: loopcoder" in help_proc.stdout


def test_a_commands_own_exit_code_reaches_the_shell(capsys):
    # doctor ends with typer.Exit(1) when a check fails (here the base image: no such tag); without
    # standalone mode typer returns that code instead of exiting, and it used to be dropped (exit 0).
    code, out, err = in_process(["doctor", "--set", "images.base_image=loopcoder/no-such-image:none"], capsys)
    assert code == 1 and "Traceback" not in err, (code, out, err)
