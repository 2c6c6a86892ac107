"""Fixtures of the terminal-task tests: Docker engine and base image (fail in CI, skip elsewhere), the scripted
model server of the agent tests (a real HTTP server on 127.0.0.1), task folders made for one test."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from terminal_support import BUNDLED


@pytest.fixture
def task_copy(tmp_path):
    """task_copy(name, new_name=None) -> a private copy of a bundled task folder (to change for one test)."""

    def copy(name: str, new_name: str | None = None) -> Path:
        dest = tmp_path / "tasks" / (new_name or name)
        shutil.copytree(BUNDLED / name, dest)
        return dest

    return copy
