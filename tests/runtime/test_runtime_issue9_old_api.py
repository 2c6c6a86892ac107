"""Issue 9 regressions written against the API that existed before the fixes.

The main regression tests for two of the smaller defects (item 7) cannot run on the pre-fix code for a reason
unrelated to the bug: ``test_runtime_small_items.py`` imports ``size_bytes`` (new), and ``test_runtime_disk.py``
configures ``max_file_size``/``tmp_size``/``disk_size`` (new settings). These checks use only names both
versions have, so they fail on the pre-fix code because of the defect itself and pass on the fixed code
(docs/testing.md, "Issue 9 regression tests, before and after").
"""
from __future__ import annotations

import warnings

import pytest

from loopcoder.runtime import open_sandbox
from loopcoder.runtime.config import RuntimeConfig
from loopcoder.runtime.docker_sandbox import DockerSandbox


def test_open_sandbox_with_an_image_works_on_the_local_backend(tmp_path):
    # defect 7a: open_sandbox(..., image=...) raised TypeError for the local backend
    cfg = RuntimeConfig.model_validate({"sandbox": {"backend": "local"}, "local": {"allow": True}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb = open_sandbox(tmp_path, cfg, image="loopcoder/env:0123")
    with sb:
        assert sb.exec("echo ok").output == "ok\n"
    assert any("is not used" in str(w.message) for w in caught), [str(w.message) for w in caught]


@pytest.mark.docker
def test_tmp_is_bounded_with_the_default_disk_settings(docker_client, base_image, workspace, small_config):
    # defect 7d (/tmp part): with memory=256m the default /tmp cap is 25% of it (64 MiB); 80 MiB cannot fit.
    # Before the fix /tmp was a folder of the writable layer: nothing stopped it.
    with DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        res = sb.exec("head -c 80M /dev/zero > /tmp/fill; echo rc=$?; rm -f /tmp/fill")
        assert "No space left on device" in res.output and "rc=1" in res.output, res.output


@pytest.mark.docker
@pytest.mark.slow
def test_one_file_cannot_grow_past_the_default_max_file_size(docker_client, base_image, workspace, small_config):
    # defect 7d (per-file part): the default cap is 1g; writing 1025 MiB into the workspace is stopped by
    # SIGXFSZ (exit 153). Before the fix the file was written whole. (Writes up to 1 GiB of the host's disk.)
    with DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        res = sb.exec("head -c 1025M /dev/zero > /testbed/big; echo rc=$?; stat -c %s /testbed/big; rm -f /testbed/big",
                      timeout=300)
        assert "rc=153" in res.output and f"\n{1 << 30}\n" in res.output, res.output
