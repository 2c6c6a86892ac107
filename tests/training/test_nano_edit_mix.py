"""benchmarks/nano_edit_mix.py: which teacher answers go into the edit-focused mix."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("nano_edit_mix", ROOT / "benchmarks" / "nano_edit_mix.py")
mix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mix)


def sample(episode: str, step: int, *names: str) -> dict:
    calls = [{"id": f"c{step}", "type": "function", "function": {"name": n, "arguments": "{}"}} for n in names]
    return {"request": {"messages": []}, "answer": {"role": "assistant", "tool_calls": calls},
            "source": {"file": episode, "step": step, "phase": "single"}}


def test_the_final_edit_of_each_episode_and_as_many_others():
    samples = [
        sample("a", 1, "run_tests"), sample("a", 3, "str_replace"), sample("a", 2, "view"),  # out of order
        sample("a", 4, "run_tests"), sample("a", 5, "submit"),
        # a wrong first edit, undone, then the fix
        sample("b", 1, "view"), sample("b", 2, "str_replace"), sample("b", 3, "undo"), sample("b", 4, "str_replace"),
        sample("b", 5, "submit"),
        # an edit undone and never redone: no final edit
        sample("c", 1, "str_replace"), sample("c", 2, "undo"), sample("c", 3, "submit"),
    ]
    assert mix.final_edits(samples) == [1, 8]
    out, stats = mix.edit_mix(samples, seed=3)
    assert stats == {"samples_in": 13, "episodes": 3, "final_edits": 2, "others": 2, "samples_out": 4}
    assert samples[1] in out and samples[8] in out and samples[6] not in out
    assert out == mix.edit_mix(samples, seed=3)[0]  # seeded
    assert len(mix.edit_mix(samples, others_per_edit=100)[0]) == 13  # no more others than there are
