"""Fixtures for SWE-bench tests: Docker engine and base image (fail in CI, skip locally), an eval context."""
from __future__ import annotations


import pytest

from loopcoder.runtime.config import load_runtime_config

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
