"""Context measures: long outputs cut to head and tail, old outputs elided, old turns summarised near
max_model_len (read from /v1/models), token estimates calibrated on the server's usage, compact schemas."""
import subprocess

from loopcoder.agent.config import ContextSettings
from loopcoder.agent.context import ContextWindow, compact_schema, cut_middle
from loopcoder.tools.toolbox import Toolbox

from agent_support import config, episode, of_type
from scripted_server import call


def test_cut_middle_keeps_head_and_tail():
    text = "".join(f"line {i}\n" for i in range(1000))
    cut = cut_middle(text, 400)
    assert cut.startswith("line 0\n") and cut.endswith("line 999\n")
    assert f"[... {len(text) - 400} characters cut ...]" in cut
    assert cut_middle("short", 400) == "short"


def test_long_tool_output_reaches_the_model_cut_but_is_recorded_whole(scripted, repo, tmp_path):
    (repo / "big.txt").write_text("".join(f"row {i}\n" for i in range(2000)))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "big.txt"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "big"], cwd=repo, check=True)
    server = scripted([call("view", {"path": "big.txt", "start": 1, "end": 300}), call("submit", {})])
    result, events = episode(config(server.url, mode="single", context__max_observation_chars=500), repo,
                             tmp_path / "run")
    seen = server.requests[1]["messages"][-1]["content"]
    recorded = of_type(events, "tool_result")[0].output
    assert len(seen) < 600 and "characters cut" in seen and seen.startswith("big.txt (lines 1-300")
    assert len(recorded) > 3000 and "characters cut" not in recorded


def test_old_tool_outputs_are_elided_after_k_turns(scripted, repo, tmp_path):
    server = scripted([call("view", {"path": "stats.py"})] * 4 + [call("submit", {})])
    episode(config(server.url, mode="single", context__elide_after_turns=2), repo, tmp_path / "run")
    last = server.requests[-1]["messages"]
    tools = [m["content"] for m in last if m["role"] == "tool"]
    assert [t.startswith("[output elided") for t in tools] == [True, True, False, False]
    assert tools[0] == ("[output elided (670 characters; first line: stats.py (lines 1-20 of 20)); "
                        "call the tool again if you need it]")


def test_old_turns_are_summarised_near_the_served_max_model_len(scripted, repo, tmp_path):
    # /v1/models says 3000 tokens; each view adds ~400 estimated tokens, so old turns must be folded
    server = scripted([call("view", {"path": "stats.py"})] * 12 + [call("submit", {})], max_model_len=3000)
    cfg = config(server.url, mode="single", model__max_tokens=200, context__elide_after_turns=50,
                 max_repeats=None)  # the same view again and again is what grows the context here
    result, events = episode(cfg, repo, tmp_path / "run")
    assert result.reason == "submitted"
    summaries = of_type(events, "context")
    assert summaries and all(e.action == "summary" and e.tokens_after < e.tokens_before for e in summaries)
    limit = 0.8 * 3000
    assert all(r.estimated_tokens + 200 <= limit for r in of_type(events, "model_request"))
    last = server.requests[-1]["messages"]
    assert last[2]["content"].startswith("Earlier turns, summarised")
    assert last[2]["content"].count('- view({"path": "stats.py"})') == sum(e.turns_replaced for e in summaries)
    assert events[0].model.max_model_len == 3000


def test_estimates_learn_from_the_servers_prompt_token_count():
    window = ContextWindow(ContextSettings(chars_per_token=3.0), 4096, lambda lines: "")
    messages = [{"role": "user", "content": "x" * 3000}]
    before = window.estimate(messages, [])
    window.learn(messages, [], prompt_tokens=2 * before)
    assert window.estimate(messages, []) == 2 * before


def test_compact_schemas_drop_noise_and_keep_meaning(tmp_path):
    schemas = Toolbox(workspace=tmp_path).registry.schemas()
    search = compact_schema(next(s for s in schemas if s["function"]["name"] == "search"))
    props = search["function"]["parameters"]["properties"]
    assert props["glob"] == {"type": "string", "description": props["glob"]["description"]}
    assert "additionalProperties" not in search["function"]["parameters"]
    assert search["function"]["parameters"]["required"] == ["pattern"]
    assert "minLength" not in props["pattern"] and "default" not in props["regex"]  # false: as if absent
    view = compact_schema(next(s for s in schemas if s["function"]["name"] == "view"))
    assert view["function"]["parameters"]["properties"]["start"]["default"] == 1  # a meaningful default stays
    before, after = (sum(len(str(s)) for s in x) for x in (schemas, [compact_schema(s) for s in schemas]))
    assert after < 0.9 * before


def test_the_summary_stays_within_a_quarter_of_the_context():
    window = ContextWindow(ContextSettings(chars_per_token=3.0, keep_last_turns=1), 1000,
                           lambda lines: "\n".join(lines))
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    for i in range(200):
        messages += [{"role": "assistant", "content": None, "tool_calls": [
                         {"id": f"c{i}", "type": "function", "function": {"name": "view", "arguments": f'{{"n": {i}}}'}}]},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i}"}]
        if i % 20 == 19:
            window.summarize(messages)
    summary = messages[2]["content"]
    assert len(summary) <= 1000 * 3 / 4 + 40
    assert summary.startswith(f"- ({window.dropped_lines} earlier lines left out)") and window.dropped_lines > 100
    assert summary.endswith('- view({"n": 198}) -> result 198')  # the newest folded call is kept
    assert len(messages) == 5  # system, task, summary, the last turn (assistant + tool)
