"""Training on a tiny GGUF: samples rendered as the server renders them, resume equals an uninterrupted run,
the built checkpoint equals the trained model, and bad deltas are one-line errors."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file

from loopcoder.model_server.api.prompts import render_chat
from loopcoder.model_server.api.protocol import ChatCompletionRequest
from loopcoder.model_server.training import trainer
from loopcoder.model_server.training.data import SampleError, encode_sample
from loopcoder.model_server.training.delta import DeltaError, build_default, read_delta

from nano_support import samples, write_tiny_gguf


def config(gguf, **changes):
    fields = dict(loops=2, steps=6, lr=1e-2, lora_rank=4, batch_tokens=800, gguf=str(gguf), save_every=100,
                  warmup_steps=1)
    return trainer.TrainConfig(**{**fields, **changes})


def test_prompt_tokens_are_the_servers_and_the_loss_covers_the_answer_only(tokenizer):
    sample = samples(1)[0]
    enc = encode_sample(tokenizer, sample)
    served = render_chat(tokenizer, ChatCompletionRequest.model_validate(sample["request"]))
    assert enc.prompt_ids == served.token_ids
    answer = tokenizer.decode(enc.answer_ids)
    assert answer == ("f0 is off by one.\n</think>\n\nLooking.<tool_call>\n"
                      '{"name": "view", "arguments": {"path": "m0.py"}}\n</tool_call><|im_end|>')
    ids, valid, targets, weights = trainer.collate([enc], 0, "cpu")
    assert weights is None  # no sample is weighted: the plain mean
    picked = targets[0] != -100
    assert picked.sum() == len(enc.answer_ids) and targets[0][picked].tolist() == enc.answer_ids
    assert picked.nonzero()[0].item() == len(enc.prompt_ids) - 1  # the last prompt token predicts the first answer token


def test_answer_without_thinking_starts_after_the_empty_think_block(tokenizer):
    sample = samples(2)[1]
    enc = encode_sample(tokenizer, sample)
    assert tokenizer.decode(enc.prompt_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tokenizer.decode(enc.answer_ids).startswith("<tool_call>\n")


def test_a_request_the_server_refuses_is_not_a_sample(tokenizer):
    bad = samples(1)[0]
    bad["request"]["tool_choice"] = {"type": "function", "function": {"name": "nope"}}
    with pytest.raises(SampleError, match="server would refuse"):
        encode_sample(tokenizer, bad)


def run_to_end(out, max_minutes=None):
    while True:
        result = trainer.train(out, max_minutes=max_minutes)
        if result.finished:
            return result


def test_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tiny_gguf, tmp_path, monkeypatch, capsys):
    from loopcoder.model_server.training.__main__ import main as runner

    cfg = config(tiny_gguf, steps=4, save_every=100)
    for name in ("whole", "pieces"):
        trainer.prepare_run(tmp_path / name, cfg, samples(4))
    whole = trainer.train(tmp_path / "whole")
    assert whole.finished and whole.step == 4
    # max_minutes=0: every call stops (and saves) after one step; the next one resumes. The state is written
    # in parts (small here), and the calls alternate between the library and the GPU-host runner.
    monkeypatch.setattr(trainer, "STATE_PART_BYTES", 64 * 1024)
    assert not trainer.train(tmp_path / "pieces", max_minutes=0).finished
    assert len(list((tmp_path / "pieces" / "state").glob("part-*"))) > 1
    assert runner([str(tmp_path / "pieces"), "--max-minutes", "0", "--gguf", str(tiny_gguf)]) == 0
    assert "stopped (--max-minutes)" in capsys.readouterr().out
    assert not trainer.train(tmp_path / "pieces", max_minutes=0).finished
    assert trainer.train(tmp_path / "pieces", max_minutes=0).finished
    log = lambda name: [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "tokens_per_s")}
                        for line in (tmp_path / name / "loss.jsonl").read_text().splitlines()]
    assert log("whole") == log("pieces") and len(log("whole")) == 4
    a, b = (load_file(str(tmp_path / n / "delta" / "delta.safetensors")) for n in ("whole", "pieces"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "loss.png").stat().st_size > 1000
    # training moved the loop parts, not only the adapters
    assert float(a["loop_scales.hidden"]) != 0.0
    assert not torch.equal(a["model.layers.0.self_attn.plt_gate.bias"], torch.full((4,), 5.0))


def test_a_corrupt_state_or_another_base_stops_the_run(tiny_gguf, tmp_path):
    run = tmp_path / "run"
    trainer.prepare_run(run, config(tiny_gguf, steps=3), samples(2))
    trainer.train(run, max_minutes=0)
    part = next((run / "state").glob("part-*"))
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(trainer.TrainError, match="incomplete or corrupt"):
        trainer.train(run)
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    with pytest.raises(trainer.TrainError, match="not the GGUF this run started with"):
        trainer.train(run, gguf=other)


def test_a_run_directory_is_not_overwritten(tiny_gguf, tmp_path):
    trainer.prepare_run(tmp_path / "run", config(tiny_gguf), samples(2))
    with pytest.raises(trainer.TrainError, match="already holds a run"):
        trainer.prepare_run(tmp_path / "run", config(tiny_gguf), samples(2))


@pytest.mark.parametrize("loops", [1, 2])
def test_built_checkpoint_equals_the_trained_model(tiny_gguf, tmp_path, loops):
    from loopcoder.model_server.plt.checkpoint import load_checkpoint

    run = tmp_path / "run"
    trainer.prepare_run(run, config(tiny_gguf, loops=loops), samples(6))
    assert trainer.train(run).finished
    trained = trainer.load_trained(run)
    out, manifest = build_default(tmp_path / "built", delta=run / "delta", gguf=tiny_gguf)
    assert manifest["loops"] == loops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built, tok = load_checkpoint(out)
    assert built.num_loops == loops
    ids = torch.tensor([encode_sample(tok, samples(2)[1]).prompt_ids])
    with torch.no_grad():
        want = trained.logits(ids)
        got = built(ids, use_cache=False).logits
    base_model, _ = trainer.build_base_model(loops, torch.float32, str(tiny_gguf))
    with torch.no_grad():
        untrained = base_model(ids, use_cache=False).logits
    assert (want - untrained).abs().max() > 1e-2  # training changed the model
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_bad_deltas_and_a_wrong_base_are_one_line_errors(tiny_gguf, tmp_path):
    run = tmp_path / "run"
    trainer.prepare_run(run, config(tiny_gguf, steps=1), samples(2))
    trainer.train(run)
    delta = run / "delta"
    with pytest.raises(DeltaError, match="no delta in"):
        read_delta(tmp_path / "missing")
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    with pytest.raises(DeltaError, match="has sha256 .* the delta was trained on"):
        build_default(tmp_path / "out", delta=delta, gguf=other)
    broken = tmp_path / "broken"
    shutil.copytree(delta, broken)
    data = bytearray((broken / "delta.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "delta.safetensors").write_bytes(bytes(data))
    with pytest.raises(DeltaError, match="corrupt"):
        read_delta(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(DeltaError, match="not valid JSON"):
        read_delta(broken)


def test_a_run_continued_from_a_delta_starts_exactly_there(tiny_gguf, tmp_path):
    first = tmp_path / "first"
    trainer.prepare_run(first, config(tiny_gguf, steps=3), samples(4))
    assert trainer.train(first).finished
    _, start = read_delta(first / "delta")
    # lr 0: the continued run's delta is its starting point, tensor for tensor
    still = tmp_path / "still"
    trainer.prepare_run(still, config(tiny_gguf, steps=1, lr=0.0, seed=5), samples(2), init_delta=first / "delta")
    assert (still / "init_delta" / "delta.safetensors").is_file()  # the run directory is self-contained
    assert trainer.train(still).finished
    manifest, got = read_delta(still / "delta")
    assert manifest["trained"]["init_delta_sha256"] == read_delta(first / "delta")[0]["tensors_sha256"]
    assert got.keys() == start.keys()
    for name in start:
        torch.testing.assert_close(got[name], start[name], atol=0, rtol=0)
    # a learning rate: it moves on from there, and differs from a fresh start with the same settings
    moved, fresh = tmp_path / "moved", tmp_path / "fresh"
    trainer.prepare_run(moved, config(tiny_gguf, steps=2), samples(2), init_delta=first / "delta")
    trainer.prepare_run(fresh, config(tiny_gguf, steps=2), samples(2))
    trainer.train(moved), trainer.train(fresh)
    m, f = read_delta(moved / "delta")[1], read_delta(fresh / "delta")[1]
    name = next(k for k in start if k.endswith(".lora_B"))
    assert not torch.equal(m[name], start[name]) and not torch.equal(m[name], f[name])
    assert (m[name] - start[name]).abs().max() < (f[name] - start[name]).abs().max()  # near where it started


def test_a_delta_that_does_not_fit_the_run_is_refused_in_one_line(tiny_gguf, tmp_path):
    first = tmp_path / "first"
    trainer.prepare_run(first, config(tiny_gguf, steps=1), samples(2))
    trainer.train(first)
    with pytest.raises(trainer.TrainError, match="trained with loops 2, LoRA rank 4, alpha 32; this run has 1"):
        trainer.prepare_run(tmp_path / "a", config(tiny_gguf, loops=1), samples(2), init_delta=first / "delta")
    assert not (tmp_path / "a").exists()
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    with pytest.raises(trainer.TrainError, match="another base GGUF"):
        trainer.prepare_run(tmp_path / "b", config(other), samples(2), init_delta=first / "delta")
    with pytest.raises(DeltaError, match="no delta in"):
        trainer.prepare_run(tmp_path / "c", config(tiny_gguf), samples(2), init_delta=tmp_path / "missing")
    # the copy in the run is checked when training starts
    run = tmp_path / "d"
    trainer.prepare_run(run, config(tiny_gguf), samples(2), init_delta=first / "delta")
    shutil.copy(run / "init_delta" / "manifest.json", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    m["tensors_sha256"] = "0" * 64
    (run / "init_delta" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DeltaError, match="corrupt"):
        trainer.train(run)
