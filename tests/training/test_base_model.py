"""The Nano base: the SmolLM2 GGUF from the pip package, dequantized, as an iquestpltcoder checkpoint."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from loopcoder.model_server.errors import CheckpointError
from loopcoder.model_server.training import base_model as bm


def test_unpermute_inverts_llama_cpp_permutation():
    # llama.cpp's convert_hf_to_gguf.py permutes q/k rows with exactly this expression
    heads, head_dim, cols = 3, 8, 5
    w = np.arange(heads * head_dim * cols, dtype=np.float32).reshape(heads * head_dim, cols)
    permuted = w.reshape(heads, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(w.shape)
    assert np.array_equal(bm._unpermute(permuted, heads), w)
    assert not np.array_equal(permuted, w)


def test_write_gguf_and_read_gguf_round_trip(tmp_path):
    from nano_support import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "t.gguf", seed=3)
    first = bm.read_gguf(path)
    again = bm.read_gguf(bm.write_gguf(tmp_path / "again.gguf", first))
    assert first.config == again.config and first.tokens == again.tokens and first.merges == again.merges
    assert all(torch.equal(first.weights[k], again.weights[k]) for k in first.weights)
    # the file holds q permuted as llama.cpp writes it: reading unpermutes
    import gguf

    raw = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    q = np.array(raw["blk.0.attn_q.weight"].data)
    assert not np.array_equal(q, first.weights["model.layers.0.self_attn.q_proj.weight"].numpy())
    assert np.array_equal(bm._unpermute(q, 4), first.weights["model.layers.0.self_attn.q_proj.weight"].numpy())


def test_not_a_gguf_is_one_line_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        bm.read_gguf(bad)


@pytest.fixture(scope="module")
def r1_checkpoint(tmp_path_factory):
    return bm.import_base(tmp_path_factory.mktemp("nano") / "r1", loops=1)


@pytest.mark.slow
def test_tokenizer_ends_turns_with_im_end_and_renders_tools(r1_checkpoint):
    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    tok = load_tokenizer(r1_checkpoint)
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|im_end|>") == 2
    tools = [{"type": "function", "function": {"name": "view", "parameters": {"type": "object"}}}]
    text = tok.apply_chat_template([{"role": "user", "content": "hi 2024"}], tools=tools, tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)
    assert "<tools>" in text and '"name": "view"' in text and text.endswith("<|im_start|>assistant\n<think>\n")
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(ids) == text
    # SmolLM2 splits numbers into single digits
    assert len(tok(" 2024", add_special_tokens=False).input_ids) == 5


@pytest.mark.slow
def test_engine_at_one_loop_equals_transformers_llama(r1_checkpoint):
    """Greedy tokens of the project's engine on the imported checkpoint equal LlamaForCausalLM's on the
    same dequantized weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from loopcoder.model_server.engine import EngineConfig, LLMEngine, SamplingParams
    from loopcoder.model_server.plt.checkpoint import load_checkpoint

    base = bm.read_gguf(bm.gguf_path())
    c = dict(base.config)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"], rms_norm_eps=c["rms_norm_eps"],
        rope_theta=c["rope_theta"], max_position_embeddings=c["max_position_embeddings"],
        tie_word_embeddings=True, attn_implementation="eager"))
    missing, unexpected = llama.load_state_dict(base.weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    llama.tie_weights()
    llama.eval()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_checkpoint(r1_checkpoint)
    engine = LLMEngine(model, tok, EngineConfig(model=str(r1_checkpoint), max_num_seqs=2, max_model_len=256,
                                                max_num_batched_tokens=64, block_size=16))
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True, add_generation_prompt=True,
                                       return_dict=False)
               for q in ("def fibonacci(n):", "Fix the off-by-one error in range(1, n).")]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) else list(p) for p in prompts]
    new = 24
    got = engine.generate(prompts, SamplingParams(max_tokens=new, temperature=0, ignore_eos=True))
    for prompt, tokens in zip(prompts, got):
        with torch.no_grad():
            ref = llama.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
        assert tokens == ref
