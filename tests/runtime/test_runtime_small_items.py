"""Small runtime contracts: open_sandbox's keywords on both backends, disk-bound settings, the session tmpfs."""
from __future__ import annotations

import inspect

import pytest

from loopcoder.configs import ConfigError
from loopcoder.runtime import open_sandbox
from loopcoder.runtime.config import RuntimeConfig, SandboxConfig, load_runtime_config, size_bytes
from loopcoder.runtime.docker_sandbox import SESSION_DIR, DockerSandbox
from loopcoder.runtime.session import SUPERVISOR


def local_config() -> RuntimeConfig:
    return RuntimeConfig.model_validate({"sandbox": {"backend": "local"}, "local": {"allow": True}})


def test_open_sandbox_takes_the_docker_keywords_on_the_local_backend(tmp_path):
    with pytest.warns(UserWarning) as caught:
        sb = open_sandbox(tmp_path, local_config(), image="loopcoder/env:0123", run_id="r1",
                          labels={"k": "v"}, client=None)
    with sb:
        assert sb.exec("echo ok").output == "ok\n"
    assert any("image 'loopcoder/env:0123' is not used" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_open_sandbox_without_image_on_the_local_backend_does_not_warn_about_one(tmp_path):
    with pytest.warns(UserWarning) as caught:  # LocalSandbox's own "unconfined" warning, and only that
        open_sandbox(tmp_path, local_config()).close()
    assert not any("is not used" in str(w.message) for w in caught)


def test_open_sandbox_keywords_cover_every_docker_sandbox_keyword():
    # a keyword DockerSandbox gains must reach it through open_sandbox too (same surface for both backends)
    docker = {n for n, p in inspect.signature(DockerSandbox).parameters.items() if p.kind is p.KEYWORD_ONLY}
    opened = {n for n, p in inspect.signature(open_sandbox).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert docker - {"config"} <= opened


def test_sizes_and_tmp_share_of_memory():
    assert size_bytes("512m") == 512 << 20 and size_bytes("2G") == 2 << 30 and size_bytes("4096") == 4096
    cfg = SandboxConfig(memory="2g")
    assert (cfg.max_file_size, cfg.tmp_size, cfg.disk_size) == ("1g", "25%", "10g")
    assert cfg.tmp_bytes() == 512 << 20
    assert SandboxConfig(memory="256m", tmp_size="32M").tmp_bytes() == 32 << 20
    assert SandboxConfig(tmp_size=None).tmp_bytes() is None


@pytest.mark.parametrize("override, problem", [
    ("sandbox.tmp_size=2g", "smaller than memory"),
    ("sandbox.tmp_size=100%", "1% to 99%"),
    ("sandbox.tmp_size=0%", "1% to 99%"),
    ("sandbox.max_file_size=0", "larger than 0"),
    ("sandbox.disk_size=ten", "not a size"),
])
def test_bad_disk_bounds_are_one_line_config_errors(override, problem):
    with pytest.raises(ConfigError, match=problem):
        load_runtime_config(overrides=[override])


def test_the_session_tmpfs_is_mounted_where_the_supervisor_keeps_its_state():
    # docker_sandbox mounts a tmpfs of its own at SESSION_DIR so a full /tmp cannot break the session;
    # if the supervisor's RUN moves, this mount must move with it.
    assert f"\nRUN={SESSION_DIR}\n" in SUPERVISOR
