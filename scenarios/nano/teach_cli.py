"""`loopcoder nano teach`: the teacher's trajectory dataset for LoopCoder-Nano (docs/nano.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def teach_command(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="Training instances (.jsonl); never a held-out file."),
    repos_dir: Optional[Path] = typer.Option(None, "--repos-dir", help="Bundles or bare repositories named OWNER__NAME "
                                             "(default: the bundled mini ones)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder (created; an existing one is resumed)."),
    episodes_per_instance: int = typer.Option(1, "--episodes-per-instance", "-k", min=1, help="Episodes per instance, "
                                              "each with its own seed."),
    thinking_share: float = typer.Option(0.25, "--thinking-share", help="Share of episodes with thinking on."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Episodes at once."),
    wrong_edit_share: Optional[float] = typer.Option(None, "--wrong-edit-share", help="Share of episodes that try a "
                                                     "plausible wrong edit first and recover (default 0.3)."),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="Held-out instances (.jsonl) none of whose ids or "
                                           "repositories may be taught (default: heldout.jsonl beside --dataset)."),
    status: Optional[Path] = typer.Option(None, "--status", help="Also write the counts (Markdown) to this file after "
                                          "every run folder."),
    seed: int = typer.Option(0, "--seed", help="Seed of the episodes' variety and of the thinking draw."),
    instances: list[str] = typer.Option([], "--instances", "-i", help="Only these instance ids (repeatable)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N instances."),
    config: Optional[Path] = typer.Option(None, "--config", help="Agent config (default configs/nano_agent.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override an agent config key, e.g. --set budgets.steps=20"),
    routine: str = typer.Option("varied", "--routine", help="varied: explore and locate in varied ways; direct: "
                                "one routine (tests, find_definition, read down, edit, re-run) for a small model."),
    keep_ungrounded: bool = typer.Option(False, "--keep-ungrounded", help="Also keep resolved episodes with a call "
                                         "naming what its prompt did not show (dropped by default)."),
) -> None:
    """Teacher episodes through `swebench run` (real agent, sandboxes) and eval; keep the resolved trajectories."""
    from loopcoder.scenarios.nano.teach import teach

    counts = teach(dataset, repos_dir, out, episodes_per_instance, thinking_share, workers, seed, config, overrides,
                   instances, limit, wrong_edit_share, heldout=heldout, status=status,
                   keep_ungrounded=keep_ungrounded, routine=routine)
    typer.echo(f"nano teach: kept {counts['kept']} resolved episode(s) of {counts['graded']} graded "
               f"({counts['thinking']} with thinking, {counts['recovered']} with a recovered wrong edit); "
               f"dropped {counts['dropped']}; index {out / 'index.jsonl'}")
