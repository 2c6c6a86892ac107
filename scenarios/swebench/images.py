"""Environment images of instances: `build` (offline base + spec, content-hashed) or `official` (pulled).

`build`: ``runtime.images.build_env_image`` on the instance's EnvImageSpec; instances of one repository
and version share a spec, hence a tag, hence one build. `official`: the published per-instance image
(``swebench/sweb.eval.x86_64.<id>:latest``, ``__`` -> ``_1776_``, or the instance's own ``image``),
pulled when not local; its repository lives at /testbed inside the image, where a sandbox mounts its
workspace, so a thin derived image (also content-hashed) keeps a copy at ``OFFICIAL_TESTBED`` that the
eval copies into the fresh workspace. Failures raise ImageUnavailableError / ImageBuildError (one line).
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Literal

from loopcoder.runtime.config import ImagesConfig
from loopcoder.runtime.errors import ImageBuildError
from loopcoder.runtime.images import EnvImageSpec, base_image_exists, build_env_image
from loopcoder.scenarios.swebench.environment import InstanceEnv
from loopcoder.scenarios.swebench.errors import ImageUnavailableError

OFFICIAL_TESTBED = "/opt/loopcoder/official-testbed"
Progress = Callable[[str], None]


@dataclass
class ImageResult:
    tag: str
    mode: Literal["build", "official"]
    reused: bool
    seconds: float


class ImageCache:
    """Images of one batch: each tag is built or pulled once; a failure is remembered, not retried.

    Thread-safe: workers asking for the same image wait for one build; other images build meanwhile.
    """

    def __init__(self, client, images_cfg: ImagesConfig, mode: Literal["build", "official"],
                 pull_timeout_s: float = 900.0, registry_probe: str | None = None) -> None:
        self.client = client
        self.images_cfg = images_cfg
        self.mode = mode
        self.pull_timeout_s = pull_timeout_s
        self.registry_probe = registry_probe or images_cfg.registry_probe
        self._done: dict[str, ImageResult | Exception] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, env: InstanceEnv, progress: Progress | None = None) -> ImageResult:
        """The image for ``env`` (ImageBuildError / ImageUnavailableError when it cannot be had)."""
        key = env.official_image if self.mode == "official" else env.image_spec.model_dump_json()
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._done:
                try:
                    self._done[key] = self._make(env, progress)
                except (ImageBuildError, ImageUnavailableError) as exc:
                    self._done[key] = exc
        found = self._done[key]
        if isinstance(found, Exception):
            raise found
        return found

    def _make(self, env: InstanceEnv, progress: Progress | None) -> ImageResult:
        if self.mode == "build":
            img = build_env_image(self.client, env.image_spec, self.images_cfg, progress=progress)
            return ImageResult(tag=img.tag, mode="build", reused=img.reused, seconds=img.seconds)
        started = time.monotonic()
        pulled = pull_official_image(self.client, env.official_image, self.registry_probe, self.pull_timeout_s,
                                     progress)
        spec = EnvImageSpec(base_image=env.official_image,
                            setup=[f"mkdir -p {OFFICIAL_TESTBED} && cp -a /testbed/. {OFFICIAL_TESTBED}/ "
                                   f"&& chmod -R a+rX {OFFICIAL_TESTBED}"])
        img = build_env_image(self.client, spec, self.images_cfg, progress=progress)
        return ImageResult(tag=img.tag, mode="official", reused=img.reused and not pulled,
                           seconds=time.monotonic() - started)


def pull_official_image(client, name: str, registry_probe: str, timeout_s: float,
                        progress: Progress | None = None) -> bool:
    """Make ``name`` local: True when pulled, False when it already was; ImageUnavailableError otherwise."""
    if base_image_exists(client, name):
        return False
    host, _, port = registry_probe.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ImageUnavailableError(
            f"official image {name} is not local and the registry ({registry_probe}) is not reachable "
            f"({exc.strerror or exc}); use --images build, or pull it where a registry is reachable") from None
    from docker.errors import APIError

    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    if progress:
        progress(f"pulling {name}")
    deadline = time.monotonic() + timeout_s
    try:
        for event in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise ImageUnavailableError(f"pulling {name} failed: {event['error'].strip()}")
            if time.monotonic() > deadline:
                raise ImageUnavailableError(f"pulling {name} took over {timeout_s:.0f} s; giving up")
    except APIError as exc:
        raise ImageUnavailableError(f"pulling {name} failed: {exc.explanation or exc}") from None
    return True
