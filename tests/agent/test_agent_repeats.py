"""The repeat guard: an identical call that already gave the same output twice since the workspace last changed
is answered with an error instead of being run, and three such refusals end the episode (``repeating``)."""
from loopcoder.agent.loop import RepeatGuard
from loopcoder.agent.toolcalls import ToolCall

from agent_support import FIX_NEW, FIX_OLD, config, episode, of_type
from scripted_server import call

WRONG = call("str_replace", {"path": "stats.py", "old_str": "return ordered[middle] + 0", "new_str": "x"})
FIX = call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW})
VIEW = call("view", {"path": "stats.py"})
SUBMIT = call("submit", {"summary": "done"})


def tool_outputs(events, name: str) -> list[str]:
    return [e.output for e in of_type(events, "tool_result") if e.name == name]


def test_a_model_repeating_a_failing_edit_is_refused_then_stopped(scripted, repo, tmp_path):
    server = scripted([WRONG] * 6)
    result, events = episode(config(server.url, mode="single"), repo, tmp_path / "run")
    assert result.reason == "repeating" and len(server.requests) == 5
    outputs = tool_outputs(events, "str_replace")
    assert outputs[0] == outputs[1] and "not run" not in outputs[0]  # the edit really ran twice, failing alike
    assert all(o.startswith("error: not run: this exact str_replace call already ran 2 times") for o in outputs[2:])
    # the model reads the refusal as the call's answer
    last = server.requests[3]["messages"][-1]
    assert last["role"] == "tool" and "not run: this exact str_replace" in last["content"]
    stop = of_type(events, "stop")[-1]
    assert stop.stats["repeats_refused"] == 3 and stop.stats["edits_tried"] == 2
    assert "3 identical calls refused" in stop.detail


def test_a_change_to_the_workspace_starts_the_count_afresh(scripted, repo, tmp_path):
    server = scripted([VIEW, VIEW, VIEW, FIX, VIEW, VIEW, VIEW, SUBMIT])
    result, events = episode(config(server.url, mode="single"), repo, tmp_path / "run")
    assert result.reason == "submitted"
    views = tool_outputs(events, "view")
    refused = [n for n, o in enumerate(views) if o.startswith("error: not run")]
    assert refused == [2, 5]  # the third view before the fix and the third after it
    assert views[3] != views[0]  # the fix changed what the view shows (so it ran)
    assert of_type(events, "stop")[-1].stats["repeats_refused"] == 2


def test_the_guard_can_be_turned_off(scripted, repo, tmp_path):
    server = scripted([WRONG] * 6)
    result, events = episode(config(server.url, mode="single", max_repeats=None, budgets__steps=6), repo,
                             tmp_path / "run")
    assert result.reason == "steps"
    assert not any(o.startswith("error: not run") for o in tool_outputs(events, "str_replace"))


def guard_call(name="run_tests", **arguments) -> ToolCall:
    return ToolCall(id="c", name=name, arguments=arguments, raw="", source="native")


def test_differing_outputs_are_never_refused():
    guard = RepeatGuard(limit=2, max_refused=3)
    tests = guard_call()
    guard.ran(tests, True, "1 failed", changes_workspace=False)
    guard.ran(tests, True, "1 passed", changes_workspace=False)  # flaky, or changed by something else
    assert guard.refusal(tests) is None
    guard.ran(tests, True, "1 passed", changes_workspace=False)
    assert guard.refusal(tests) is not None  # now the last two agree


def test_argument_order_does_not_make_a_new_call_and_a_failed_shell_changes_nothing():
    guard = RepeatGuard(limit=2, max_refused=3)
    a, b = guard_call("view", path="x.py", start=1), guard_call("view", start=1, path="x.py")
    guard.ran(a, True, "same", changes_workspace=False)
    guard.ran(b, True, "same", changes_workspace=False)
    guard.ran(guard_call("shell", command="false"), False, "exit 1", changes_workspace=True)  # failed: no reset
    assert guard.refusal(a) is not None and guard.refused == 1
    guard.ran(guard_call("shell", command="sed -i s/a/b/ x.py"), True, "exit 0", changes_workspace=True)
    assert guard.refusal(a) is None and guard.refused == 0
