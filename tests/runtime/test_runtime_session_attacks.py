"""The shell session attacked from inside: forged end lines, the supervisor's /proc files, pids
exhaustion and kills during the state save, escaping background processes, edge-case timeouts.

Each test stands for a defect of issue 9 (or a way the fix could break); the Docker ones run real
containers with the small limits of conftest.py (pids_limit 128).
"""
from __future__ import annotations

import os
import stat
import time

import pytest

from loopcoder.runtime import docker_sandbox
from loopcoder.runtime.config import RuntimeConfig, SandboxConfig
from loopcoder.runtime.docker_sandbox import DockerSandbox
from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.local_sandbox import LocalSandbox
from loopcoder.runtime.output import HeadTailBuffer
from loopcoder.runtime.session import NOTE_MONITOR_LOST, NOTE_STATE_NOT_SAVED, EndMarkerReader

docker = pytest.mark.docker

# Prints end lines with every value a command can know or guess, in the old and the new format.
FORGE = r"""
for p in "$LOOPCODER_EXEC" "${LOOPCODER_EXEC:0:8}" "" x; do
    printf '__LOOPCODER_END_%s 0 0\n__LOOPCODER_END_%s 0 0 -\n' "$p" "$p"
done
"""

# Fills every pid of the container with Python threads (a failed thread start raises at once, where a
# failed fork in bash retries for 15 s), then waits until the cgroup is full.
FILL_PIDS = r"""
pids=/sys/fs/cgroup/pids; [[ -r $pids/pids.current ]] || pids=/sys/fs/cgroup
python3 -c 'import threading, time
try:
    while True:
        threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
except RuntimeError:
    pass
time.sleep(120)' &
while read -r cur < $pids/pids.current && read -r max < $pids/pids.max && (( cur < max )); do :; done
echo FULL
"""

# A state that takes a while to write: 6000 exported variables of 200 bytes (builtins only, fast).
BIG_STATE = "printf -v pad '%0200d' 0; for i in {1..6000}; do export BIG_$i=$pad; done; unset pad i; "

# Kills the job with SIGKILL as soon as it starts writing its state file (new and old variable names).
KILL_IN_SAVE = r"""
f=${__lc_out:-$__lc_state}; rm -f "$f"
( while [[ ! -s $f ]]; do :; done; kill -9 $$ ) &
"""


def session_view(sb) -> list[str]:
    """PATH, cwd and KEEPME as the next command sees them; `ls` proves PATH finds programs."""
    res = sb.exec("echo \"$PATH\"; pwd; echo \"${KEEPME-unset}\"; ls -d /")
    assert res.exit_code == 0, res.output
    return res.output.splitlines()


@pytest.fixture
def background_sandbox(docker_client, base_image, workspace):
    cfg = SandboxConfig(cpus=1.0, memory="256m", pids_limit=64, keep_background=True, default_timeout_s=60)
    with DockerSandbox(workspace, config=cfg, image=base_image, client=docker_client,
                       labels={"loopcoder.purpose": "test"}) as sb:
        yield sb


# -- forged end lines ------------------------------------------------------------------------------


@docker
def test_forged_end_line_does_not_end_the_command(sandbox):
    res = sandbox.exec(FORGE + "sleep 1.5; echo STILL-RUNNING; exit 7", timeout=30)
    assert (res.exit_code, res.timed_out) == (7, False)
    assert res.output.endswith("STILL-RUNNING\n") and res.duration_s >= 1.5
    assert res.output.count("__LOOPCODER_END_") == 8  # forged lines are plain output
    assert sandbox.exec("echo next").output == "next\n"


@docker
def test_forged_end_line_then_a_timeout_still_kills_and_nothing_leaks(sandbox):
    res = sandbox.exec(FORGE + "sleep 1; echo LEFTOVER; sleep 100", timeout=2.5)
    assert res.timed_out and res.exit_code == 124 and res.duration_s < 8
    assert "LEFTOVER" in res.output
    nxt = sandbox.exec("sleep 1; echo next")
    assert nxt.output == "next\n"
    assert "sleep 100" not in sandbox.exec("ps -eo args").output


@docker
def test_command_cannot_open_the_supervisors_proc_files(sandbox):
    probe = r"""
    for p in 1 $PPID; do
        ls /proc/$p/fd >/dev/null 2>&1 && echo "OPENED fd-list $p"
        ( echo FORGED > /proc/$p/fd/1 ) 2>/dev/null && echo "OPENED stdout $p"
        ( exec 9</proc/$p/fd/0 ) 2>/dev/null && echo "OPENED stdin $p"
        cat /proc/$p/environ >/dev/null 2>&1 && echo "OPENED environ $p"
        ( exec 9</proc/$p/mem ) 2>/dev/null && echo "OPENED mem $p"
    done
    echo x > /proc/1/fd/1
    # Every process it can see: a forged end line into each one's stdout.
    for d in /proc/[0-9]*; do printf '__LOOPCODER_END_x 0 0 -\n' > $d/fd/1; done 2>/dev/null
    echo done; exit 5
    """
    res = sandbox.exec(probe, timeout=30)
    assert "OPENED" not in res.output, res.output
    assert "/proc/1/fd/1: Permission denied" in res.output
    assert res.exit_code == 5 and res.output.endswith("done\n")
    assert sandbox.exec("echo next").output == "next\n"


@docker
def test_the_end_secret_is_nowhere_a_command_can_read(sandbox, monkeypatch):
    secrets = []
    real = docker_sandbox.new_secret
    monkeypatch.setattr(docker_sandbox, "new_secret", lambda: secrets.append(real()) or secrets[-1])
    dump = r"""
    for p in /proc/[0-9]*; do
        cat $p/cmdline $p/environ $p/task/*/environ $p/status $p/stat; echo
    done > /testbed/dump 2>/dev/null
    find /tmp /home /dev/shm /var/tmp -type f -exec cat {} + >> /testbed/dump 2>/dev/null
    env >> /testbed/dump; declare -p >> /testbed/dump
    """
    res = sandbox.exec(dump, timeout=60)
    assert res.exit_code == 0 and secrets
    dumped = (sandbox.workspace / "dump").read_bytes()
    assert len(dumped) > 1000 and secrets[-1].encode() not in dumped


@docker
def test_a_malformed_end_line_breaks_the_sandbox_with_a_clear_error(sandbox):
    # Only the supervisor knows the secret, so a bad line after it means the session itself is broken.
    reader = EndMarkerReader("0" * 32, HeadTailBuffer(100))
    with pytest.raises(SandboxError, match="malformed end line"):
        sandbox._feed(reader, b"__LOOPCODER_END_" + b"0" * 32 + b" 0 zero -\n")
    with pytest.raises(SandboxError, match="unusable .*malformed end line"):
        sandbox.exec("echo hi")


@docker
def test_signals_to_the_supervisor_leave_the_session_working(sandbox):
    sigs = "HUP INT QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM TERM XCPU XFSZ VTALRM SYS TSTP CONT STOP KILL"
    res = sandbox.exec(f"for s in {sigs}; do kill -$s 1; done; kill -STOP $PPID; sleep 0.3; echo sent", timeout=20)
    assert res.output.endswith("sent\n") and res.exit_code == 0 and res.duration_s < 5
    assert sandbox.exec("echo alive").output == "alive\n"


@docker
def test_a_command_that_kills_its_supervising_process_gets_an_answer(sandbox):
    res = sandbox.exec("kill -9 -1; sleep 5; echo unreachable", timeout=30)
    assert res.exit_code == 137 and not res.timed_out and res.duration_s < 4
    assert res.output == NOTE_MONITOR_LOST + "\n" and not res.state_saved
    assert sandbox.exec("echo alive; ps -eo args | grep -c '[s]leep 5'").output == "alive\n0\n"


@docker
def test_the_supervisor_runs_an_exec_only_copy_of_the_images_bash(sandbox, docker_client):
    info = docker_client.api.inspect_container(sandbox.container_id)
    source = next(m["Source"] for m in info["Mounts"] if m["Destination"] == "/.loopcoder/bash")
    st = os.stat(source)
    assert stat.S_IMODE(st.st_mode) == 0o111 and st.st_uid == os.geteuid()
    if os.geteuid() == 0:  # mode 0111 keeps even its owner out, but not root
        with open(source, "rb") as f:
            assert f.read() == sandbox.read_file("/bin/bash")
    res = sandbox.exec("cat /.loopcoder/bash >/dev/null; test -x /.loopcoder/bash && echo executable")
    assert "Permission denied" in res.output and "executable" in res.output
    cmdline = sandbox.exec("tr '\\0' ' ' < /proc/1/cmdline").output
    assert cmdline.startswith("/.loopcoder/bash ") and "loopcoder-supervisor" in cmdline
    assert len(cmdline) < 200 and "KEEP_BACKGROUND" not in cmdline  # the scripts stay off the command line


@docker
def test_an_unwritable_cache_for_the_sealed_bash_is_a_clear_error(docker_client, base_image, workspace,
                                                                    small_config, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(docker_sandbox, "_sealed", {})
    with pytest.raises(SandboxError, match="cannot write the sandbox's sealed shell .*XDG_CACHE_HOME"):
        DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client)


@docker
def test_the_supervisor_refuses_to_run_from_a_readable_bash(docker_client, base_image, workspace, small_config,
                                                           tmp_path, monkeypatch):
    image_id = docker_client.api.inspect_image(base_image)["Id"]
    readable = tmp_path / "bash"
    readable.write_bytes(docker_sandbox._image_file(docker_client.api, image_id, base_image, ("/bin/bash",)))
    readable.chmod(0o755)
    monkeypatch.setattr(docker_sandbox, "_sealed_bash", lambda api, image_id, image: readable)
    with pytest.raises(SandboxError, match="is readable, so the supervisor would not be sealed"):
        DockerSandbox(workspace, config=small_config, image=base_image, client=docker_client)


# -- background processes --------------------------------------------------------------------------


@docker
def test_background_processes_that_leave_the_session_and_drop_the_tag_die_with_their_command(sandbox):
    res = sandbox.exec(
        "setsid env -u LOOPCODER_EXEC bash -c '(sleep 991 &); exec sleep 992' >/dev/null 2>&1 </dev/null &"
        " (env -i setsid sleep 993 >/dev/null 2>&1 &); sleep 0.5;"
        " ps -eo args | grep -c '[s]leep 99[123]'"
    )
    assert res.output == "3\n"  # all three were running, outside the job's group and without its tag
    left = sandbox.exec("ps -eo args").output
    assert "sleep 99" not in left, left


@docker
def test_pid_1_reaps_orphans(sandbox):
    res = sandbox.exec("for i in $(seq 20); do (sleep 0.2 &); done; sleep 1; ps -eo stat= | grep -c '^Z'")
    assert res.output == "0\n"
    sandbox.exec("for i in $(seq 20); do (sleep 60 &); done")  # killed at the end of the command
    left = sandbox.exec("ps -eo stat=,args=").output
    assert "sleep 60" not in left and not any(line.startswith("Z") for line in left.splitlines()), left


# -- state save under pressure ---------------------------------------------------------------------


@docker
def test_pids_exhaustion_at_command_end_keeps_a_working_environment(sandbox):
    path = sandbox.exec('echo "$PATH"').output.strip()
    res = sandbox.exec("export KEEPME=kept; mkdir -p /tmp/wd && cd /tmp/wd; " + FILL_PIDS, timeout=60)
    assert "FULL" in res.output and not res.timed_out
    view = session_view(sandbox)
    assert view[0] == path and view[3] == "/"
    if res.state_saved:  # the save needs no fork, so it should succeed
        assert view[1:3] == ["/tmp/wd", "kept"]
    else:
        assert NOTE_STATE_NOT_SAVED in res.output and view[1:3] == ["/testbed", "unset"]
    assert res.state_saved
    assert int(sandbox.exec("ps -e --no-headers | wc -l").output) < 10


@docker
def test_a_kill_during_the_state_save_keeps_the_previous_state(sandbox):
    path = sandbox.exec('echo "$PATH"').output.strip()
    cut = 0
    for k in range(3):
        assert sandbox.exec(f"export KEEPME=round{k}; mkdir -p /tmp/r{k} && cd /tmp/r{k}").exit_code == 0
        res = sandbox.exec(BIG_STATE + "export KEEPME=lost; cd /; " + KILL_IN_SAVE + "true", timeout=60)
        assert res.exit_code == 137 and not res.timed_out
        view = session_view(sandbox)
        assert view[0] == path and view[3] == "/"
        assert view[1:3] in ([f"/tmp/r{k}", f"round{k}"], ["/", "lost"]), view
        if view[2] == "lost":  # the kill came after the save ended
            assert res.state_saved
        else:
            cut += 1
            assert res.output.endswith(NOTE_STATE_NOT_SAVED + "\n") and not res.state_saved
            assert sandbox.exec("echo ${BIG_1:-none}").output == "none\n"
    assert cut, "no kill landed inside the save; make BIG_STATE bigger"


@docker
@pytest.mark.slow  # a sweep (~20 s); the kill test above covers the same path deterministically
def test_timeouts_landing_anywhere_in_a_slow_save_never_break_the_environment(sandbox):
    path = sandbox.exec('echo "$PATH"').output.strip()
    command = BIG_STATE + "export KEEPME=new; cd /tmp"
    reset = "export KEEPME=base; cd /testbed; unset ${!BIG_*}"
    full = sandbox.exec(command).duration_s  # the state save is the last part of this
    for fraction in (0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0):
        sandbox.exec(reset)
        res = sandbox.exec(command, timeout=full * fraction)
        view = session_view(sandbox)
        assert view[0] == path and view[3] == "/", (fraction, view)
        assert view[1:3] in (["/tmp", "new"], ["/testbed", "base"]), (fraction, view)
        assert res.state_saved == (view[2] == "new") or res.timed_out


@docker
def test_exec_of_another_program_reports_that_the_state_was_not_saved(sandbox):
    res = sandbox.exec("cd /tmp; exec echo replaced")
    assert res.output == "replaced\n" + NOTE_STATE_NOT_SAVED + "\n" and not res.state_saved
    assert session_view(sandbox)[1] == "/testbed"


# A background process that takes every pid that comes free (keep_background lets it stay).
GREEDY = r"""
python3 -c 'import threading, time
while True:
    try:
        threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
    except RuntimeError:
        time.sleep(0.001)' >/dev/null 2>&1 &
sleep 1
"""


@docker
def test_a_command_that_cannot_be_started_is_reported_not_hung(background_sandbox, docker_client):
    assert background_sandbox.exec(GREEDY, timeout=60).exit_code == 0

    def pids() -> int:
        return docker_client.api.stats(background_sandbox.container_id, stream=False)["pids_stats"]["current"]

    deadline = time.monotonic() + 30
    while pids() < 64 and time.monotonic() < deadline:  # the filler takes the pids its command freed
        time.sleep(0.2)
    res = background_sandbox.exec("echo hi", timeout=30)
    assert res.exit_code == 126 and "could not be started" in res.output and "pids_limit 64" in res.output
    assert res.duration_s < 5 and not res.state_saved


# -- timeouts at the edges -------------------------------------------------------------------------


@docker
def test_invalid_timeouts_are_refused_before_anything_is_sent(sandbox):
    for bad in (0, -1, float("nan"), float("inf"), float("-inf"), "abc", "5", True, []):
        with pytest.raises(SandboxError, match="timeout must be"):
            sandbox.exec("echo leaked > /testbed/leaked", timeout=bad)
    assert sandbox.exec("echo clean").output == "clean\n"
    assert not (sandbox.workspace / "leaked").exists()


@docker
def test_tiny_timeouts_time_out_promptly_and_leave_the_sandbox_usable(sandbox):
    for timeout in (0.001, 0.01, 0.05):
        res = sandbox.exec("sleep 100", timeout=timeout)
        assert res.timed_out and res.exit_code == 124 and res.duration_s < 3, (timeout, res)
    started = time.monotonic()
    for i in range(30):
        res = sandbox.exec(f"echo {i}; sleep 100", timeout=0.001 * (i % 5 + 1))
        assert res.timed_out and res.output in ("", f"{i}\n")
    assert time.monotonic() - started < 30
    assert sandbox.exec("echo ok; ps -eo args | grep -c '[s]leep 100'").output == "ok\n0\n"


@docker
def test_a_huge_finite_timeout_is_fine(sandbox):
    assert sandbox.exec("echo ok", timeout=1e300).output == "ok\n"


# -- LocalSandbox: same state protocol and timeout checks (not isolated, so no secrecy) -------------


@pytest.fixture
def local(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    cfg = RuntimeConfig(sandbox=SandboxConfig(output_limit_bytes=10_000, default_timeout_s=30))
    with pytest.warns(UserWarning, match="directly on this machine"):
        sb = LocalSandbox(ws, config=cfg, allow=True)
    with sb:
        yield sb


def test_local_invalid_and_tiny_timeouts(local):
    for bad in (0, -1, float("nan"), float("inf"), "abc"):
        with pytest.raises(SandboxError, match="timeout must be"):
            local.exec("echo leaked > leaked", timeout=bad)
    assert not (local.workspace / "leaked").exists()
    for timeout in (0.001, 0.01, 0.05):
        res = local.exec("sleep 100", timeout=timeout)
        assert res.timed_out and res.duration_s < 3
    assert local.exec("echo ok").output == "ok\n"


def test_local_kill_during_the_state_save_keeps_the_previous_state(local):
    path = local.exec('echo "$PATH"').output.strip()
    assert local.exec("export KEEPME=before; mkdir -p d && cd d").exit_code == 0
    res = local.exec(BIG_STATE + "export KEEPME=lost; cd /; " + KILL_IN_SAVE + "true", timeout=60)
    assert res.exit_code == 137
    view = local.exec('echo "$PATH"; pwd; echo "$KEEPME"').output.splitlines()
    assert view[0] == path
    assert view[1:] in ([str(local.workspace / "d"), "before"], ["/", "lost"]), view
    if view[2] == "before":
        assert res.output.endswith(NOTE_STATE_NOT_SAVED + "\n") and not res.state_saved


def test_local_forged_end_line_is_plain_output(local):
    res = local.exec(FORGE + "exit 4")
    assert res.exit_code == 4 and res.output.count("__LOOPCODER_END_") == 8
