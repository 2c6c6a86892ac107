"""`loopcoder swebench eval | dataset`: grade predictions, list and check datasets."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

swebench_app = typer.Typer(help="SWE-bench: datasets and grading (offline with the bundled mini dataset).",
                           no_args_is_help=True)
console = Console(stderr=True)
out = Console()

DATASET_OPT = typer.Option("mini", "--dataset", "-d", help="mini (bundled), a .json/.jsonl/.parquet file, or a Hub name.")
SPLIT_OPT = typer.Option("test", "--split", help="Split of a Hub dataset.")
INSTANCES_OPT = typer.Option([], "--instances", "-i", help="Instance ids (repeatable; default: all).")
CONFIG_OPT = typer.Option(None, "--config", help="SWE-bench config YAML (default: configs/swebench.yaml).")
SET_OPT = typer.Option([], "--set", help="Override a config key, e.g. --set grading.timeout_s=600")
STYLE = {"resolved": "green", "unresolved": "yellow", "grading_conflict": "bold magenta", "suspicious": "bold red",
         "empty_patch": "dim", "infra_failure": "red"}


def _load(dataset: str, split: str, instances: list[str]):
    from loopcoder.scenarios.swebench.dataset import load_dataset

    return load_dataset(dataset, split, instances or None)


@swebench_app.command("eval")
def eval_command(
    predictions: Optional[Path] = typer.Option(None, "--predictions", "-p", help="Predictions .jsonl/.json (official format)."),
    dataset: str = DATASET_OPT,
    split: str = SPLIT_OPT,
    gold: bool = typer.Option(False, "--gold", help="Grade the dataset's own patches (model name 'gold')."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id (default: a timestamp)."),
    instances: list[str] = INSTANCES_OPT,
    output: Path = typer.Option(Path("swebench_runs"), "--output", "-o", help="Run directory (logs/, reports)."),
    images: Optional[str] = typer.Option(None, "--images", help="build (offline) | official (published images)."),
    repos_dir: Optional[Path] = typer.Option(None, "--repos-dir", help="Bare repositories or bundles named OWNER__NAME."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per eval script (grading.timeout_s)."),
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """Grade predictions: fresh checkout and container per instance, log parser AND JUnit XML must agree."""
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.scenarios.swebench.batch import evaluate_batch
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.errors import DatasetError
    from loopcoder.scenarios.swebench.evaluation import EvalContext
    from loopcoder.scenarios.swebench.predictions import gold_predictions, load_predictions

    if gold == (predictions is not None):
        raise DatasetError("give exactly one of --predictions FILE and --gold")
    overrides = list(set_)
    if images:
        overrides.append(f"images={images}")
    if timeout:
        overrides.append(f"grading.timeout_s={timeout}")
    cfg = load_swebench_config(config, overrides)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise DatasetError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    insts = _load(dataset, split, instances)
    preds = gold_predictions(insts) if gold else load_predictions(predictions)
    todo = [i for i in insts if i["instance_id"] in preds]
    if not todo:
        raise DatasetError("no prediction matches an instance of the dataset")
    ctx = EvalContext(cfg, load_runtime_config(), connect_docker(), output, run_id, repos_dir=repos_dir)
    plain = not sys.stderr.isatty()
    done = 0

    def on_result(r) -> None:
        nonlocal done
        done += 1
        why = f" ({r.infra_reason})" if r.infra_reason else ""
        console.print(f"[{done}/{len(todo)}] {r.instance_id}: [{STYLE[r.status]}]{r.status}[/]{why} "
                      f"in {r.seconds:.1f} s" + (f" - {r.detail}" if r.detail and r.status != "resolved" else ""),
                      highlight=False)

    with console.status(f"grading {len(todo)} instance(s)") as status:
        def progress(line: str) -> None:
            if plain:
                return
            status.update(line[:100])

        report = evaluate_batch(insts, preds, ctx, progress=progress, on_result=on_result)
    table = Table("status", "instances")
    for name, n in sorted(report.counts.items()):
        table.add_row(f"[{STYLE[name]}]{name}[/]", str(n))
    out.print(table)
    out.print(f"resolved {report.counts['resolved']}/{len(report.results)}; reports: {report.report}"
              + (f", {report.official_report}" if report.official_report else ""))


@swebench_app.command("dataset")
def dataset_command(
    dataset: str = DATASET_OPT,
    split: str = SPLIT_OPT,
    instances: list[str] = INSTANCES_OPT,
    check_repos: bool = typer.Option(False, "--check-repos", help="Also check each base commit is in its repository "
                                     "source and that the source holds nothing after it."),
    repos_dir: Optional[Path] = typer.Option(None, "--repos-dir", help="Bare repositories or bundles named OWNER__NAME."),
    config: Optional[Path] = CONFIG_OPT,
    set_: list[str] = SET_OPT,
) -> None:
    """List a dataset's instances and check them (fields, environment spec, optionally repositories)."""
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.dataset import summarize
    from loopcoder.scenarios.swebench.environment import resolve_environment

    cfg = load_swebench_config(config, set_)
    insts = _load(dataset, split, instances)
    table = Table("instance", "repo", "version", "style", "F2P", "P2P", "log parser", "repository")
    for inst, row in zip(insts, summarize(insts)):
        env = resolve_environment(inst, cfg)
        repo_note = "-"
        if check_repos:
            from loopcoder.scenarios.swebench.repos import check_repository

            repo_note = check_repository(inst, repos_dir or cfg.repos_dir)
        table.add_row(row["instance_id"], row["repo"], row["version"], row["style"], str(row["fail_to_pass"]),
                      str(row["pass_to_pass"]), env.log_parser, repo_note)
    out.print(table)
    out.print(f"{len(insts)} instance(s) valid")
