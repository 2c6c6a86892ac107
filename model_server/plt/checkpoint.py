"""Write random checkpoints in the released format, and load checkpoints with errors a user can act on."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError
from .tokenizer import copy_shipped_tokenizer, load_tokenizer

SUPPORTED_MODEL_TYPES = ("iquestpltcoder", "iquestloopcoder")

# Shapes `loopcoder model init --shape` knows. "tiny" is the test/demo model (window smaller than the
# sequences tests use); "loopcoder-v2" is the released 7B shape; "iquest-v1-tiny" the v1 family.
SHAPES: dict[str, dict] = {
    "tiny": dict(
        model_type="iquestpltcoder", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, plt_window_size=[7, 0],
        plt_emb_scale=0.707, plt_hidden_scale=0.053, plt_normalize_per_loop=True,
        plt_gate_use_hidden_states=True, max_position_embeddings=4096,
    ),
    "loopcoder-v2": dict(
        model_type="iquestpltcoder", vocab_size=76800, hidden_size=5120, intermediate_size=27648,
        num_hidden_layers=14, num_attention_heads=40, num_key_value_heads=8, head_dim=128,
        plt_window_size=[64, 0], plt_emb_scale=0.707, plt_hidden_scale=0.053,
        plt_normalize_per_loop=True, plt_gate_use_hidden_states=True, max_position_embeddings=131072,
    ),
    "iquest-v1-tiny": dict(
        model_type="iquestloopcoder", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, loop_num=2, loop_window_size=8,
        max_position_embeddings=4096,
    ),
}


def make_config(shape: str, **overrides):
    """Config object for a named shape (vocab from the shipped tokenizer unless the shape fixes it)."""
    from .configuration import IQuestLoopCoderConfig, IQuestPLTCoderConfig

    if shape not in SHAPES:
        raise CheckpointError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    fields = {**SHAPES[shape], **overrides}
    model_type = fields.pop("model_type")
    fields.setdefault("vocab_size", 4096)
    fields.setdefault("eos_token_id", [2])  # <|im_end|> of the shipped tokenizer
    fields.setdefault("pad_token_id", 0)
    cls = IQuestPLTCoderConfig if model_type == "iquestpltcoder" else IQuestLoopCoderConfig
    return cls(**fields)


def init_checkpoint(out_dir: str | Path, shape: str = "tiny", seed: int = 0, dtype: str = "auto",
                    max_shard_size: str = "5GB", **overrides) -> Path:
    """Write a randomly initialised checkpoint (config.json, safetensors, tokenizer) to ``out_dir``.

    dtype "auto": float32 for the tiny shapes, bfloat16 for loopcoder-v2 (the released dtype; 15 GB
    instead of 30). Weights are created directly in that dtype, so memory peaks at one copy. Every shape
    gets the shipped 4,096-token tokenizer; with the 76,800-entry vocabulary of loopcoder-v2 it encodes
    text into the low ids and decodes ids it does not know as nothing.
    """
    from .configuration import IQuestPLTCoderConfig
    from .modeling import IQuestLoopCoderForCausalLM, IQuestPLTCoderForCausalLM

    out = Path(out_dir)
    config = make_config(shape, **overrides)
    if dtype == "auto":
        dtype = "bfloat16" if shape == "loopcoder-v2" else "float32"
    torch.manual_seed(seed)
    cls = IQuestPLTCoderForCausalLM if isinstance(config, IQuestPLTCoderConfig) else IQuestLoopCoderForCausalLM
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    copy_shipped_tokenizer(out)
    return out


def read_model_type(path: Path) -> str:
    config_file = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if not config_file.exists():
        raise CheckpointError(f"no config.json in {path}: not a checkpoint directory")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"unknown model_type {model_type!r} in {config_file}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def check_weight_files(path: Path) -> None:
    if (path / "model.safetensors").exists():
        return
    index = path / "model.safetensors.index.json"
    if not index.exists():
        raise CheckpointError(f"no weights in {path}: expected model.safetensors or model.safetensors.index.json")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [s for s in shards if not (path / s).exists()]
    if missing:
        raise CheckpointError(f"{index.name} lists shards that are missing in {path}: {', '.join(missing)}")


def load_checkpoint(path: str | Path, dtype: str | torch.dtype = "auto", device: str = "cpu",
                    num_loops: int | None = None, with_tokenizer: bool = True):
    """Load (model, tokenizer) from a checkpoint directory; every problem is one CheckpointError line."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    read_model_type(path)
    check_weight_files(path)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    kwargs = {"num_loops": num_loops} if num_loops else {}
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs).to(device).eval()
    tokenizer = load_tokenizer(path) if with_tokenizer else None
    return model, tokenizer
