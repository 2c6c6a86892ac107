"""Helpers of the resolve tests (own module name: conftest names collide across test folders)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from scripted_server import answer, call

ISSUE_TITLE = "median() is wrong for even-length lists"
ISSUE_BODY = ("`median([4, 1, 3, 2])` returns 3, but the median of 1, 2, 3, 4 is 2.5: for an even number of "
              "values it should be the mean of the two middle values. `python3 -m unittest` shows it.")
COMMENTS = (("maintainer", "Confirmed on main."), ("reporter", "Also median([1, 2]) gives 2."),
            ("maintainer", "A fix should keep odd lengths as they are."))
FIX_OLD = "        return ordered[middle]\n    return ordered[middle]\n"
FIX_NEW = "        return ordered[middle]\n    return (ordered[middle - 1] + ordered[middle]) / 2\n"
PLAN = {"steps": [{"goal": "average the two middle values", "files": ["stats.py"], "verify": "python3 -m unittest"}]}
SUBMIT_SUMMARY = "median() returned the upper middle value for even lengths; it now averages the two middle values."


def solve_script(extra_shell: str | None = None) -> list[dict]:
    """A scripted model that plans, runs the failing tests, fixes stats.py, runs them again and submits."""
    script = [
        call("search", {"pattern": "def median"}),
        answer('<tool_call>\n{"name": "write_plan", "arguments": %s}\n</tool_call>' % json.dumps(PLAN)),
        call("run_tests", {}),
        call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
        call("run_tests", {}),
    ]
    if extra_shell:
        script.append(call("shell", {"command": extra_shell}))
    script += [call("update_plan", {"step": 1, "status": "done", "note": "tests pass"}),
               call("submit", {"summary": SUBMIT_SUMMARY})]
    return script


def secret_forms(token: str) -> list[bytes]:
    """The token as it could leak: raw, and inside a Basic authorization header (base64)."""
    forms = [token.encode()]
    for user in ("x-access-token", ""):
        forms.append(base64.b64encode(f"{user}:{token}".encode()))
    return forms


def files_holding(root: Path, token: str) -> list[str]:
    """Every file under ``root`` (hidden files and git internals included) whose bytes hold the token."""
    hits = []
    forms = secret_forms(token)
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            data = path.read_bytes()
            if any(f in data for f in forms):
                hits.append(str(path.relative_to(root)))
    return hits


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def run_cli(args: list[str], env_extra: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``loopcoder ARGS`` as a separate process (so every byte it prints is captured)."""
    env = {k: v for k, v in os.environ.items()}
    env.update(env_extra)
    exe = Path(sys.executable).with_name("loopcoder")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout)
