"""The demo repository: a few files with a real bug (median of an even-length list) and unittest tests.

The files ship as package data (scenarios/demo_repo/); ``make_demo_repo`` turns them into a git
repository with one commit, which is what `loopcoder agent run --repo` needs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FILES = Path(__file__).resolve().parent / "demo_repo"
TASK_FILE = "ISSUE.md"
TEST_COMMAND = "python3 -m unittest"


def make_demo_repo(dest: str | Path) -> Path:
    """Create the demo repository at ``dest`` (kept as it is when it already exists)."""
    dest = Path(dest)
    if (dest / ".git").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(FILES.iterdir()):
        if f.is_file() and f.suffix in (".py", ".md"):
            shutil.copy(f, dest / f.name)
    env = dict(os.environ, GIT_AUTHOR_NAME="LoopCoder demo", GIT_AUTHOR_EMAIL="demo@localhost",
               GIT_COMMITTER_NAME="LoopCoder demo", GIT_COMMITTER_EMAIL="demo@localhost")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "stats helpers"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest
