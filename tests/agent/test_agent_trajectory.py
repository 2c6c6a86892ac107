"""The trajectory: typed events, one per line, header with a key-free config, readable after kill -9."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopcoder.agent.trajectory import Header, Trajectory, TrajectoryError, read_trajectory

from agent_support import FIX_NEW, FIX_OLD, PLAN, config, episode, of_type
from scripted_server import call

LOOPCODER = str(Path(sys.executable).with_name("loopcoder"))


def test_every_line_is_a_typed_event_and_the_header_describes_the_run(scripted, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPCODER_TEST_KEY", "sk-very-secret-123")
    server = scripted([call("view", {"path": "stats.py"}), call("write_plan", PLAN),
                       call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
                       call("update_plan", {"step": 1, "status": "done"}), call("submit", {"summary": "ok"})])
    cfg = config(server.url, model__api_key_env="LOOPCODER_TEST_KEY")
    result, events = episode(cfg, repo, tmp_path / "run")
    text = result.trajectory.read_text()
    assert server.auth == ["Bearer sk-very-secret-123"] * 5  # the key was used ...
    assert "sk-very-secret-123" not in text  # ... and never written
    header = events[0]
    assert isinstance(header, Header) and header.config["model"]["api_key_env"] == "LOOPCODER_TEST_KEY"
    assert (header.model.name, header.model.max_model_len, header.task.repo) == ("scripted", 4096, str(repo))
    assert header.task.base_commit == subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, text=True,
                                                     capture_output=True).stdout.strip()
    assert set(header.versions) == {"python", "loopcoder", "openai"}
    assert [e.type for e in events[:5]] == ["header", "phase", "model_request", "model_response", "tool_call"]
    assert [e.action for e in of_type(events, "plan")] == ["written", "updated"]
    assert of_type(events, "plan")[-1].rendered.startswith("1. [x] average the two middle values")
    first_request = of_type(events, "model_request")[0]
    assert [m["role"] for m in first_request.new_messages] == ["system", "user"]
    assert events[-1].type == "stop" and events[-1].reason == "submitted"
    assert len(text.splitlines()) == len(events)


def test_a_torn_last_line_is_ignored_and_a_bad_line_is_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    with Trajectory(path, fsync=True) as t:
        t.write(Header(task={"text": "x"}, model={"name": "m"}, config={}))
    with open(path, "a") as f:
        f.write('{"type": "phase", "pha')  # what a writer killed mid-write would leave
    assert [e.type for e in read_trajectory(path)] == ["header"]
    path.write_text(path.read_text() + "\n")
    with pytest.raises(TrajectoryError, match=r"t.jsonl:2: not a trajectory event"):
        read_trajectory(path)
    with pytest.raises(TrajectoryError, match="exists"):
        Trajectory(path)


def reached_step(trajectory: Path, step: int) -> bool:
    try:
        return any(e.type == "model_request" and e.step == step for e in read_trajectory(trajectory))
    except (FileNotFoundError, TrajectoryError):  # not created yet, or the header not yet written
        return False


@pytest.mark.docker
def test_kill_9_in_the_middle_of_an_episode_leaves_a_valid_trajectory(scripted, repo, tmp_path, docker_ready):
    server = scripted([call("view", {"path": "stats.py"}), call("write_plan", PLAN), call("run_tests", {}),
                       dict(call("submit", {}), delay=120)])
    out = tmp_path / "run"
    proc = subprocess.Popen([LOOPCODER, "agent", "run", "--repo", str(repo), "--task", "fix median",
                             "--model-url", server.url, "--output", str(out), "--test-command", "python3 -m unittest"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trajectory = out / "trajectory.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the agent is waiting for the (slow) fourth answer
        if reached_step(trajectory, 4):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.1)
    else:
        pytest.fail("the episode did not reach its fourth model call")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    events = read_trajectory(trajectory)
    assert events[0].type == "header" and events[-1].type == "model_request" and events[-1].step == 4
    assert not of_type(events, "stop")
    [tests] = [e for e in of_type(events, "tool_result") if e.name == "run_tests"]
    assert tests.output.startswith("tests FAILED: Ran 4 tests: FAILED (failures=1)")
    for line in trajectory.read_text().splitlines():
        json.loads(line)


@pytest.mark.docker
def test_ctrl_c_ends_the_episode_with_interrupted_and_keeps_the_patch(scripted, repo, tmp_path, docker_ready):
    server = scripted([call("write_plan", PLAN),
                       call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
                       dict(call("submit", {}), delay=120)])
    out = tmp_path / "run"
    # SIGINT at its default in the child even when this test runs where it is ignored (a job started with
    # `&` from a non-interactive shell inherits SIGINT ignored, and so would the agent).
    proc = subprocess.Popen([LOOPCODER, "agent", "run", "--repo", str(repo), "--task", "fix median",
                             "--model-url", server.url, "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not reached_step(out / "trajectory.jsonl", 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout.startswith("stop reason  interrupted (Ctrl-C)")
    stop = read_trajectory(out / "trajectory.jsonl")[-1]
    assert stop.type == "stop" and stop.reason == "interrupted" and stop.patch.files == ["stats.py"]
    assert "+    return (ordered[middle - 1] + ordered[middle]) / 2" in (out / "patch.diff").read_text()


def test_a_failure_inside_the_agent_still_ends_with_a_stop_event_and_the_patch(scripted, repo, tmp_path):
    # a user's replacement template that uses a variable the agent does not pass
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "new_plan.jinja").write_text("{{ plan }} {{ deadline }}")
    server = scripted([call("write_plan", PLAN), call("update_plan", {"step": 1, "status": "failed"}),
                       call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
                       call("update_plan", {"step": 1, "status": "failed"}), call("write_plan", PLAN)])
    cfg = config(server.url)
    cfg.prompts.dir = prompts
    result, events = episode(cfg, repo, tmp_path / "run")
    assert (result.reason, result.detail) == ("agent_error", "UndefinedError: 'deadline' is undefined")
    assert events[-1].type == "stop" and events[-1].patch.files == ["stats.py"]
