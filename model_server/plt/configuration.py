"""Config classes for the two looped-transformer families, and the one normalised view the model uses.

``IQuestPLTCoderConfig`` (model_type ``iquestpltcoder``) is LoopCoder-V2: Parallel Loop Transformer with
cross-loop parallelism (CLP). ``IQuestLoopCoderConfig`` (``iquestloopcoder``) is IQuest LoopCoder v1:
loops run one after another at the same position, no re-injection. Field names equal the checkpoints'
config.json keys (plt_spec.md section 8). ``LoopSpec`` turns either into the handful of numbers the
forward pass needs, so the model code has no per-family branches beyond it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..errors import ModelError

# RoPE types whose inverse frequencies are static (computed once from the config). "dynamic" and
# "longrope" rescale with the running sequence length and are not implemented here.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def _llama_post_init(cfg: PreTrainedConfig) -> None:
    if cfg.head_dim is None:
        cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    if cfg.num_key_value_heads is None:
        cfg.num_key_value_heads = cfg.num_attention_heads
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ModelError(
            f"num_attention_heads ({cfg.num_attention_heads}) must be a multiple of "
            f"num_key_value_heads ({cfg.num_key_value_heads})"
        )
    rope_type = (cfg.rope_parameters or {}).get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelError(
            f"unsupported rope_scaling type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )


@strict
class _LoopCoderBaseConfig(PreTrainedConfig):
    """The Llama fields both families share (defaults: the released shapes), and their validation."""

    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 76800
    hidden_size: int = 5120
    intermediate_size: int = 27648
    num_hidden_layers: int = 14
    num_attention_heads: int = 40
    num_key_value_heads: int | None = 8
    head_dim: int | None = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    attention_bias: bool = False
    # Inference-time override of the loop count (None: the trained count).
    num_loops: int | None = None

    def __post_init__(self, **kwargs):
        if self.rope_parameters is None and "rope_theta" not in kwargs:
            kwargs["rope_theta"] = 500000.0
        super().__post_init__(**kwargs)
        _llama_post_init(self)


@strict
class IQuestPLTCoderConfig(_LoopCoderBaseConfig):
    """LoopCoder-V2 (Parallel Loop Transformer). Defaults are the released 7B shape."""

    model_type = "iquestpltcoder"

    plt_num_loops: int = 2
    plt_window_size: list[int] | tuple[int, int] = (64, 0)
    plt_normalize_per_loop: bool = True
    plt_emb_scale: float | None = None
    plt_hidden_scale: float | None = None
    plt_gate_use_hidden_states: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if len(self.plt_window_size) != 2 or self.plt_window_size[1] != 0 or self.plt_window_size[0] < 0:
            raise ModelError(f"plt_window_size must be [left, 0] with left >= 0, got {list(self.plt_window_size)}")


@strict
class IQuestLoopCoderConfig(_LoopCoderBaseConfig):
    """IQuest LoopCoder v1: the loops run sequentially at the same position, gate from the query."""

    model_type = "iquestloopcoder"

    num_hidden_layers: int = 80
    loop_num: int = 2
    loop_window_size: int = 64

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.loop_window_size < 1:
            raise ModelError(f"loop_window_size must be >= 1, got {self.loop_window_size}")


@dataclass(frozen=True)
class LoopSpec:
    """What the forward pass needs to know about the loops, family differences resolved.

    window: keys the local branch sees, the current token included (PLT: plt_window_size[0] + 1, as the
    vendor fork and its flash-attn training window (64, 0) imply; v1: loop_window_size).
    clp: loop r >= 1 at position t takes a*E_t + b*H^{r-1}_{t-1} (PLT) instead of H^{r-1}_t (v1).
    """

    trained_loops: int
    num_loops: int
    window: int
    clp: bool
    emb_scale: float
    hidden_scale: float
    normalize_per_loop: bool
    gate_from_hidden: bool

    @classmethod
    def from_config(cls, config: PreTrainedConfig, num_loops: int | None = None, warn: bool = True) -> "LoopSpec":
        # By model_type too: SGLang hands over the checkpoint's own config class (remote code).
        model_type = getattr(config, "model_type", None)
        if isinstance(config, IQuestPLTCoderConfig) or model_type == IQuestPLTCoderConfig.model_type:
            trained = config.plt_num_loops
            spec = dict(
                window=int(config.plt_window_size[0]) + 1,
                clp=True,
                emb_scale=1.0 if config.plt_emb_scale is None else float(config.plt_emb_scale),
                hidden_scale=1.0 if config.plt_hidden_scale is None else float(config.plt_hidden_scale),
                normalize_per_loop=bool(getattr(config, "plt_normalize_per_loop", True)),
                gate_from_hidden=bool(getattr(config, "plt_gate_use_hidden_states", False)),
            )
        elif isinstance(config, IQuestLoopCoderConfig) or model_type == IQuestLoopCoderConfig.model_type:
            trained = config.loop_num
            spec = dict(
                window=int(config.loop_window_size), clp=False, emb_scale=1.0, hidden_scale=1.0,
                normalize_per_loop=False, gate_from_hidden=False,
            )
        else:
            raise ModelError(f"not a looped-coder config: {type(config).__name__}")
        loops = num_loops or getattr(config, "num_loops", None) or trained
        if loops < 1:
            raise ModelError(f"num_loops must be >= 1, got {loops}")
        if loops != trained and warn:
            warnings.warn(
                f"running {loops} loops but the checkpoint was trained with {trained}; "
                "outputs are outside what the model was trained for",
                stacklevel=3,
            )
        return cls(trained_loops=trained, num_loops=loops, **spec)
