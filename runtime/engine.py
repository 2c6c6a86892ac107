"""Connecting to the Docker Engine, with errors that say how to fix the problem."""
from __future__ import annotations

import shutil

from loopcoder.runtime.errors import DockerUnavailableError

ENGINE_FIX = (
    "install and start it: `apt-get install -y docker.io && dockerd >/var/log/dockerd.log 2>&1 &` "
    "(or run .ci/docker-up.sh as root), or set DOCKER_HOST"
)


def connect_docker(timeout: float = 60.0):
    """A ``docker.DockerClient`` whose engine answered a ping; DockerUnavailableError otherwise."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - docker is a pinned dependency
        raise DockerUnavailableError("the docker Python SDK is missing; run `make install`") from None
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        where = "no docker CLI/engine installed; " if not shutil.which("dockerd") else ""
        raise DockerUnavailableError(
            f"Docker engine not reachable ({_short(exc)}); {where}{ENGINE_FIX}"
        ) from None
    return client


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) < 160 else text[:157] + "..."
