"""Helpers of the training tests: a tiny Llama GGUF (random weights, the shipped tiny tokenizer) and samples."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loopcoder.model_server.plt.tokenizer import ASSET_DIR, SPECIAL_TOKENS

HIDDEN, HEADS, KV_HEADS, INTER, LAYERS = 64, 4, 2, 128, 2


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py q/k permutation (what the importer undoes)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF (float32 tensors, tied embeddings) with the shipped 4,096-token tokenizer."""
    import gguf

    tok = json.loads((ASSET_DIR / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    rng = np.random.default_rng(seed)

    def rnd(*shape, std=0.08):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(2048)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in tokens])
    w.add_token_merges(merges)
    head_dim = HIDDEN // HEADS
    w.add_tensor("token_embd.weight", rnd(len(tokens), HIDDEN, std=0.5))
    w.add_tensor("output_norm.weight", 1 + rnd(HIDDEN, std=0.1))
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", 1 + rnd(HIDDEN, std=0.1))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", 1 + rnd(HIDDEN, std=0.1))
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(rnd(HEADS * head_dim, HIDDEN), HEADS))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(rnd(KV_HEADS * head_dim, HIDDEN), KV_HEADS))
        w.add_tensor(f"blk.{i}.attn_v.weight", rnd(KV_HEADS * head_dim, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_output.weight", rnd(HIDDEN, HEADS * head_dim))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rnd(INTER, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rnd(INTER, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rnd(HIDDEN, INTER))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


TOOLS = [{"type": "function", "function": {"name": "view", "description": "Show a file.",
                                           "parameters": {"type": "object",
                                                          "properties": {"path": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "submit", "description": "Submit.",
                                           "parameters": {"type": "object", "properties": {}}}}]


def call(name: str, args: dict, i: int = 0) -> dict:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def samples(n: int = 6) -> list[dict]:
    """``n`` small request/answer pairs, thinking on and off, with tool calls and history."""
    out = []
    for i in range(n):
        history = [{"role": "system", "content": "You fix bugs."},
                   {"role": "user", "content": f"Task {i}: the function f{i} returns {i} instead of {i + 1}."}]
        if i % 2:
            history += [{"role": "assistant", "content": None, "tool_calls": [call("view", {"path": f"m{i}.py"}, i)]},
                        {"role": "tool", "tool_call_id": f"call_{i}", "content": f"def f{i}():\n    return {i}\n"}]
        answer = {"role": "assistant", "content": "Looking." if i % 3 == 0 else None,
                  "tool_calls": [call("submit", {}) if i % 2 else call("view", {"path": f"m{i}.py"})]}
        thinking = i % 2 == 0
        if thinking and i % 4 == 0:
            answer["reasoning_content"] = f"f{i} is off by one."
        out.append({"request": {"model": "m", "messages": history, "tools": TOOLS, "max_tokens": 64,
                                "temperature": 0.0, "chat_template_kwargs": {"enable_thinking": thinking}},
                    "answer": answer})
    return out
