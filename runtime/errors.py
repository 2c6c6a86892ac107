"""Errors the runtime reports to users (no heavy imports, so the CLI can catch them cheaply)."""


class RuntimeFailure(Exception):
    """Base of every runtime error; the message is one line that says what to do."""


class SandboxError(RuntimeFailure):
    """A sandbox could not be started, used or cleaned up."""


class DockerUnavailableError(SandboxError):
    """The Docker engine is not installed, not running or not reachable from this process."""


class ImageBuildError(SandboxError):
    """A base or environment image could not be built."""


class CopyError(SandboxError):
    """A copy into or out of a sandbox failed or was refused (unsafe archive, limit reached, bad path)."""


class WorkspaceError(RuntimeFailure):
    """A git workspace operation (clone, checkout, diff, apply) failed."""


class PatchApplyError(WorkspaceError):
    """No method (git apply, git apply --3way, patch --fuzz) could apply a patch."""
