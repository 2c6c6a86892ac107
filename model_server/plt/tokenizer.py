"""Tokenizers for LoopCoder checkpoints: load what a checkpoint ships, or train the small one we ship.

A checkpoint directory holds either ``tokenizer.json`` (fast, byte-level BPE) or a SentencePiece
``tokenizer.model`` (the IQuest tokenizer), plus ``tokenizer_config.json`` with the special tokens and
usually the chat template. The project ships a small byte-level BPE tokenizer (trained here on Python
source that is on every machine with CPython) for tests and the demo checkpoint.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "tiny-tokenizer"

# ChatML special tokens of the IQuest family (plt_spec.md 8.3), then the markup the agent relies on.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                  "<|fim_suffix|>"]
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

# Qwen2.5/IQuest-style ChatML template with tools and an ``enable_thinking`` switch (off by default;
# thinking mode opens a <think> block the model fills before its answer).
CHAT_TEMPLATE = """\
{%- set default_system = 'You are LoopCoder, a helpful coding assistant.' -%}
{%- if messages and messages[0].role == 'system' -%}
{%- set system = messages[0].content -%}{%- set rest = messages[1:] -%}
{%- else -%}{%- set system = default_system -%}{%- set rest = messages -%}{%- endif -%}
<|im_start|>system
{{ system }}
{%- if tools %}{{ '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}<|im_end|>
{% for m in rest -%}
{%- if m.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.role == 'assistant' -%}
<|im_start|>assistant
{% if m.reasoning_content %}<think>
{{ m.reasoning_content }}
</think>

{% endif %}{{ m.content or '' }}
{%- for call in (m.tool_calls or []) %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments if call.function.arguments is string else (call.function.arguments | tojson) }}}
</tool_call>
{%- endfor %}<|im_end|>
{% else -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking %}<think>
{% else %}<think>

</think>

{% endif -%}
{%- endif -%}"""


def load_tokenizer(path: str | Path):
    """Tokenizer of a checkpoint directory (``tokenizer.json`` preferred, else ``tokenizer.model``)."""
    from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    kwargs = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token",
                                     "add_eos_token", "model_max_length") if k in config}
    template_file = path / "chat_template.jinja"
    template = template_file.read_text() if template_file.exists() else config.get("chat_template")
    if (path / "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **kwargs)
        added = config.get("added_tokens_decoder") or {}
        extra = [v["content"] for v in added.values() if v.get("special")]
        if extra:
            tok.add_special_tokens({"additional_special_tokens": extra}, replace_extra_special_tokens=False)
    elif (path / "tokenizer.model").exists():
        # The IQuest tokenizer class lives in remote code; it is a SentencePiece Llama-style tokenizer.
        tok = LlamaTokenizer.from_pretrained(str(path), **kwargs)
    elif config.get("tokenizer_class"):
        tok = AutoTokenizer.from_pretrained(str(path))
    else:
        raise CheckpointError(f"no tokenizer in {path}: expected tokenizer.json or tokenizer.model")
    if template:
        tok.chat_template = template
    return tok


def train_tiny_tokenizer(out_dir: str | Path, sources: list[Path], vocab_size: int = 4096) -> Path:
    """Train a byte-level BPE on ``sources`` and write tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + MARKUP_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train([str(s) for s in sources], trainer)
    tok.save(str(out / "tokenizer.json"))
    write_tokenizer_config(out)
    return out


def write_tokenizer_config(out: Path, model_max_length: int = 131072) -> None:
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def copy_shipped_tokenizer(out_dir: str | Path) -> None:
    """Copy the shipped tiny tokenizer into a checkpoint directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(ASSET_DIR / name, out / name)


def _stdlib_sources(limit_bytes: int = 6_000_000) -> list[Path]:
    """CPython's own Python sources, in sorted order, up to about ``limit_bytes``."""
    import sysconfig

    files, total = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        files.append(f)
        total += f.stat().st_size
        if total >= limit_bytes:
            break
    return files


if __name__ == "__main__":  # regenerate the shipped asset: python -m loopcoder.model_server.plt.tokenizer
    train_tiny_tokenizer(ASSET_DIR, _stdlib_sources())
    print(f"wrote {ASSET_DIR}")
