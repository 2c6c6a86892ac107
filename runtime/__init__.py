"""Runtime: sandboxes (Docker, local), offline image building, git workspaces.

Importing this package is cheap; the docker SDK loads when first used.
Contract for callers: ``loopcoder.runtime.sandbox`` (``Sandbox``, ``ExecResult``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopcoder.runtime.config import RuntimeConfig
    from loopcoder.runtime.sandbox import Sandbox


def open_sandbox(workspace: str | Path, config: "RuntimeConfig | None" = None, **kwargs) -> "Sandbox":
    """A started sandbox of the configured backend (``sandbox.backend``: docker, or local when opted in)."""
    from loopcoder.runtime.config import load_runtime_config

    cfg = config or load_runtime_config()
    if cfg.sandbox.backend == "local":
        from loopcoder.runtime.local_sandbox import LocalSandbox

        return LocalSandbox(workspace, config=cfg, **kwargs)
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    return DockerSandbox(workspace, config=cfg.sandbox, **kwargs)
