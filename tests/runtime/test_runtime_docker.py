"""DockerSandbox with real containers: isolation, limits, timeouts, output caps, files, cleanup.

No test sends traffic anywhere: network isolation is checked by listing interfaces inside the container.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import uuid

import pytest

from loopcoder.runtime import open_sandbox
from loopcoder.runtime.config import RuntimeConfig
from loopcoder.runtime.docker_sandbox import LABEL, DockerSandbox
from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.gc import find_leftovers, remove_leftovers
from loopcoder.runtime.sandbox import Sandbox

pytestmark = pytest.mark.docker


def containers_with(client, key: str, value: str) -> list:
    return client.api.containers(all=True, filters={"label": f"{key}={value}"})


def wait_until(predicate, timeout: float = 30.0, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- isolation and limits --------------------------------------------------------------------------


def test_container_has_no_network_interface_but_loopback(sandbox):
    assert sandbox.exec("ls /sys/class/net").output.split() == ["lo"]
    # No route at all: the routing table has its header line only.
    assert sandbox.exec("tail -n +2 /proc/net/route | wc -l").output.strip() == "0"


def test_runs_non_root_without_capabilities_or_new_privileges(sandbox):
    res = sandbox.exec("id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status")
    uid, *caps = res.output.splitlines()
    assert uid == "1000"
    assert caps == ["CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"]


def test_limits_and_labels_are_set_on_the_container(sandbox, docker_client, small_config):
    info = docker_client.api.inspect_container(sandbox.container_id)
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["NanoCpus"] == int(small_config.cpus * 1e9)
    assert host["Memory"] == 256 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["PidsLimit"] == small_config.pids_limit
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert not host["Init"] and host["AutoRemove"] is True  # PID 1 is the sealed supervisor, not tini
    labels = info["Config"]["Labels"]
    assert labels[LABEL] == "1" and labels["loopcoder.run"] == sandbox.run_id
    assert labels["loopcoder.pid"] == str(os.getpid()) and labels["loopcoder.purpose"] == "test"
    mounts = sorted((m["Type"], m["Destination"], m["RW"]) for m in info["Mounts"] if m["Type"] == "bind")
    assert mounts == [("bind", "/.loopcoder/bash", False), ("bind", "/testbed", True)]
    assert [m["Source"] for m in info["Mounts"] if m["Destination"] == "/testbed"] == [str(sandbox.workspace)]


def test_open_sandbox_docker_backend_satisfies_the_protocol(docker_client, base_image, workspace):
    with open_sandbox(workspace, RuntimeConfig(), client=docker_client) as sb:
        assert isinstance(sb, Sandbox) and isinstance(sb, DockerSandbox)
        assert sb.exec("echo ok").output == "ok\n"


def test_base_image_has_the_promised_tools(sandbox):
    res = sandbox.exec("for t in python3 git bash patch ps pkill; do command -v $t >/dev/null || echo missing $t; done;"
                       " getent passwd 1000 | cut -d: -f1,6")
    assert res.output == "sandbox:/home/sandbox\n"


# -- the shell session -----------------------------------------------------------------------------


def test_session_keeps_cwd_exports_and_functions(sandbox):
    assert sandbox.exec("mkdir -p /tmp/w && cd /tmp/w && export FOO='a b' && greet() { echo hi $1; }").ok
    assert sandbox.exec("pwd; echo $FOO; greet there").output == "/tmp/w\na b\nhi there\n"
    sandbox.exec("unset FOO; cd /testbed")
    assert sandbox.exec("pwd; echo [${FOO-unset}]").output == "/testbed\n[unset]\n"


def test_workdir_and_env_apply_to_one_command(sandbox):
    assert sandbox.exec("pwd; echo $ONE", workdir="/usr", env={"ONE": "1"}).output == "/usr\n1\n"
    assert sandbox.exec("pwd; echo [$ONE]").output == "/testbed\n[]\n"


def test_exit_code_and_interleaved_output(sandbox):
    res = sandbox.exec("echo out; echo err >&2; echo out2; exit 3")
    assert (res.exit_code, res.output, res.timed_out, res.oom_killed) == (3, "out\nerr\nout2\n", False, False)


def test_large_commands_and_binary_output(sandbox):
    big = "x" * 300_000
    res = sandbox.exec(f"s='{big}'; echo ${{#s}}; printf '\\xff\\xfe'")
    assert res.output.startswith("300000\n") and res.output.endswith("\ufffd\ufffd")


# -- timeouts and resource limits ------------------------------------------------------------------


def test_endless_loop_times_out_and_the_next_command_works(sandbox):
    res = sandbox.exec("(sleep 981 &); sleep 982 & while :; do :; done", timeout=1.5)
    assert res.timed_out and res.exit_code == 124
    assert sandbox.exec("echo next").output == "next\n"
    left = sandbox.exec("ps -eo args").output
    assert "sleep 981" not in left and "sleep 982" not in left, left


def test_fork_bomb_stops_at_the_pids_limit(sandbox, docker_client, small_config):
    peak = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            stats = docker_client.api.stats(sandbox.container_id, stream=False)
            peak.append(stats.get("pids_stats", {}).get("current", 0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        res = sandbox.exec(":(){ :|:& };: ; while :; do :; done", timeout=8)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert res.timed_out
    assert "Resource temporarily unavailable" in res.output  # fork() hit the limit
    assert peak and max(peak) <= small_config.pids_limit, peak
    assert sandbox.exec("echo alive; ps -e --no-headers | wc -l").output.split()[0] == "alive"
    assert int(sandbox.exec("ps -e --no-headers | wc -l").output) < 10


def test_memory_hog_is_killed_and_reported(sandbox):
    res = sandbox.exec("python3 -c \"x = b'a' * (600 * 1024 * 1024); print('SUR' + 'VIVED')\"", timeout=60)
    assert res.oom_killed and res.exit_code == 137 and not res.timed_out
    assert "SURVIVED" not in res.output
    assert sandbox.exec("echo still here").output == "still here\n"


def test_50mb_of_output_is_cut_without_growing_the_host_process(sandbox, small_config):
    tracemalloc.start()
    try:
        res = sandbox.exec("echo FIRST; head -c 50000000 /dev/zero | tr '\\0' x; echo; echo LAST", timeout=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.exit_code == 0
    assert res.output.startswith("FIRST\nxxx") and res.output.endswith("xxx\nLAST\n")
    assert res.truncated_bytes == 6 + 50_000_001 + 5 - small_config.output_limit_bytes
    assert "bytes of output cut" in res.output
    assert len(res.output) < small_config.output_limit_bytes + 200
    assert peak < 4 * 1024 * 1024, f"host allocations peaked at {peak} bytes for 50 MB of output"


# -- files -----------------------------------------------------------------------------------------


def test_files_copy_in_and_out(sandbox):
    sandbox.write_file("/testbed/new/dir/a.bin", b"\x00\x01\x02", mode=0o640)
    assert sandbox.read_file("new/dir/a.bin") == b"\x00\x01\x02"
    assert (sandbox.workspace / "new/dir/a.bin").read_bytes() == b"\x00\x01\x02"
    assert sandbox.exec("stat -c '%u %a' new/dir/a.bin").output == "1000 640\n"
    sandbox.write_file("/tmp/inside.txt", "only in the container")
    assert sandbox.read_file("/tmp/inside.txt") == b"only in the container"
    with pytest.raises(SandboxError, match="no such file"):
        sandbox.read_file("/testbed/missing.txt")


def test_files_written_outside_testbed_never_reach_the_host(sandbox, tmp_path):
    tag = uuid.uuid4().hex
    res = sandbox.exec(f"echo x > /tmp/escape-{tag}; echo x > $HOME/escape-{tag}; echo x > /escape-{tag};"
                       f" echo x > /testbed/inside-{tag}; ls /tmp/escape-{tag} $HOME/escape-{tag}")
    assert "Permission denied" in res.output  # / is not writable for the sandbox user
    assert (sandbox.workspace / f"inside-{tag}").exists()  # the workspace is shared, as intended
    host_hits = subprocess.run(["find", "/tmp", "/root", "/home", "/var/tmp", "/work", "-xdev",
                                "-name", f"escape-{tag}"], capture_output=True, text=True).stdout
    assert host_hits == ""


def test_symlink_in_workspace_pointing_outside_is_never_followed_on_the_host(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    os.symlink(secret, sandbox.workspace / "link")
    os.symlink(tmp_path, sandbox.workspace / "dirlink")
    # Inside the container the link resolves in the container's file system, where the target does not exist.
    assert "TOPSECRET" not in sandbox.exec("cat /testbed/link /testbed/dirlink/secret.txt").output
    with pytest.raises(SandboxError):
        sandbox.read_file("link")
    with pytest.raises(SandboxError):
        sandbox.read_file("dirlink/secret.txt")
    sandbox.write_file("link", "replaced")  # replaces the link itself, in the workspace
    assert secret.read_text() == "TOPSECRET"
    assert (sandbox.workspace / "link").read_text() == "replaced" and not (sandbox.workspace / "link").is_symlink()


# -- cleanup ---------------------------------------------------------------------------------------


def test_container_is_removed_on_close_and_on_errors(docker_client, base_image, workspace, small_config):
    run = uuid.uuid4().hex[:12]
    with pytest.raises(RuntimeError):
        with DockerSandbox(workspace, config=small_config, client=docker_client, run_id=run):
            assert containers_with(docker_client, "loopcoder.run", run)
            raise RuntimeError("agent crashed")
    assert wait_until(lambda: not containers_with(docker_client, "loopcoder.run", run), 10)


def test_ctrl_c_stops_the_command_and_cleans_up(docker_client, base_image, workspace, small_config):
    run = uuid.uuid4().hex[:12]
    sb = DockerSandbox(workspace, config=small_config, client=docker_client, run_id=run)
    # Python raises KeyboardInterrupt only where SIGINT was not ignored when it started (a job started with
    # `&` from a non-interactive shell inherits it ignored): install the default handler for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            sb.exec("sleep 983", timeout=30)
        timer.join()
        assert "sleep 983" not in sb.exec("ps -eo args").output  # the interrupted command is gone
        with pytest.raises(KeyboardInterrupt):
            with sb:
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)
        sb.close()
    assert wait_until(lambda: not containers_with(docker_client, "loopcoder.run", run), 10)


CRASHER = textwrap.dedent("""
    import os, sys
    from loopcoder.runtime.config import SandboxConfig
    from loopcoder.runtime.docker_sandbox import DockerSandbox
    sb = DockerSandbox(sys.argv[1], config=SandboxConfig(memory="256m"), run_id=sys.argv[2])
    sb.exec("sleep 1000 &", timeout=10)
    print(sb.container_id, flush=True)
    os.kill(os.getpid(), 9)  # no atexit, no __exit__, no close(): a hard crash
""")


def test_no_container_survives_a_crash_of_the_host_process(docker_client, base_image, workspace):
    run = uuid.uuid4().hex[:12]
    proc = subprocess.run([sys.executable, "-c", CRASHER, str(workspace), run], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert len(proc.stdout.strip()) == 64  # the container existed
    assert wait_until(lambda: not containers_with(docker_client, "loopcoder.run", run), 30)


def test_gc_removes_leftovers_of_dead_runs_only(docker_client, base_image, sandbox):
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = uuid.uuid4().hex[:12]
    labels = {LABEL: "1", "loopcoder.run": run, "loopcoder.host": os.uname().nodename,
              "loopcoder.pid": str(dead.pid), "loopcoder.pid_start": "1"}
    cid = docker_client.api.create_container(base_image, command=["sleep", "1000"], labels=labels,
                                             host_config=docker_client.api.create_host_config(network_mode="none"))["Id"]
    docker_client.api.start(cid)
    try:
        found = {c.container_id: c for c in find_leftovers(docker_client)}
        assert cid in found and "is gone" in found[cid].reason
        assert sandbox.container_id not in found  # our own live sandbox is not a leftover
        removed = remove_leftovers(docker_client)
        assert cid in [c.container_id for c in removed]
        assert not containers_with(docker_client, "loopcoder.run", run)
        assert docker_client.api.inspect_container(sandbox.container_id)["State"]["Running"]
    finally:
        try:
            docker_client.api.remove_container(cid, force=True)
        except Exception:
            pass


def test_missing_image_is_a_clear_error(docker_client, workspace, small_config):
    with pytest.raises(SandboxError, match="loopcoder sandbox build-base"):
        DockerSandbox(workspace, config=small_config, image="loopcoder/does-not-exist:1", client=docker_client)
