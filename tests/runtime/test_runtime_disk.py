"""The disk a sandbox can fill: a per-file cap, a capped /tmp, and the writable-layer quota where the
engine's storage supports one. Each bound is written past; the failure is clear and the sandbox lives on.
"""
from __future__ import annotations

import os

import pytest

from loopcoder.runtime.config import SandboxConfig
from loopcoder.runtime.docker_sandbox import DockerSandbox

pytestmark = pytest.mark.docker

MiB = 1 << 20


@pytest.fixture
def disk_sandbox(docker_client, base_image, workspace):
    config = SandboxConfig(cpus=1.0, memory="256m", pids_limit=128, output_limit_bytes=20_000,
                           default_timeout_s=60, max_file_size="8m", tmp_size="24m", disk_size="64m")
    with DockerSandbox(workspace, config=config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        yield sb


def test_no_file_grows_past_max_file_size_in_the_workspace_or_elsewhere(disk_sandbox):
    sb = disk_sandbox
    assert sb.disk_bounds.max_file_bytes == 8 * MiB
    for target in ("/testbed/big", "/tmp/big", "/home/sandbox/big"):
        res = sb.exec(f"head -c 9M /dev/zero > {target}; echo rc=$?")
        assert "File size limit exceeded" in res.output and "rc=153" in res.output, (target, res.output)  # SIGXFSZ
        assert sb.exec(f"stat -c %s {target}").output.strip() == str(8 * MiB)
    assert os.path.getsize(sb.workspace / "big") == 8 * MiB
    # a process that ignores SIGXFSZ gets EFBIG from write()
    res = sb.exec("python3 -c 'import signal, errno\n"
                  "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                  "try:\n    open(\"/testbed/big2\", \"wb\").write(bytes(9 << 20))\n"
                  "except OSError as e:\n    print(errno.errorcode[e.errno])'")
    assert res.output.strip() == "EFBIG", res.output
    res = sb.exec("ulimit -f unlimited; echo rc=$?; ulimit -f")  # the sandbox user cannot lift it
    assert "rc=1" in res.output and res.output.strip().endswith(str(8 * 1024)), res.output
    assert sb.exec("rm /testbed/big /testbed/big2 /tmp/big /home/sandbox/big && echo alive").output == "alive\n"


def test_tmp_is_a_capped_tmpfs_and_a_full_tmp_leaves_the_session_working(disk_sandbox):
    sb = disk_sandbox
    assert sb.disk_bounds.tmp_bytes == 24 * MiB
    assert "/tmp tmpfs 24 MiB" in sb.disk_bounds.describe()
    res = sb.exec("export KEPT=yes; cd /tmp; for i in 1 2 3 4; do head -c 7M /dev/zero > /tmp/fill$i || break; done; "
                  "df -k /tmp | tail -1")
    assert "No space left on device" in res.output, res.output
    assert res.output.split()[-3] == "0"  # available KiB
    # state saved after a command that filled /tmp: cwd and exports carry over
    res = sb.exec("echo $KEPT; pwd")
    assert res.exit_code == 0 and res.output == "yes\n/tmp\n", res.output
    res = sb.exec("rm -f /tmp/fill*; cp /bin/true /tmp/t && /tmp/t && echo exec-ok")  # /tmp is not noexec
    assert res.output == "exec-ok\n", res.output


def test_writable_layer_gets_a_quota_where_the_storage_supports_one(disk_sandbox, docker_client):
    sb = disk_sandbox
    bounds = sb.disk_bounds
    if bounds.layer_bytes is None:
        # overlay2 on ext4 (this machine) has no quota: the sandbox still starts, and says why
        driver = docker_client.info()["Driver"]
        assert driver in bounds.layer_note and "storage-opt" in bounds.layer_note, bounds.layer_note
        assert "writable layer unbounded" in bounds.describe()
        host = docker_client.api.inspect_container(sb.container_id)["HostConfig"]
        assert not host.get("StorageOpt")
    else:
        assert bounds.layer_bytes == 64 * MiB
        res = sb.exec("for i in $(seq 1 12); do head -c 7M /dev/zero > /home/sandbox/f$i || break; done")
        assert "No space left on device" in res.output, res.output
        assert sb.exec("rm -f /home/sandbox/f*; echo alive").output == "alive\n"
    assert sb.exec("echo alive").output == "alive\n"


def test_the_container_carries_the_disk_bounds(disk_sandbox, docker_client):
    info = docker_client.api.inspect_container(disk_sandbox.container_id)
    host = info["HostConfig"]
    assert host["Ulimits"] == [{"Name": "fsize", "Soft": 8 * MiB, "Hard": 8 * MiB}]
    assert set(host["Tmpfs"]) == {"/tmp/.loopcoder"}
    [tmp] = host["Mounts"]
    assert tmp["Target"] == "/tmp" and tmp["Type"] == "volume"
    assert f"size={24 * MiB}" in tmp["VolumeOptions"]["DriverConfig"]["Options"]["o"]
    res = disk_sandbox.exec("grep ' /tmp ' /proc/mounts; stat -c %a /tmp")
    assert res.output.startswith("tmpfs /tmp tmpfs rw,nosuid,nodev,") and res.output.endswith("\n1777\n"), res.output


def test_files_in_tmp_move_through_the_archive_api(disk_sandbox, docker_client):
    # a plain tmpfs mount is invisible to docker's archive API: write_file would land under it, unseen
    sb = disk_sandbox
    sb.write_file("/tmp/in.txt", "from host\n")
    assert sb.exec("cat /tmp/in.txt").output == "from host\n"
    sb.exec("echo from sandbox > /tmp/out.txt")
    assert sb.read_file("/tmp/out.txt") == b"from sandbox\n"


def test_the_tmp_volume_goes_with_the_container(docker_client, base_image, workspace, small_config):
    with DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        [volume] = [m["Name"] for m in docker_client.api.inspect_container(sb.container_id)["Mounts"]
                    if m["Type"] == "volume"]
        assert any(v["Name"] == volume for v in docker_client.api.volumes()["Volumes"] or [])
    assert not any(v["Name"] == volume for v in docker_client.api.volumes()["Volumes"] or [])


def test_bounds_can_be_switched_off(docker_client, base_image, workspace):
    config = SandboxConfig(memory="256m", max_file_size=None, tmp_size=None, disk_size=None)
    with DockerSandbox(workspace, config=config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        assert (sb.disk_bounds.max_file_bytes, sb.disk_bounds.tmp_bytes, sb.disk_bounds.layer_bytes) == (None,) * 3
        assert sb.exec("ulimit -f").output.strip() == "unlimited"
        host = docker_client.api.inspect_container(sb.container_id)["HostConfig"]
        assert not host.get("Mounts") and set(host["Tmpfs"]) == {"/tmp/.loopcoder"}


@pytest.mark.skipif(os.geteuid() != 0, reason="handing the workspace over needs root")
def test_a_restarted_sandbox_can_write_files_the_host_made_as_root_in_between(docker_client, base_image, workspace,
                                                                              small_config):
    (workspace / "pkg").mkdir()
    os.lchown(workspace, 1000, 1000)
    os.lchown(workspace / "pkg", 1000, 1000)
    (workspace / "pkg" / "from_host.txt").write_text("host\n")  # e.g. a patch applied by host git as root
    with DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        res = sb.exec("echo sandbox >> pkg/from_host.txt && cat pkg/from_host.txt")
        assert res.exit_code == 0 and res.output == "host\nsandbox\n", res.output
