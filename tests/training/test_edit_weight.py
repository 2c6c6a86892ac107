"""`loopcoder train --edit-weight`: the tokens that write what a final `str_replace` changes are found in the
rendered answer, weighted in the loss, and training with the weight lowers their loss faster."""
from __future__ import annotations

import json

import pytest
import torch

from loopcoder.model_server.training import trainer
from loopcoder.model_server.training.data import changed_spans, encode_sample, final_edits

from nano_support import call, samples

EDIT_TOOL = {"type": "function", "function": {"name": "str_replace", "description": "Replace text.",
                                              "parameters": {"type": "object", "properties": {
                                                  "path": {"type": "string"}, "old_str": {"type": "string"},
                                                  "new_str": {"type": "string"}}}}}


def edit_answer(old: str, new: str, *more: dict) -> dict:
    calls = [call("str_replace", {"path": "m.py", "old_str": old, "new_str": new})] + list(more)
    return {"role": "assistant", "content": None, "tool_calls": calls}


def rendered(answer: dict) -> str:
    """The answer's calls as the chat template writes them (what changed_spans searches)."""
    return "".join('<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>'
                   % (c["function"]["name"], json.dumps(json.loads(c["function"]["arguments"])))
                   for c in answer["tool_calls"])


@pytest.mark.parametrize("old, new, changed", [
    ("    if len(args) == 1:\n", "    if len(args) == 2:\n", "2"),
    ("    return a or b\n", "    return a and b\n", "and"),  # shared prefix "a " and suffix " b\n"
    ('    x = "tab\\t"\n', '    x = "tab\\t" + "é"\n', ' + \\"\\u00e9\\"'),  # escaped as JSON writes it
    ("    if n > 0 and m:\n", "    if n > 0:\n", ":"),  # a deletion: the character where the copy must stop
])
def test_the_span_is_the_changed_part_of_new_str_as_rendered(old, new, changed):
    answer = edit_answer(old, new)
    text = rendered(answer)
    (start, end), = changed_spans(text, answer)
    assert text[start:end] == changed


def test_no_span_for_identical_strings_other_tools_or_a_call_not_in_the_text():
    same = edit_answer("a = 1\n", "a = 1\n", call("view", {"path": "m.py"}, 1))
    assert changed_spans(rendered(same), same) == []
    answer = edit_answer("a = 1\n", "a = 2\n")
    assert changed_spans("<tool_call>something else</tool_call>", answer) == []
    # two calls writing the same new_str: each gets its own span
    two = edit_answer("a = 1\n", "a = 2\n", call("str_replace", {"path": "n.py", "old_str": "a = 3\n",
                                                                  "new_str": "a = 2\n"}, 1))
    text = rendered(two)
    spans = changed_spans(text, two)
    assert len(spans) == 2 and spans[0] != spans[1] and all(text[a:b] == "2" for a, b in spans)


def test_final_edits_ignore_samples_without_an_episode():
    loose = {"request": {}, "answer": edit_answer("a", "b")}
    sourced = dict(loose, source={"file": "e1", "step": 3})
    assert final_edits([loose, sourced, loose]) == [1]


def edit_sample(old: str, new: str) -> dict:
    base = samples(2)[1]  # a history with a view and its result
    request = dict(base["request"], tools=base["request"]["tools"] + [EDIT_TOOL])
    return {"request": request, "answer": edit_answer(old, new), "source": {"file": "ep", "step": 2}}


def test_encoded_weights_cover_exactly_the_changed_tokens(tokenizer):
    sample = edit_sample("    return 1\n", "    return 7\n")
    plain = encode_sample(tokenizer, sample)
    weighted = encode_sample(tokenizer, sample, edit_weight=8.0)
    assert plain.answer_weights is None and weighted.answer_ids == plain.answer_ids
    heavy = [t for t, w in zip(weighted.answer_ids, weighted.answer_weights) if w == 8.0]
    assert heavy and "7" in tokenizer.decode(heavy) and "return" not in tokenizer.decode(heavy)
    assert set(weighted.answer_weights) == {1.0, 8.0}
    ids, valid, targets, weights = trainer.collate([weighted, plain], 0, "cpu")
    assert (weights[0] == 8.0).sum() == len(heavy) and bool((weights[1] == 1).all())
    assert bool((weights[0][targets[0] == -100] == 1).all())  # prompt tokens are never weighted


def test_the_weight_lowers_the_changed_tokens_loss_faster(tiny_gguf, tmp_path):
    data = [edit_sample("    return 1\n", "    return 7\n"), samples(2)[0]]
    cfg = dict(loops=2, steps=6, lr=1e-2, lora_rank=4, batch_tokens=2000, gguf=str(tiny_gguf), save_every=100,
               warmup_steps=1)
    for name, weight in (("plain", 1.0), ("heavy", 50.0)):
        trainer.prepare_run(tmp_path / name, trainer.TrainConfig(**cfg, edit_weight=weight), data)
        assert trainer.train(tmp_path / name).finished
    log = [json.loads(line) for line in (tmp_path / "heavy" / "loss.jsonl").read_text().splitlines()]
    assert all(e["emphasized_tokens"] > 0 and e["objective"] != e["loss"] for e in log)
    assert "objective" not in (tmp_path / "plain" / "loss.jsonl").read_text()

    def changed_token_loss(run) -> float:
        tm = trainer.load_trained(run)
        tok_dir = run / "tokenizer"
        from loopcoder.model_server.plt.tokenizer import load_tokenizer
        enc = encode_sample(load_tokenizer(tok_dir), data[0], edit_weight=2.0)
        with torch.no_grad():
            return trainer.batch_loss(tm, *trainer.collate([enc], 0, "cpu")).emphasized

    assert changed_token_loss(tmp_path / "heavy") < changed_token_loss(tmp_path / "plain")
