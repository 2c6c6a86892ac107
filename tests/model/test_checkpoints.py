"""Checkpoints on disk: the released format, Auto-class loading, and one-line errors for bad ones."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

import loopcoder.model_server  # noqa: F401  (registers the model types)
from loopcoder.model_server.errors import CheckpointError, ModelError
from loopcoder.model_server.plt import IQuestLoopCoderForCausalLM, IQuestPLTCoderForCausalLM
from loopcoder.model_server.plt.checkpoint import init_checkpoint, load_checkpoint
from loopcoder.model_server.plt.configuration import IQuestPLTCoderConfig
from loopcoder.model_server.plt.tokenizer import ASSET_DIR, load_tokenizer


@pytest.mark.parametrize("shape,cls", [("tiny", IQuestPLTCoderForCausalLM),
                                        ("iquest-v1-tiny", IQuestLoopCoderForCausalLM)])
def test_sharded_checkpoint_loads_through_auto_classes(tmp_path, shape, cls):
    init_checkpoint(tmp_path, shape, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    config = AutoConfig.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(model) is cls and config.model_type == model.config.model_type
    # the same weights as a fresh model from the same seed
    torch.manual_seed(0)
    fresh = cls(config)
    ids = torch.randint(1, 4096, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, fresh(ids).logits)


def test_released_weight_names(tmp_path):
    init_checkpoint(tmp_path, "tiny")
    names = set(load_file(tmp_path / "model.safetensors"))
    for n in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
              "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
              "model.layers.0.self_attn.plt_gate.weight", "model.layers.0.self_attn.plt_gate.bias",
              "model.layers.0.self_attn.plt_gate.gate_norm.weight"]:
        assert n in names
    v1 = tmp_path / "v1"
    init_checkpoint(v1, "iquest-v1-tiny")
    v1_names = set(load_file(v1 / "model.safetensors"))
    assert "model.gate_projections.1.weight" in v1_names and "model.gate_projections.1.bias" in v1_names
    assert load_file(v1 / "model.safetensors")["model.gate_projections.0.weight"].shape == (4, 16)


def test_bf16_load_keeps_dtype(tmp_path):
    init_checkpoint(tmp_path, "tiny")
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_missing_config_and_missing_shard_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    init_checkpoint(tmp_path / "s", "tiny", max_shard_size="100KB")
    (tmp_path / "s" / "model-00002-of-00006.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing in .*model-00002-of-00006.safetensors"):
        load_checkpoint(tmp_path / "s")
    init_checkpoint(tmp_path / "w", "tiny")
    (tmp_path / "w" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(tmp_path / "w")


def test_unknown_model_type(tmp_path):
    init_checkpoint(tmp_path, "tiny")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "llama4_loop"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown model_type 'llama4_loop'.*supported: iquestpltcoder"):
        load_checkpoint(tmp_path)


def test_missing_and_unexpected_weights_are_listed(tmp_path):
    init_checkpoint(tmp_path, "tiny")
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    weights["model.layers.1.mlp.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        AutoModelForCausalLM.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing weights: model.layers.1.mlp.up_proj.weight" in msg
    assert "unexpected weights: model.layers.1.mlp.extra.weight" in msg


def test_wrong_gate_shape_names_the_mode(tmp_path):
    init_checkpoint(tmp_path, "tiny", plt_gate_use_hidden_states=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["plt_gate_use_hidden_states"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"plt_gate.weight: checkpoint \[4, 16\] vs expected \[4, 64\] "
                                              r"\(the checkpoint holds a query gate"):
        load_checkpoint(tmp_path)


def test_unsupported_rope_scaling_is_clear():
    with pytest.raises(ModelError, match="unsupported rope_scaling type 'dynamic'"):
        IQuestPLTCoderConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})


def test_linear_rope_scaling_changes_positions():
    base = IQuestPLTCoderConfig(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=1, head_dim=16, vocab_size=50)
    scaled = IQuestPLTCoderConfig(**{**base.to_dict(), "rope_parameters": None},
                                  rope_scaling={"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0})
    torch.manual_seed(0)
    a = IQuestPLTCoderForCausalLM(base)
    b = IQuestPLTCoderForCausalLM(scaled)
    b.load_state_dict(a.state_dict())
    pos = torch.arange(8)[None]
    cos_a, _ = a.model.rotary_emb(pos, torch.float32)  # linear factor 2: position p acts as p / 2
    cos_b, _ = b.model.rotary_emb(pos * 2, torch.float32)
    assert torch.allclose(cos_a, cos_b, atol=1e-5)


def test_shipped_tokenizer_is_small_and_round_trips():
    size = sum(f.stat().st_size for f in ASSET_DIR.iterdir())
    assert size < 1_000_000
    tok = load_tokenizer(ASSET_DIR)
    text = "def f(x):\n    return {'ü': x ** 2}  # ✓\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id


def test_chat_template_tools_and_thinking_toggle():
    tok = load_tokenizer(ASSET_DIR)
    tools = [{"type": "function", "function": {"name": "view", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "look"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "view", "arguments": {"path": "a.py"}}}]},
            {"role": "tool", "content": "1: x = 1"}]
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert '<tools>\n{"type": "function", "function": {"name": "view"' in text
    assert '<tool_call>\n{"name": "view", "arguments": {"path": "a.py"}}\n</tool_call><|im_end|>' in text
    assert "<tool_response>\n1: x = 1\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    thinking = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert thinking.endswith("<|im_start|>assistant\n<think>\n")


def test_sentencepiece_tokenizer_model_loads(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"def function_{i}(x): return x * {i}" for i in range(300)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=120,
                                   model_type="bpe", user_defined_symbols=["<|im_start|>", "<|im_end|>"])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "IQuestCoderTokenizer", "eos_token": "<|im_end|>", "add_bos_token": False,
         "chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"}))
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("def function_7(x): return x * 7")
    assert tok.decode(ids).strip() == "def function_7(x): return x * 7"
    assert tok.eos_token == "<|im_end|>"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<|im_start|>hi<|im_end|>"


def test_missing_tokenizer_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_init_in_bfloat16_builds_bf16_weights_and_restores_default_dtype(tmp_path):
    init_checkpoint(tmp_path, "tiny", dtype="bfloat16")
    assert {t.dtype for t in load_file(tmp_path / "model.safetensors").values()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
    model, tok = load_checkpoint(tmp_path)
    assert model.dtype == torch.bfloat16 and tok is not None
