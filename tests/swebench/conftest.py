"""Fixtures for SWE-bench tests: Docker engine and base image (fail in CI, skip locally), an eval context."""
from __future__ import annotations

import os

import pytest

from loopcoder.runtime.config import load_runtime_config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} -- CI=true, so Docker tests fail instead of skipping (see .ci/docker-up.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.errors import DockerUnavailableError

    try:
        return connect_docker(timeout=60)
    except DockerUnavailableError as exc:
        docker_unavailable(str(exc))


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    from loopcoder.runtime.images import base_image_exists

    tag = load_runtime_config().images.base_image
    if not base_image_exists(docker_client, tag):
        docker_unavailable(f"sandbox base image {tag} missing; build it with `loopcoder sandbox build-base`")
    return tag


@pytest.fixture(scope="session")
def mini():
    from loopcoder.scenarios.swebench.dataset import load_dataset

    return {i["instance_id"]: i for i in load_dataset("mini")}


@pytest.fixture
def make_context(docker_client, base_image, tmp_path):
    """An EvalContext on the bundled repositories, writing under tmp_path (config overrides allowed)."""
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.evaluation import EvalContext

    def make(overrides=(), run_id="t"):
        return EvalContext(load_swebench_config(None, list(overrides)), load_runtime_config(), docker_client,
                           tmp_path / "run", run_id)

    return make
