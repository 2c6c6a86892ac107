"""Helpers of the training tests: a tiny Llama GGUF (random weights, the shipped tiny tokenizer) and samples."""
from __future__ import annotations

import json
from pathlib import Path

from loopcoder.model_server.plt.tokenizer import ASSET_DIR, SPECIAL_TOKENS
from loopcoder.model_server.training.base_model import random_model, write_gguf

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048)


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF (random float32 weights, tied embeddings) with the shipped 4,096-token tokenizer."""
    tok = json.loads((ASSET_DIR / "tokenizer.json").read_text())
    tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    types = [3 if t in SPECIAL_TOKENS else 1 for t in tokens]
    return write_gguf(path, random_model(TINY, tokens, types, merges, seed=seed))


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
