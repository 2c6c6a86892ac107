"""Image building with a real engine, offline: Dockerfile base builds, content-hashed environment images."""
from __future__ import annotations

import uuid

import pytest

from loopcoder.runtime.config import ImagesConfig, SandboxConfig, load_runtime_config
from loopcoder.runtime.docker_sandbox import DockerSandbox
from loopcoder.runtime.images import (EnvImageSpec, base_image_exists, build_base_image, build_env_image,
                                      choose_method)

pytestmark = pytest.mark.docker


@pytest.fixture
def scratch_tags(docker_client):
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            docker_client.api.remove_image(tag, force=True)
        except Exception:
            pass


def offline_images_config(**kw) -> ImagesConfig:
    return load_runtime_config().images.model_copy(update={"build_network": "none", **kw})


def test_env_image_is_tagged_by_content_and_reused(docker_client, base_image, scratch_tags, workspace):
    marker = uuid.uuid4().hex
    cfg = offline_images_config(env_repository="loopcoder/env-test")
    spec = EnvImageSpec(setup=[f"echo {marker} > /opt/marker"], env={"PROJECT_MODE": "test"})
    first = build_env_image(docker_client, spec, cfg)
    scratch_tags.append(first.tag)
    assert not first.reused and first.tag == f"loopcoder/env-test:{first.content_hash[:20]}"
    again = build_env_image(docker_client, spec, cfg)
    assert again.reused and again.image_id == first.image_id
    other = build_env_image(docker_client, spec.model_copy(update={"env": {"PROJECT_MODE": "other"}}), cfg)
    scratch_tags.append(other.tag)
    assert other.tag != first.tag
    # Network was only a build-time matter: the sandbox from the image is offline like any other.
    with DockerSandbox(workspace, config=SandboxConfig(memory="256m"), image=first.tag, client=docker_client) as sb:
        res = sb.exec("cat /opt/marker; echo $PROJECT_MODE; ls /sys/class/net; id -u")
    assert res.output == f"{marker}\ntest\nlo\n1000\n"


def test_dockerfile_method_builds_from_a_local_from_image(docker_client, base_image, scratch_tags, workspace):
    tag = f"loopcoder/base-test:{uuid.uuid4().hex[:8]}"
    scratch_tags.append(tag)
    # FROM the existing base image, no packages: builds without any registry or mirror.
    cfg = offline_images_config(base_image=tag, from_image=base_image, packages=[])
    assert choose_method(docker_client, cfg, "auto") == "dockerfile"  # FROM image is local: no probe
    result = build_base_image(docker_client, cfg, method="dockerfile")
    assert result.method == "dockerfile" and base_image_exists(docker_client, tag)
    assert build_base_image(docker_client, cfg).method == "existing"
    with DockerSandbox(workspace, config=SandboxConfig(memory="256m"), image=tag, client=docker_client) as sb:
        assert sb.exec("id -un; pwd").output == "sandbox\n/testbed\n"


@pytest.mark.slow
def test_debootstrap_builds_a_base_image_offline_from_the_mirror(docker_client, scratch_tags, workspace):
    """The full registry-free build (about 90 s; talks to the Debian mirror only)."""
    tag = f"loopcoder/base-test:{uuid.uuid4().hex[:8]}"
    scratch_tags.append(tag)
    cfg = load_runtime_config().images.model_copy(update={"base_image": tag})
    result = build_base_image(docker_client, cfg, method="debootstrap")
    assert result.method == "debootstrap"
    with DockerSandbox(workspace, config=SandboxConfig(memory="256m"), image=tag, client=docker_client) as sb:
        res = sb.exec("python3 -c 'print(1)'; git --version | cut -d' ' -f1; patch --version | head -1 | cut -d' ' -f1-2;"
                      " ps --version | cut -d' ' -f1; id -un")
    assert res.output == "1\ngit\nGNU patch\nps\nsandbox\n"
