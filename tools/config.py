"""Settings of the agent's tools; the shipped defaults are configs/tools.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RepoMapConfig(_Section):
    token_budget: int = Field(1024, ge=0, description="default size of the rendered map, in tokens")
    chars_per_token: float = Field(3.5, gt=0, description="token estimate when no tokenizer is given")
    cache_dir: Path | None = Field(None, description="tag cache folder; default ~/.cache/loopcoder/repomap")
    workers: int = Field(0, ge=0, description="processes for a cold scan; 0 = one per CPU")


class LimitsConfig(_Section):
    max_file_bytes: int = Field(1_000_000, gt=0, description="larger files are refused whole and not indexed")
    max_view_lines: int = Field(300, gt=0)
    max_line_chars: int = Field(400, gt=20, description="longer lines are clipped in view and search output")
    max_results: int = Field(50, gt=0, description="cap on search hits, definitions and references listed")


class SearchConfig(_Section):
    ripgrep: Literal["auto", "always", "never"] = "auto"
    timeout_s: float = Field(30.0, gt=0)


class EditConfig(_Section):
    reject_syntax_errors: bool = Field(True, description="undo an edit that adds a syntax error (else warn)")
    max_undo: int = Field(50, ge=1, description="edits remembered per file")


class ShellConfig(_Section):
    timeout_s: float = Field(120.0, gt=0)
    test_command: str = Field("python -m pytest -q -x", description="run_tests runs this plus the given paths")
    test_timeout_s: float = Field(900.0, gt=0)


class ToolsConfig(_Section):
    repo_map: RepoMapConfig = RepoMapConfig()
    limits: LimitsConfig = LimitsConfig()
    search: SearchConfig = SearchConfig()
    edit: EditConfig = EditConfig()
    shell: ShellConfig = ShellConfig()
