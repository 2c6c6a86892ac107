"""Runtime: sandboxes (Docker, local), offline image building, git workspaces.

Importing this package is cheap; the docker SDK loads when first used.
Contract for callers: ``loopcoder.runtime.sandbox`` (``Sandbox``, ``ExecResult``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopcoder.runtime.config import RuntimeConfig
    from loopcoder.runtime.sandbox import Sandbox


def open_sandbox(
    workspace: str | Path,
    config: "RuntimeConfig | None" = None,
    *,
    image: str | None = None,
    run_id: str | None = None,
    labels: dict[str, str] | None = None,
    client=None,
    allow: bool | None = None,
    task=None,
) -> "Sandbox":
    """A started sandbox of the configured backend (``sandbox.backend``: docker, or local when opted in).

    Both backends take the same keywords, so a caller need not know which one runs. ``image``, ``run_id``,
    ``labels`` and ``client`` (a docker client) shape the Docker container; the local backend runs commands
    on this machine as it is, so it ignores them, and warns when an ``image`` is given (the image's
    packages and files are not there). ``allow`` is the local backend's opt-in; Docker ignores it.
    ``task`` (a ``docker_sandbox.TaskContainer``) starts a task container instead: root with no capabilities,
    the task's working directory, no workspace mount (pass ``workspace=None``); Docker only.
    """
    from loopcoder.runtime.config import load_runtime_config

    cfg = config or load_runtime_config()
    if cfg.sandbox.backend == "local":
        from loopcoder.runtime.errors import SandboxError
        from loopcoder.runtime.local_sandbox import LocalSandbox

        if task is not None:
            raise SandboxError("task containers need sandbox.backend: docker (a task runs as root in its own image)")

        if image is not None:
            warnings.warn(f"sandbox.backend is local: image {image!r} is not used; commands run on this machine "
                          "with its own tools and packages", stacklevel=2)
        return LocalSandbox(workspace, config=cfg, allow=allow)
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    return DockerSandbox(workspace, config=cfg.sandbox, image=image, run_id=run_id, labels=labels, client=client,
                         task=task)
