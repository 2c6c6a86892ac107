"""Malformed tool calls through the whole loop: a real HTTP model server sends them, the agent answers each
with the exact error, counts them, and stops after too many answers in a row without a usable call."""
import json

from agent_support import FIX_NEW, FIX_OLD, PLAN, config, episode, of_type
from scripted_server import answer, call


def sent_after(server, index):
    """The messages the agent added to the conversation after answer ``index`` (in the next request)."""
    previous, following = server.requests[index]["messages"], server.requests[index + 1]["messages"]
    return following[len(previous) + 1:]  # +1: the assistant message itself


def test_eight_kinds_of_malformed_calls_are_answered_with_their_exact_errors(scripted, repo, tmp_path):
    script = [
        answer('<tool_call>view(path="stats.py")</tool_call>'),  # not JSON, nothing to repair
        answer("<tool_call>{'name': 'view', 'arguments': {'path': 'stats.py',},}</tool_call>"),  # repaired
        call("open_file", {"path": "stats.py"}),  # unknown tool
        call("view", {"path": ["stats.py"], "start": "one"}),  # wrong argument types
        answer('<tool_call>{"arguments": {"path": "stats.py"}}</tool_call>'),  # missing name
        call("view", "path=stats.py"),  # native call whose arguments are not JSON
        answer("The bug is in median."),  # no call at all
        answer('<tool_call>{"name": "view", "arguments": {"path": "stats.py", "start": 9, "end": 10}}</tool_call>\n'
               '<tool_call>{"name": "search", "arguments": {"pattern": "def median"}}</tool_call>'),  # several
        answer('```json\n{"name": "str_replace", "arguments": {"path": "stats.py", "old_str": %s, "new_str": %s}}'
               '\n```' % (json.dumps(FIX_OLD), json.dumps(FIX_NEW))),  # fenced
        call("submit", {"summary": "done"}),
    ]
    server = scripted(script)
    cfg = config(server.url, mode="single", max_format_errors=10)
    result, events = episode(cfg, repo, tmp_path / "run")
    assert result.reason == "submitted"

    bad_json = sent_after(server, 0)
    assert bad_json == [{"role": "user", "content": "error: the tool call is not valid JSON: Expecting value at "
                                                    "line 1 column 1 (char 0)"}]
    assert sent_after(server, 1)[0]["content"].startswith("stats.py (lines 1-")  # repaired and run
    assert sent_after(server, 2)[0] == {"role": "tool", "tool_call_id": "call_s3_0", "content": (
        "error: unknown tool 'open_file'; available tools: repo_map, find_definition, find_references, outline, "
        "search, view, str_replace, insert, create, undo, shell, run_tests, submit")}
    assert sent_after(server, 3)[0]["content"].startswith("error: bad arguments for view: path: Input should be "
                                                          "a valid string (got ['stats.py']); start: Input should")
    assert 'has no "name"' in sent_after(server, 4)[0]["content"]
    native = sent_after(server, 5)
    assert native[0]["role"] == "user" and native[0]["content"].startswith(
        "error: arguments of view are not valid JSON: Expecting value at line 1 column 1 (char 0)")
    # the broken native call goes back as text, so the history never holds a call the server cannot parse
    assert "tool_calls" not in server.requests[6]["messages"][-2]
    assert sent_after(server, 6)[0]["content"].startswith("error: no tool call found")
    several = sent_after(server, 7)
    assert [m["role"] for m in several] == ["tool", "tool"] and "def median" in several[1]["content"]
    assert sent_after(server, 8)[0]["content"].startswith("replaced 1 occurrence in stats.py")

    stats = result.stats
    assert stats["tool_calls"] == 10 and stats["well_formed"] == 5 and stats["repaired"] == 1
    assert stats["format_errors"] == 6 and stats["edits_applied"] == 1
    assert [e.consecutive for e in of_type(events, "format_error")] == [1, 1, 2, 3, 4, 5]
    assert (tmp_path / "run" / "patch.diff").read_text().count("+    return (ordered[middle - 1]") == 1


def test_consecutive_format_errors_end_the_episode_and_a_good_call_resets_the_count(scripted, repo, tmp_path):
    bad = answer("no idea")
    server = scripted([bad, bad, call("view", {"path": "stats.py"}), bad, bad, bad, call("submit", {})])
    result, events = episode(config(server.url, mode="single", max_format_errors=3), repo, tmp_path / "run")
    assert result.reason == "format_errors" and len(server.requests) == 6
    assert "3 answers in a row without a usable tool call" in result.detail
    stop = of_type(events, "stop")[0]
    assert stop.reason == "format_errors" and stop.patch.empty and stop.stats["format_errors"] == 5


def test_the_planner_cannot_edit_even_when_it_names_a_write_tool(scripted, repo, tmp_path):
    server = scripted([call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
                       call("shell", {"command": "echo hacked > stats.py"}),
                       call("write_plan", PLAN)])
    result, events = episode(config(server.url, budgets__steps=3), repo, tmp_path / "run")
    assert result.reason == "steps"  # the plan was written at the budget's last call
    refused = sent_after(server, 0)[0]["content"]
    assert refused.startswith("error: str_replace is not available in the planner phase (it may change files); "
                              "use one of: repo_map, find_definition, find_references, outline, search, view, "
                              "write_plan")
    assert sent_after(server, 1)[0]["content"].startswith("error: shell is not available in the planner phase")
    assert [t["function"]["name"] for t in server.requests[0]["tools"]] == [
        "repo_map", "find_definition", "find_references", "outline", "search", "view", "write_plan"]
    assert result.patch.empty  # nothing the planner sent changed the workspace
    assert of_type(events, "plan")[0].action == "written"


def test_a_call_cut_at_max_tokens_is_refused_not_run_half_written(scripted, repo, tmp_path):
    """The JSON repair would close a call cut by max_tokens; running it would apply half a new_str or half a
    command. It is refused with the reason; a whole call before the cut still runs."""
    half_edit = ('<tool_call>\n{"name": "str_replace", "arguments": {"path": "stats.py", "old_str": %s, "new_str": '
                 '"        return ordered[middle]\\n    return ordered' % json.dumps(FIX_OLD))  # valid Python, wrong
    server = scripted([
        answer(half_edit, finish_reason="length"),
        answer('<tool_call>{"name": "shell", "arguments": {"command": "rm stats.py; echo', finish_reason="length"),
        # a whole call, then text cut at max_tokens: the call runs
        answer('<tool_call>{"name": "view", "arguments": {"path": "stats.py"}}</tool_call>\nNext I will',
               finish_reason="length"),
        # the same half edit without the cut (a model that forgot to close its JSON): repaired and run as before
        answer(half_edit),
        call("submit", {}),
    ])
    result, events = episode(config(server.url, mode="single", max_format_errors=10), repo, tmp_path / "run")
    assert result.reason == "submitted"
    cut = "error: your answer was cut at max_tokens inside this call, so it was not run"
    assert sent_after(server, 0)[0]["content"].startswith(cut)
    assert sent_after(server, 1)[0]["content"].startswith(cut)
    assert sent_after(server, 2)[0]["content"].startswith("stats.py (lines 1-")
    assert "def median" in sent_after(server, 2)[0]["content"]  # the file is still there and still whole
    assert sent_after(server, 3)[0]["content"].startswith("replaced 1 occurrence in stats.py")
    assert [e.ok for e in of_type(events, "tool_result")][:3] == [False, False, True]
    assert result.stats["edits_applied"] == 1 and result.stats["format_errors"] == 2
