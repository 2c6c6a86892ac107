"""`loopcoder nano synth`: SWE-bench tasks synthesized from real packages for LoopCoder-Nano."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

nano_app = typer.Typer(help="LoopCoder-Nano: task synthesis.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@nano_app.command("synth")
def synth_command(
    out: Path = typer.Option(Path("nanodata"), "--out", "-o", help="Dataset folder (train.jsonl, heldout.jsonl, "
                             "repos/, manifest.json, STATUS.md)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Recipe YAML (default: the shipped one)."),
    packages: list[str] = typer.Option([], "--package", "-p", help="Only these packages (repeatable)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Work folder kept between runs (default: OUT/work)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="sdist cache (default: OUT/cache)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=8, help="Packages validated at once."),
    seed: int = typer.Option(0, "--seed", help="Seed of the mutant order and the problem-statement templates."),
    max_fail: int = typer.Option(10, "--max-fail", min=1, help="Most failing tests a kept mutant may cause."),
) -> None:
    """Inject AST-mutation bugs into the recipe's packages, keep those the tests catch, write SWE-bench instances.

    Resumable: every validated mutant is appended to OUT/work/<package>/results.jsonl; a rerun skips them.
    """
    from loopcoder.scenarios.nano.synth import Synthesizer, load_recipe

    rec = load_recipe(recipe)
    synth = Synthesizer(rec, out, work or out / "work", cache or out / "cache", seed=seed, max_fail=max_fail,
                        progress=lambda line: console.print(line, markup=False, highlight=False))
    manifest = synth.run(packages or None, jobs=jobs)
    v = manifest["validation"]
    console.print(f"{manifest['counts']['train']} training and {manifest['counts']['heldout']} held-out instances "
                  f"in {out}; {v['validated']} mutants validated in {v['seconds']} s", markup=False)
    if manifest["errors"]:
        raise typer.Exit(1)


@nano_app.command("subset")
def subset_command(
    source: Path = typer.Option(Path("nanodata"), "--from", help="A dataset folder written by `nano synth`."),
    dest: Path = typer.Option(Path("scenarios/nano/data"), "--to", help="Where the subset goes."),
    count: int = typer.Option(8, "--count", "-n", min=1, help="Instances."),
    max_bundle_kb: int = typer.Option(200, "--max-bundle-kb", min=1, help="Largest bundle taken."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Copy a few held-out instances (and their bundles) into a small dataset, e.g. the bundled one."""
    from loopcoder.scenarios.nano.synth import write_subset

    rows = write_subset(source, dest, count, max_bundle_kb * 1000, seed)
    console.print(f"{len(rows)} held-out instances ({', '.join(sorted({r['nano']['package'] for r in rows}))}) "
                  f"in {dest}", markup=False)


from loopcoder.scenarios.nano.teach_cli import teach_command  # noqa: E402

nano_app.command("teach")(teach_command)
