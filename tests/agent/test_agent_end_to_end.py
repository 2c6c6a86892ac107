"""End to end: a real repository with a real bug, a Docker sandbox, and a scripted model over real HTTP that
plans, edits, runs the tests and submits; the patch fixes the bug on a clean checkout. Then replay."""
import json
import subprocess

import pytest

from loopcoder.agent import read_trajectory
from loopcoder.agent.replay import replay_episode
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.cli import main

from agent_support import FIX_NEW, FIX_OLD, PLAN, config, episode, of_type
from scripted_server import answer, call

pytestmark = pytest.mark.docker

SOLVE = [
    call("search", {"pattern": "def median"}),
    answer('<tool_call>\n{"name": "write_plan", "arguments": %s}\n</tool_call>' % json.dumps(PLAN)),
    call("run_tests", {}),
    call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
    call("run_tests", {}),
    call("update_plan", {"step": 1, "status": "done", "note": "tests pass"}),
    # the summary ends with an escape sequence that would clear the terminal: the CLI must not print it
    call("submit", {"summary": "median averages the two middle values of an even-length list\x1b[2J"}),
]


def git_head(path):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, text=True, capture_output=True).stdout.strip()


def run_tests_with(patch: str, repo, tmp_path, open_sandbox) -> str:
    """Apply ``patch`` to a clean clone of ``repo`` and run its tests in a fresh sandbox; the output."""
    clean = GitWorkspace.clone(repo, tmp_path / "clean")
    assert clean.apply_patch(patch).ok
    result = open_sandbox(clean.path).exec("python3 -m unittest 2>&1", timeout=60)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_plans_edits_tests_and_submits_and_the_patch_fixes_the_bug(scripted, repo, tmp_path, open_sandbox,
                                                                      capsys):
    server = scripted(list(SOLVE))
    head, status = git_head(repo), (repo / "stats.py").read_text()
    out = tmp_path / "run"
    main(["agent", "run", "--repo", str(repo), "--task-file", str(repo / "ISSUE.md"), "--model-url", server.url,
          "--output", str(out), "--test-command", "python3 -m unittest", "--no-thinking"])
    captured = capsys.readouterr()
    summary = captured.out
    assert summary.startswith("stop reason  submitted (median averages the two middle values")
    assert "\x1b" not in summary and "\x1b" not in captured.err and "list\ufffd[2J)" in summary
    assert "1 applied of 1 tried; test runs 2; re-plans 0" in summary
    assert (out / "summary.txt").read_text().strip() == summary.strip().replace("\ufffd", "\x1b")
    # the user's checkout is untouched: the agent worked on a clone in the output folder
    assert git_head(repo) == head and (repo / "stats.py").read_text() == status
    events = read_trajectory(out / "trajectory.jsonl")
    results = {e.name: e for e in of_type(events, "tool_result")}
    assert [r.output.splitlines()[0] for r in of_type(events, "tool_result") if r.name == "run_tests"] == [
        "tests FAILED: Ran 4 tests: FAILED (failures=1)", "tests passed: Ran 4 tests: OK"]
    assert results["write_plan"].ok and [p.action for p in of_type(events, "plan")] == ["written", "updated"]
    assert [r["chat_template_kwargs"]["enable_thinking"] for r in server.requests] == [False] * 7
    patch = (out / "patch.diff").read_text()
    assert "+    return (ordered[middle - 1] + ordered[middle]) / 2" in patch
    assert "Ran 4 tests" in run_tests_with(patch, repo, tmp_path, open_sandbox)


def test_single_mode_solves_without_a_plan(scripted, repo, tmp_path, open_sandbox):
    server = scripted([SOLVE[2], SOLVE[3], SOLVE[4], SOLVE[6]])
    result, events = episode(config(server.url, mode="single"), repo, tmp_path / "run", sandbox=open_sandbox)
    assert result.reason == "submitted" and not of_type(events, "plan")
    assert "write_plan" not in [t["function"]["name"] for t in server.requests[0]["tools"]]
    run_tests_with((tmp_path / "run" / "patch.diff").read_text(), repo, tmp_path, open_sandbox)


def test_replay_reproduces_an_episode_in_a_fresh_sandbox(scripted, repo, tmp_path, open_sandbox):
    server = scripted(list(SOLVE))
    recorded, _ = episode(config(server.url), repo, tmp_path / "run", sandbox=open_sandbox)
    report = replay_episode(recorded.trajectory, tmp_path / "replay", open_sandbox=open_sandbox)
    assert report.same, report.divergences
    assert (report.recorded_stop, report.replayed_stop, report.tool_results) == ("submitted", "submitted", 7)
    assert (tmp_path / "replay" / "patch.diff").read_text() == (tmp_path / "run" / "patch.diff").read_text()
    assert len(server.requests) == 7  # the replay asked the recorded answers, not the server


def test_replay_reports_where_results_diverge(scripted, repo, tmp_path, open_sandbox, capsys):
    server = scripted(list(SOLVE))
    recorded, _ = episode(config(server.url), repo, tmp_path / "run", sandbox=open_sandbox)
    # a trajectory recorded where the first test run passed (another environment, a flaky test)
    lines = recorded.trajectory.read_text().splitlines()
    for i, line in enumerate(lines):
        event = json.loads(line)
        if event["type"] == "tool_result" and event["name"] == "run_tests":
            event["output"] = "tests passed: Ran 4 tests: OK"
            lines[i] = json.dumps(event)
            break
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n")
    report = replay_episode(edited, tmp_path / "replay", open_sandbox=open_sandbox)
    [divergence] = report.divergences
    assert (divergence.index, divergence.step, divergence.tool, divergence.what) == (2, 3, "run_tests", "output")
    assert divergence.recorded == "tests passed: Ran 4 tests: OK"
    assert divergence.replayed.startswith("tests FAILED: Ran 4 tests: FAILED (failures=1)")
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(edited), "--output", str(tmp_path / "replay-cli")])
    assert exit_info.value.code == 1
    assert "divergence at tool result 2 (step 3, run_tests): output\n  recorded: 'tests passed: Ran 4 tests: OK'" \
        in capsys.readouterr().out


def test_replay_cli_says_no_divergence(scripted, repo, tmp_path, open_sandbox, capsys):
    server = scripted(list(SOLVE))
    recorded, _ = episode(config(server.url), repo, tmp_path / "run", sandbox=open_sandbox)
    main(["replay", str(recorded.trajectory), "--output", str(tmp_path / "replay")])
    out = capsys.readouterr().out
    assert "replayed 7 tool results; stop: recorded submitted, replayed submitted" in out
    assert out.strip().endswith("no divergence")
