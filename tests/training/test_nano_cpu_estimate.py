"""benchmarks/nano_cpu_estimate.py: the rebuilt prompts, the replayed prefix cache and the cost arithmetic."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from loopcoder.agent.requests import refold

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("nano_cpu_estimate", ROOT / "benchmarks" / "nano_cpu_estimate.py")
est = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = est  # dataclasses look their module up
spec.loader.exec_module(est)

COEF = {"requests": 0.2, "prefill_tokens": 0.003, "prefill_pairs": 1e-7, "decode_tokens": 0.07,
        "decode_context": 1e-5}


def call(i: int, name: str = "view") -> dict:
    return {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}


def write_trajectory(path: Path, elide_after_turns: int = 1) -> Path:
    """A single-phase episode of three answered requests; old tool output is elided after one turn."""
    from loopcoder.agent.config import AgentConfig

    config = AgentConfig(mode="single").model_dump(mode="json")
    config["context"]["elide_after_turns"] = elide_after_turns
    system, task = {"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "Task: fix f."}
    events = [{"type": "header", "task": {"text": "fix f"}, "model": {"name": "nano", "max_model_len": 8192},
               "config": config},
              {"type": "phase", "phase": "single"}]
    fresh = [[system, task]]
    for i in (1, 2):
        fresh.append([{"role": "assistant", "content": None, "tool_calls": [call(i)]},
                      {"role": "tool", "tool_call_id": f"c{i}", "content": f"output {i}\nmore"}])
    n = 0
    for step, new in enumerate(fresh, 1):
        n += len(new)
        events.append({"type": "model_request", "step": step, "phase": "single", "new_messages": new, "n_messages": n,
                       "tools": [], "thinking": False, "max_tokens": 64, "estimated_tokens": 0})
        events.append({"type": "model_response", "step": step, "phase": "single", "content": "",
                       "tool_calls": [call(step)], "prompt_tokens": 100 * step, "completion_tokens": 10 + step})
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_bodies_rebuild_the_history_with_old_outputs_elided(tmp_path):
    bodies = [(r.body, r) for r in est.episode_bodies(write_trajectory(tmp_path / "t.jsonl"))]
    assert [len(body["messages"]) for body, _ in bodies] == [2, 4, 6]
    assert [answer.completion_tokens for _, answer in bodies] == [11, 12, 13]
    last = bodies[2][0]["messages"]
    # the third request: the first tool output is older than one turn, so it became a note; the second is whole
    assert last[3]["content"].startswith("[output elided (13 characters; first line: output 1)")
    assert last[5]["content"] == "output 2\nmore"
    # the second request was sent before that: its copy of the first output is whole
    assert bodies[1][0]["messages"][3]["content"] == "output 1\nmore"
    assert bodies[2][0]["chat_template_kwargs"] == {"enable_thinking": False}


def test_refold_keeps_the_head_the_summary_the_recorded_tail_and_the_new_messages():
    history = [{"i": i} for i in range(8)]
    summary, new = {"summary": True}, {"i": 8}
    assert refold(history, [summary, new], n_messages=6, summary_at=2) == [
        {"i": 0}, {"i": 1}, summary, {"i": 6}, {"i": 7}, new]
    assert refold(history, [summary], n_messages=3, summary_at=2) == [{"i": 0}, {"i": 1}, summary]
    with pytest.raises(ValueError):
        refold(history, [summary, new], n_messages=12, summary_at=2)


def test_replay_one_loop_reuses_whole_cached_blocks_only():
    replay = est.ServerReplay(est.EngineShape(loops=1))
    first = replay.run(list(range(100)), completion_tokens=5)
    assert (first.cached_tokens, first.chunks) == (0, [(0, 100)])
    assert first.decode_contexts == [101, 102, 103, 104]  # 4 decode steps: the first token came from the prefill
    # the next prompt shares 90 tokens: 5 whole blocks of 16 are reused, the rest is computed
    second = replay.run(list(range(90)) + list(range(1000, 1050)), completion_tokens=1)
    assert (second.cached_tokens, second.chunks, second.decode_contexts) == (80, [(80, 60)], [])


def test_replay_two_loops_recomputes_the_tail_unless_a_snapshot_ends_the_hit():
    replay = est.ServerReplay(est.EngineShape(loops=2))
    assert replay.tail == 30 * 64 + 1  # (R - 1) * (layers * (window - 1) + 1), window 65
    replay.run(list(range(100)), completion_tokens=1)
    # 96 tokens are cached, but without loop state at 96 the last 1,921 of them (all) are run again
    again = replay.run(list(range(100)) + [7] * 40, completion_tokens=1)
    assert (again.cached_tokens, again.chunks) == (0, [(0, 140)])
    # a prompt that ends on a block boundary leaves a snapshot where its whole blocks end: resumed there
    replay.run(list(range(2000, 2144)), completion_tokens=1)
    resumed = replay.run(list(range(2000, 2144)) + [9] * 10, completion_tokens=3)
    assert (resumed.cached_tokens, resumed.chunks, resumed.decode_contexts) == (144, [(144, 10)], [155, 156])


def test_replay_with_the_history_hint_resumes_where_the_history_ended():
    """As the engine now does: the prefill is cut at the history's last block boundary (100 -> 96) and a
    state kept there; the next turn, which leaves the prompt after the history, resumes at 96."""
    replay = est.ServerReplay(est.EngineShape(loops=2))
    history, generation = list(range(100)), [5, 6, 7]
    first = replay.run(history + generation, completion_tokens=1, snapshot_at=len(history))
    assert first.chunks == [(0, 96), (96, 7)]
    turn = replay.run(history + [8] * 30 + generation, completion_tokens=1, snapshot_at=130)
    assert (turn.cached_tokens, turn.chunks) == (96, [(96, 32), (128, 5)])  # cut at its own history end
    # without the hint (the engine before): the same turn recomputes everything (96 < the tail)
    plain = est.ServerReplay(est.EngineShape(loops=2))
    plain.run(history + generation, completion_tokens=1)
    assert plain.run(history + [8] * 30 + generation, completion_tokens=1).chunks == [(0, 133)]


def test_long_prompts_are_prefilled_in_chunks_of_the_batch_budget():
    work = est.ServerReplay(est.EngineShape(loops=1)).run(list(range(5000)), completion_tokens=3)
    assert work.chunks == [(0, 2048), (2048, 2048), (4096, 904)]
    # the same work from the usage the server reports for a lone request (the measured requests' features)
    usage = est.work_from_usage(prompt_tokens=5000, cached_tokens=0, completion_tokens=3)
    assert (usage.chunks, usage.decode_contexts) == (work.chunks, work.decode_contexts) == (work.chunks, [5001, 5002])


def test_features_and_cost_arithmetic():
    work = est.Work(prompt_tokens=140, cached_tokens=80, chunks=[(80, 60)], decode_contexts=[141, 142])
    feats = work.features()
    assert feats == {"requests": 1.0, "prefill_tokens": 60.0, "prefill_pairs": 60 * 80 + 60 * 61 / 2,
                     "decode_tokens": 2.0, "decode_context": 283.0}
    assert est.predict(feats, COEF) == pytest.approx(0.2 + 0.18 + 6630e-7 + 0.14 + 283e-5)
    total = est.total_features([work, est.Work(10, 0, [(0, 10)], [])])
    assert total["requests"] == 2.0 and total["prefill_tokens"] == 70.0 and total["prefill_pairs"] == 6630 + 55


def test_fit_recovers_known_coefficients_and_never_goes_negative():
    rows = [est.Work(s + n, s, [(s, n)], list(range(s + n + 1, s + n + d))).features()
            for s in (0, 512, 2048, 4096) for n in (16, 400, 1500) for d in (1, 32, 96)]
    cpu = [est.predict(r, COEF) for r in rows]
    got = est.fit(rows, cpu)
    for name, value in COEF.items():
        assert got[name] == pytest.approx(value, rel=1e-6)
    # a cost that falls with the pairs would need a negative coefficient: it is dropped instead
    falling = [y - 2e-7 * r["prefill_pairs"] for r, y in zip(rows, cpu)]
    assert est.fit(rows, falling)["prefill_pairs"] == 0.0
    assert all(v >= 0 for v in est.fit(rows, falling).values())


def test_summary_statistics():
    assert est.summary([1.0, 2.0, 3.0, 4.0, 100.0]) == {"mean": 22.0, "median": 3.0, "p90": 100.0, "total": 110.0}
