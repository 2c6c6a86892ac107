"""Task-container mode: root inside with no capabilities, no-new-privileges, the task's working directory and
environment, no host folder mounted, network only when asked; the supervisor stays sealed from root."""
from __future__ import annotations

import pytest

from loopcoder.runtime.config import RuntimeConfig
from loopcoder.runtime.docker_sandbox import DockerSandbox, TaskContainer
from loopcoder.runtime.errors import SandboxError

pytestmark = pytest.mark.docker


@pytest.fixture
def task_box(docker_client, base_image, small_config):
    boxes = []

    def start(**task):
        sb = DockerSandbox(None, config=small_config, image=base_image, client=docker_client,
                           labels={"loopcoder.purpose": "test"}, task=TaskContainer(**task))
        boxes.append(sb)
        return sb

    yield start
    for sb in boxes:
        sb.close()


def run(sb, command: str):
    res = sb.exec(command, timeout=30)
    return res.exit_code, res.output


def test_root_without_capabilities(task_box):
    sb = task_box(env=(("TEST_DIR", "/tests"),))
    assert run(sb, "id -u; pwd; echo $TEST_DIR") == (0, "0\n/app\n/tests\n")
    code, out = run(sb, "grep -E '^Cap(Prm|Eff|Bnd|Amb):' /proc/self/status; grep NoNewPrivs /proc/self/status")
    assert out.count("0000000000000000") == 4 and "NoNewPrivs:\t1" in out
    code, out = run(sb, "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x; echo rc=$?")
    assert "rc=0" not in out  # no CAP_SYS_ADMIN
    code, out = run(sb, "echo hi > f && chown 1000:1000 f; echo rc=$?; stat -c %u:%g f")
    assert "Operation not permitted" in out and out.endswith("0:0\n")  # CHOWN dropped
    code, out = run(sb, "touch /home/sandbox/x; echo rc=$?")  # another uid's folder: no DAC_OVERRIDE
    assert "Permission denied" in out
    code, out = run(sb, "ulimit -f unlimited; echo rc=$?")  # RLIMIT_FSIZE stays: no CAP_SYS_RESOURCE
    assert "rc=1" in out
    # a root shell still owns and edits its own files, anywhere root owns the folder
    assert run(sb, "mkdir -p /opt/t && echo a > /opt/t/a && chmod 600 /opt/t/a && rm -r /opt/t && echo ok")[1] == "ok\n"


def test_supervisor_stays_sealed_from_root(task_box):
    sb = task_box()
    for command in ("cat /proc/1/environ", "cat /proc/1/fd/0 </dev/null", "readlink -v /proc/1/fd/1",
                    "head -c 4 /.loopcoder/bash", "cat /proc/1/mem"):
        code, out = run(sb, command)
        assert code != 0 and "Permission denied" in out, (command, out)
    code, out = run(sb, "kill -9 -1")
    assert code == 137 and "killed the sandbox process" in out
    assert run(sb, "echo alive") == (0, "alive\n")


def test_no_network_and_no_host_mount(task_box):
    sb = task_box()
    code, out = run(sb, "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    assert out.split() == ["lo"]
    code, out = run(sb, "(exec 3<>/dev/tcp/10.255.255.1/80) 2>&1; echo rc=$?")
    assert "rc=1" in out and "unreachable" in out.lower()
    code, out = run(sb, "awk '{print $5}' /proc/self/mountinfo")
    assert "/testbed" not in out.split() and "/app" not in out.split()
    assert sb.workspace is None and "task workdir='/app'" in repr(sb)


def test_declared_network_and_copies(task_box, tmp_path):
    sb = task_box(workdir="/srv/site", network="bridge")
    code, out = run(sb, "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    assert "eth0" in out.split()
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("data\n")
    sb.copy_in(src, "/tests")
    assert run(sb, "stat -c '%u %n' /tests/sub/f.txt; pwd") == (0, "0 /tests/sub/f.txt\n/srv/site\n")
    run(sb, "mkdir -p out && echo result > out/r.txt")
    res = sb.copy_out("out", tmp_path / "back")  # relative: under the task's working directory
    assert res.files == 1 and (tmp_path / "back" / "r.txt").read_text() == "result\n"


def test_cap_add_is_limited_and_works(task_box):
    sb = task_box(cap_add=("CHOWN",))
    assert run(sb, "echo x > f && chown 1000:1000 f && stat -c %u f") == (0, "1000\n")
    with pytest.raises(SandboxError, match="cannot be added"):
        TaskContainer(cap_add=("DAC_OVERRIDE",))


def test_closed_task_container_is_removed(docker_client, task_box):
    sb = task_box()
    cid = sb.container_id
    labels = docker_client.api.inspect_container(cid)["Config"]["Labels"]
    assert labels["loopcoder.sandbox"] == "1" and labels["loopcoder.workspace"] == "task:/app"
    sb.close()
    assert not docker_client.api.containers(all=True, filters={"id": cid})


def test_task_mode_needs_docker_and_no_workspace(tmp_path):
    from loopcoder.runtime import open_sandbox

    cfg = RuntimeConfig()
    cfg.sandbox.backend = "local"
    with pytest.raises(SandboxError, match="task containers need sandbox.backend: docker"):
        open_sandbox(None, cfg, task=TaskContainer(), allow=True)
    with pytest.raises(SandboxError, match="mounts no workspace"):
        DockerSandbox(tmp_path, task=TaskContainer(), client=object())


# -- the session attacks, re-run against a root task container ---------------------------------------
# The tests below are those of test_runtime_session_attacks.py that do not need /testbed; imported here, they
# take this module's `sandbox` fixture: the same attacks, by root with no capabilities.
from test_runtime_session_attacks import (  # noqa: E402
    test_a_command_that_kills_its_supervising_process_gets_an_answer as test_root_kills_its_supervisor,
    test_background_processes_that_leave_the_session_and_drop_the_tag_die_with_their_command
    as test_root_background_processes_die_with_their_command,
    test_forged_end_line_does_not_end_the_command as test_root_forged_end_line,
    test_forged_end_line_then_a_timeout_still_kills_and_nothing_leaks as test_root_forged_end_line_then_timeout,
    test_pid_1_reaps_orphans as test_root_pid_1_reaps_orphans,
    test_signals_to_the_supervisor_leave_the_session_working as test_root_signals_to_the_supervisor,
    test_tiny_timeouts_time_out_promptly_and_leave_the_sandbox_usable as test_root_tiny_timeouts,
)


@pytest.fixture
def sandbox(docker_client, base_image, small_config):
    """A task container where the attack tests expect their sandbox (overrides conftest's)."""
    with DockerSandbox(None, config=small_config, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}, task=TaskContainer()) as sb:
        yield sb


def test_root_cannot_open_the_supervisors_proc_files(sandbox):
    # As in test_runtime_session_attacks, except that root may LIST /proc/1/fd: the kernel gives a
    # non-dumpable process's /proc entries to uid 0 (mode 0500), and root is uid 0 here. Opening or
    # resolving any entry still needs ptrace access, which a non-dumpable process denies without
    # CAP_SYS_PTRACE; so only the fd numbers show.
    probe = r"""
    for p in 1 $PPID; do
        ( echo FORGED > /proc/$p/fd/1 ) 2>/dev/null && echo "OPENED stdout $p"
        ( exec 9</proc/$p/fd/0 ) 2>/dev/null && echo "OPENED stdin $p"
        readlink /proc/$p/fd/0 /proc/$p/fd/1 /proc/$p/exe /proc/$p/cwd /proc/$p/root 2>/dev/null && echo "RESOLVED $p"
        cat /proc/$p/environ >/dev/null 2>&1 && echo "OPENED environ $p"
        ( exec 9</proc/$p/mem ) 2>/dev/null && echo "OPENED mem $p"
    done
    echo x > /proc/1/fd/1
    echo done; exit 5
    """
    res = sandbox.exec(probe, timeout=30)
    assert "OPENED" not in res.output and "RESOLVED" not in res.output, res.output
    assert "/proc/1/fd/1: Permission denied" in res.output
    assert res.exit_code == 5 and res.output.endswith("done\n")
    assert sandbox.exec("echo next").output == "next\n"


def test_root_cannot_read_the_end_secret(sandbox, monkeypatch):
    from loopcoder.runtime import docker_sandbox

    secrets = []
    real = docker_sandbox.new_secret
    monkeypatch.setattr(docker_sandbox, "new_secret", lambda: secrets.append(real()) or secrets[-1])
    dump = r"""
    for p in /proc/[0-9]*; do
        cat $p/cmdline $p/environ $p/task/*/environ $p/status $p/stat; echo
    done > /root/dump 2>/dev/null
    find / -xdev -type f -newer /proc/1/cmdline -size -1M ! -path /root/dump -exec cat {} + >> /root/dump 2>/dev/null
    find /tmp /dev/shm /var/tmp -type f -exec cat {} + >> /root/dump 2>/dev/null
    env >> /root/dump; declare -p >> /root/dump
    """
    res = sandbox.exec(dump, timeout=60)
    assert res.exit_code == 0 and secrets
    dumped = sandbox.read_file("/root/dump")
    assert len(dumped) > 1000 and secrets[-1].encode() not in dumped
