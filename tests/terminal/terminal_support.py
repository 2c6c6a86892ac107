"""Shared constants of the terminal-task tests (a module of its own: `conftest` names clash across folders)."""
from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[2] / "scenarios" / "terminal" / "tasks"
