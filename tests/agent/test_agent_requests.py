"""episode_requests rebuilds, from a trajectory, exactly the chat bodies the model server received."""
import json

from loopcoder.agent.requests import episode_requests

from agent_support import FIX_NEW, FIX_OLD, PLAN, config, episode
from scripted_server import answer, call

VIEWS = [call("view", {"path": "stats.py", "start": 1 + i}) for i in range(8)]  # more turns than elide_after_turns (6)
SCRIPT = [
    call("search", {"pattern": "def median"}, reasoning="Find median first."),
    answer("I will plan.\n<tool_call>\n" + json.dumps({"name": "write_plan", "arguments": PLAN}) + "\n</tool_call>",
           reasoning="The middle values must be averaged."),
    *VIEWS,
    call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}),
    call("view", {"path": "nope.py", "bogus": 1}),  # a call that cannot run: not a training sample
    call("submit", {"summary": "median fixed"}),
]


def test_rebuilt_bodies_equal_the_bodies_sent(scripted, repo, tmp_path):
    server = scripted(list(SCRIPT), max_model_len=None)  # no context limit: nothing is summarised
    cfg = config(server.url)
    result, _ = episode(cfg, repo, tmp_path / "run")
    assert result.reason == "submitted"
    rebuilt = episode_requests(result.trajectory)
    assert rebuilt.stop_reason == "submitted"
    assert [r.body for r in rebuilt.requests] == server.requests
    # elision happened, so the rebuilt history is not just the concatenation of recorded messages
    assert any("[output elided" in json.dumps(b["messages"]) for b in server.requests)
    assert [r.phase for r in rebuilt.requests[:2]] == ["planner", "planner"]
    first = rebuilt.requests[0]
    assert first.body["chat_template_kwargs"] == {"enable_thinking": True}
    assert first.answer["reasoning_content"] == "Find median first."
    assert first.answer["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"pattern": "def median"}'}
    plan = rebuilt.requests[1].answer
    assert plan["content"] == "I will plan." and plan["tool_calls"][0]["function"]["name"] == "write_plan"
    # the executor runs without thinking: its answers carry no reasoning
    assert all("reasoning_content" not in r.answer for r in rebuilt.requests[2:])
    problems = [(r.answer["tool_calls"][0]["function"]["name"], r.problem) for r in rebuilt.requests if r.problem]
    assert len(problems) == 1 and problems[0][0] == "view" and "bogus" in problems[0][1]


def test_requests_after_a_summary_are_marked_unusable(scripted, repo, tmp_path):
    server = scripted(list(SCRIPT), max_model_len=4096)  # the long views make the executor summarise
    result, events = episode(config(server.url), repo, tmp_path / "run")
    folded_at = next(e.step for e in events if e.type == "context")
    rebuilt = episode_requests(result.trajectory).requests
    before = [r for r in rebuilt if r.step <= folded_at]  # the event carries the step before the fold
    assert [r.body for r in before] == server.requests[:len(before)]
    after = [r for r in rebuilt if r.step > folded_at]
    assert after and all(r.problem == "the history was folded into a summary" for r in after)
    # still rebuilt exactly (refold: the summary, the kept tail) and carrying the server's usage
    assert [r.body for r in rebuilt] == server.requests
    assert all(r.prompt_tokens > 0 for r in rebuilt)
