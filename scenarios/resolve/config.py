"""Settings of `loopcoder resolve` (configs/resolve.yaml); ``--set resolve.<key>=<value>`` overrides them."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

from loopcoder.configs import load_config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GitHubSettings(_Section):
    timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(4, ge=1)
    backoff_initial_s: float = Field(1.0, ge=0)
    max_rate_limit_wait_s: float = Field(60.0, ge=0)
    per_page: int = Field(100, ge=1, le=100)


class TaskSettings(_Section):
    max_chars: int = Field(24000, ge=1000)


class EnvironmentSettings(_Section):
    build_image: bool = True
    final_check: bool = True
    final_check_timeout_s: float = Field(900.0, gt=0)


class PullRequestSettings(_Section):
    branch_prefix: str = "loopcoder/issue-"
    title: str = "Fix #{number}: {title}"
    fork_wait_s: float = Field(60.0, ge=0)
    push_timeout_s: float = Field(300.0, gt=0)
    max_body_chars: int = Field(60000, ge=1000, le=65536)


class ResolveConfig(_Section):
    github: GitHubSettings = GitHubSettings()
    task: TaskSettings = TaskSettings()
    environment: EnvironmentSettings = EnvironmentSettings()
    pull_request: PullRequestSettings = PullRequestSettings()


def load_resolve_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ResolveConfig:
    """configs/resolve.yaml (or ``path``) with overrides (``github.timeout_s=60``); ConfigError when invalid."""
    return load_config(ResolveConfig, path, overrides, default="resolve")
