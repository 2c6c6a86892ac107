"""`loopcoder swebench eval | dataset`: grade predictions, list and check datasets."""
from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

swebench_app = typer.Typer(help="SWE-bench: run the agent on instances, grade predictions, reports (offline with the "
                           "bundled mini dataset).",
                           no_args_is_help=True)
# soft_wrap: long lines stay whole in logs and pipes (rich would cut them at 80 columns there)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

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
    from loopcoder.scenarios.swebench.report import write_report

    out.print(f"report: {write_report(output, run_id)}")


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


# -- the run side: agent episodes in batches ---------------------------------------------------------

from loopcoder.scenarios.agent_cli import (  # noqa: E402 -- the agent's own option definitions, shared
    AGENT_CONFIG_OPT, AGENT_SET_OPT, BUDGET_COST_OPT, BUDGET_INPUT_OPT, BUDGET_OUTPUT_OPT, BUDGET_STEPS_OPT,
    BUDGET_WALL_OPT, CHECKPOINT_OPT, MODE_OPT, MODEL_OPT, MODEL_URL_OPT, THINKING_OPT,
)

from loopcoder.scenarios.swebench.rundir import RunDir  # noqa: E402

RUNS_DIR = Path("swebench_runs")
RUN_STATE_STYLE = {"done": "green", "failed": "red", "interrupted": "yellow"}


def select_instances(insts: list[dict], pattern: Optional[str]) -> list[dict]:
    """The instances whose id matches ``pattern`` (re.search), all when None; DatasetError when none does."""
    from loopcoder.scenarios.swebench.errors import DatasetError

    if pattern is None:
        return insts
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"--filter {pattern!r} is not a regular expression: {exc}") from None
    chosen = [i for i in insts if rx.search(i["instance_id"])]
    if not chosen:
        raise DatasetError(f"--filter {pattern!r} matches no instance of the dataset")
    return chosen


def _instance_ids(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@swebench_app.command("run")
def run_command(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="mini (bundled; the default), a "
                                          ".json/.jsonl/.parquet file, or a Hub name. --resume: the run's own."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a Hub dataset (default test; --resume: the "
                                        "run's own)."),
    instances: list[str] = typer.Option([], "--instances", "-i", help="Instance ids (repeatable or comma-separated; "
                                        "--resume without -i/--filter: the run's own selection)."),
    filter_: Optional[str] = typer.Option(None, "--filter", help="Regular expression on instance ids."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="Instances at once (default run.workers)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output: every instance without a "
                                "prediction runs (again)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder (default swebench_runs/<run id>)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id (default: a timestamp)."),
    executor: str = typer.Option("local", "--executor", help="local (threads) | ray (Ray tasks)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster (default: start a local Ray)."),
    images: Optional[str] = typer.Option(None, "--images", help="build (offline) | official (published images)."),
    repos_dir: Optional[Path] = typer.Option(None, "--repos-dir", help="Bare repositories or bundles named OWNER__NAME "
                                             "(default: the bundled ones; missing ones are cloned, run.clone_url)."),
    evaluate: bool = typer.Option(False, "--eval/--no-eval", help="Grade the predictions in the run folder afterwards."),
    model_url: Optional[str] = MODEL_URL_OPT,
    model: Optional[str] = MODEL_OPT,
    thinking: Optional[bool] = THINKING_OPT,
    mode: Optional[str] = MODE_OPT,
    budget_steps: Optional[int] = BUDGET_STEPS_OPT,
    budget_input_tokens: Optional[int] = BUDGET_INPUT_OPT,
    budget_output_tokens: Optional[int] = BUDGET_OUTPUT_OPT,
    budget_wall_time: Optional[float] = BUDGET_WALL_OPT,
    budget_cost: Optional[float] = BUDGET_COST_OPT,
    checkpoint: Optional[Path] = CHECKPOINT_OPT,
    config: Optional[Path] = AGENT_CONFIG_OPT,
    overrides: list[str] = AGENT_SET_OPT,
    swebench_config: Optional[Path] = typer.Option(None, "--swebench-config", help="SWE-bench config YAML."),
    swebench_set: list[str] = typer.Option([], "--swebench-set", help="Override a SWE-bench config key, e.g. "
                                           "--swebench-set run.clone_url=null"),
    runtime_set: list[str] = typer.Option([], "--runtime-set", help="Override a runtime config key (configs/"
                                          "runtime.yaml), e.g. --runtime-set sandbox.backend=local "
                                          "--runtime-set local.allow=true (no Docker: unconfined, docs/nano.md)"),
) -> None:
    """Run the agent on instances (checkout, environment image, sandbox, episode) and write preds.jsonl."""
    from loopcoder.scenarios.agent_cli import agent_config_from_options

    cfg_agent = agent_config_from_options(config, overrides, model_url=model_url, model=model, mode=mode,
                                          thinking=thinking, budget_steps=budget_steps,
                                          budget_input_tokens=budget_input_tokens,
                                          budget_output_tokens=budget_output_tokens,
                                          budget_wall_time=budget_wall_time, budget_cost=budget_cost)
    code = run_swebench(dataset=dataset, split=split, instance_ids=_instance_ids(instances), pattern=filter_,
                        workers=workers, resume=resume, output=output, run_id=run_id, executor=executor,
                        ray_address=ray_address, images=images, repos_dir=repos_dir, evaluate=evaluate,
                        agent_cfg=cfg_agent, checkpoint=checkpoint, swebench_config=swebench_config,
                        swebench_set=swebench_set, runtime_set=runtime_set)
    if code:
        raise typer.Exit(code)


def run_swebench(*, dataset: Optional[str], split: Optional[str], instance_ids: list[str], pattern: Optional[str],
                 workers: Optional[int],
                 resume: bool, output: Optional[Path], run_id: Optional[str], executor: str,
                 ray_address: Optional[str], images: Optional[str], repos_dir: Optional[Path], evaluate: bool,
                 agent_cfg, checkpoint: Optional[Path], swebench_config: Optional[Path], swebench_set: list[str],
                 summary_title: Optional[str] = None, max_model_len: Optional[int] = None,
                 runtime_set: tuple[str, ...] | list[str] = ()) -> int:
    """The whole run: select, (start the embedded server,) run the batch, optionally grade, write the report.
    Returns the exit status (0, or 130 after Ctrl-C)."""
    from loopcoder.agent import ModelClient
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.scenarios.agent_cli import printable, start_embedded_server
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.episode import RunSpec
    from loopcoder.scenarios.swebench.errors import DatasetError
    from loopcoder.scenarios.swebench.report import write_report
    from loopcoder.scenarios.swebench.rundir import now
    from loopcoder.scenarios.swebench.runner import RunDisplay, run_batch

    if executor not in ("local", "ray"):
        raise DatasetError(f"--executor {executor!r}: use local or ray")
    if ray_address and executor != "ray":
        raise DatasetError("--ray-address needs --executor ray")
    overrides = list(swebench_set) + ([f"images={images}"] if images else [])
    cfg = load_swebench_config(swebench_config, overrides)
    runtime_cfg = load_runtime_config(overrides=list(runtime_set))
    if runtime_cfg.sandbox.backend != "docker" and evaluate:
        raise DatasetError("--eval grades in Docker only; run without --eval here, then `loopcoder swebench eval` "
                           "on a machine with Docker")
    if runtime_cfg.sandbox.backend != "docker" and cfg.images == "official":
        raise DatasetError("--images official needs Docker; sandbox.backend local runs without images")
    if resume and output is None:
        raise DatasetError("--resume needs the --output folder of the run to continue")
    if resume:
        recorded = RunDir(output).read_meta()
        if not recorded:
            raise DatasetError(f"nothing to resume: {output / 'run.json'} does not exist")
        run_id = recorded["run_id"]
        # Continue what was started: its dataset, split and selection unless given again.
        dataset = dataset or recorded.get("dataset")
        split = split or recorded.get("split")
        if not instance_ids and pattern is None:
            instance_ids = list(recorded.get("instances") or [])
    dataset, split = dataset or "mini", split or "test"
    insts = select_instances(_load(dataset, split, instance_ids), pattern)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise DatasetError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    out_dir = output or RUNS_DIR / run_id
    rd = RunDir(out_dir)
    if not resume and rd.exists():
        raise DatasetError(f"{out_dir} already holds a run; pass --resume to continue it, or a new --output")
    workers = workers or cfg.run.workers
    local_ray = executor == "ray" and not ray_address
    if executor == "local" or local_ray:  # paths the workers see are this machine's: make them absolute
        cfg.run.repo_cache = cfg.run.repo_cache.resolve()
        repos_dir = repos_dir.resolve() if repos_dir else (cfg.repos_dir.resolve() if cfg.repos_dir else None)
    server = None
    summary = None
    try:
        if not agent_cfg.model.url:
            if ray_address:
                raise DatasetError("the embedded model server listens on 127.0.0.1 of this machine only; with "
                                   "--ray-address give --model-url reachable from the cluster's nodes")
            server = start_embedded_server(checkpoint or agent_cfg.default_checkpoint, max_model_len or 4096)
            agent_cfg.model.url = server.url + "/v1"
        model_name = ModelClient(agent_cfg.model).name  # asks /v1/models once; an unreachable server: one line
        agent_cfg.model.name = model_name
        rd.check_start(model_name, resume)
        spec = RunSpec(run_id=run_id, model_name_or_path=model_name, agent=agent_cfg.model_dump(mode="json"),
                       swebench=cfg.model_dump(mode="json"), runtime=runtime_cfg.model_dump(mode="json"),
                       repos_dir=str(repos_dir) if repos_dir else None)
        # The executor first (Docker, Ray): if it cannot start, no run folder is left behind.
        if executor == "ray":
            from loopcoder.scenarios.swebench.executors import RayExecutor

            with console.status("starting Ray" if local_ray else f"connecting to Ray at {ray_address}"):
                runner = RayExecutor(spec, workers, ray_address, cfg.run.ray_num_cpus)
        else:
            from loopcoder.scenarios.swebench.executors import LocalExecutor

            runner = LocalExecutor(spec, workers, rd.instance_dir)
        try:
            recorded_dataset = str(Path(dataset).resolve()) if Path(dataset).is_file() else str(dataset)
            meta = rd.start({"run_id": run_id, "dataset": recorded_dataset, "split": split, "created": now(),
                             "model_name_or_path": model_name, "model_url": agent_cfg.model.url,
                             "executor": executor, "ray_address": ray_address, "workers": workers,
                             "images": cfg.images, "sandbox": runtime_cfg.sandbox.backend,
                             "instances": [i["instance_id"] for i in insts]}, resume)
        except BaseException:
            runner.close()
            raise
        already = len([i for i in insts if i["instance_id"] in rd.predictions()])
        console.print(f"run {meta['run_id']}: {len(insts)} instance(s)"
                      + (f", {already} already done" if already else "")
                      + f", model {printable(model_name)} at {printable(agent_cfg.model.url)}, {workers} worker(s), "
                      f"executor {executor}; folder {printable(str(out_dir))}", highlight=False)
        summary = run_batch(insts, model_name, rd, runner, RunDisplay(len(insts), already, console))
    finally:
        if server is not None:
            server.stop()
    preds = rd.predictions()
    states = Counter(s.state for s in rd.statuses() if s.instance_id in {i["instance_id"] for i in insts})
    failures = summary.failures
    out.print(f"{summary_title or 'run'} {run_id}: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
              + (" (failed: " + ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) + ")" if failures else "")
              + f"; predictions {len([i for i in insts if i['instance_id'] in preds])}/{len(insts)} in {rd.preds_path}",
              markup=False, highlight=False)
    report_run_id = None
    if evaluate and not summary.interrupted:
        evaluated = [i for i in insts if i["instance_id"] in preds]
        if evaluated:
            _evaluate_run(evaluated, preds, cfg, runtime_cfg, out_dir, run_id, repos_dir)
            report_run_id = run_id
        else:
            out.print("nothing to grade: no instance has a prediction", markup=False, highlight=False)
    report = write_report(out_dir, report_run_id)
    out.print(f"report: {report}", markup=False, highlight=False)
    return 130 if summary.interrupted else 0


def _evaluate_run(insts: list[dict], preds: dict, cfg, runtime_cfg, out_dir: Path, run_id: str,
                  repos_dir: Optional[Path]):
    from loopcoder.scenarios.agent_cli import printable
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.scenarios.swebench.batch import evaluate_batch
    from loopcoder.scenarios.swebench.evaluation import EvalContext

    ctx = EvalContext(cfg, runtime_cfg, connect_docker(), out_dir, run_id, repos_dir=repos_dir)
    n = 0

    def on_result(r) -> None:
        nonlocal n
        n += 1
        why = f" ({r.infra_reason})" if r.infra_reason else ""
        console.print(f"[{n}/{len(insts)}] eval {printable(r.instance_id)}: [{STYLE[r.status]}]{r.status}[/]{why}", highlight=False)

    with console.status(f"grading {len(insts)} prediction(s)"):
        report = evaluate_batch(insts, preds, ctx, on_result=on_result)
    out.print(f"eval {run_id}: resolved {report.counts['resolved']}/{len(report.results)} ("
              + ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) + f"); {report.report}",
              markup=False, highlight=False)
    return report


@swebench_app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="A run folder (swebench run --output, or swebench eval --output)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Which evaluation to show (default: the newest)."),
) -> None:
    """Write the static HTML report of a run folder (report.html, one page per trajectory)."""
    from loopcoder.scenarios.swebench.errors import DatasetError
    from loopcoder.scenarios.swebench.report import write_report

    if not run_dir.is_dir():
        raise DatasetError(f"run folder not found: {run_dir}")
    path = write_report(run_dir, run_id)
    out.print(f"report: {path}", markup=False, highlight=False)


DEMO_INSTANCE = "r1chardj0n3s__parse-162"
# `swebench demo --nano`: a held-out synthesized instance (a package no training task came from); the one of the
# 8 bundled that the shipped R=2 delta resolves (docs/nano.md, "Shipped deltas").
NANO_DEMO_INSTANCE = "andialbrecht__sqlparse.synth-0039c39411"
NANO_CHECKPOINT = Path(".cache/nano")
NANO_CONTEXT = 8192  # SmolLM2's max_position_embeddings


def ensure_nano_checkpoint(path: Path) -> Path:
    """The Nano checkpoint the embedded server loads: built from the GGUF and the shipped delta on first use,
    and again whenever the shipped delta changes (its tensors' sha256 is kept beside the checkpoint)."""
    from loopcoder.model_server.training.delta import MANIFEST, SHIPPED, build_default

    stamp = path / "delta.sha256"
    shipped = json.loads((SHIPPED / MANIFEST).read_text())["tensors_sha256"]
    if not (path / "config.json").exists() or not stamp.exists() or stamp.read_text().strip() != shipped:
        with console.status(f"building LoopCoder-Nano into {path} (GGUF + shipped delta)"):
            _, manifest = build_default(path)
        stamp.write_text(shipped + "\n")
        console.print(f"built LoopCoder-Nano ({manifest['loops']} loops) into {path}")
    return path


@swebench_app.command("demo")
def demo_command(
    instance: str = typer.Option(DEMO_INSTANCE, "--instance", "-i", help="A bundled mini instance."),
    model_url: Optional[str] = MODEL_URL_OPT,
    model: Optional[str] = MODEL_OPT,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="New run folder (default .cache/swebench-demo/<time>)."),
    overrides: list[str] = AGENT_SET_OPT,
    nano: bool = typer.Option(False, "--nano", help="LoopCoder-Nano (built from the pip package's GGUF and the "
                              "shipped delta on first use) on a bundled held-out synthesized instance, with the "
                              "Nano agent config (configs/nano_agent.yaml)."),
) -> None:
    """One bundled SWE-bench instance end to end (run, eval, HTML report); the embedded tiny model by default."""
    from loopcoder.scenarios.agent_cli import agent_config_from_options
    from loopcoder.scenarios.swebench.report import latest_eval

    started = time.monotonic()
    checkpoint, dataset, repos_dir, max_model_len = None, "mini", None, None
    if nano:
        from loopcoder.scenarios import nano as nano_data
        from loopcoder.scenarios.nano.teach import NANO_AGENT_CONFIG

        instance = NANO_DEMO_INSTANCE if instance == DEMO_INSTANCE else instance
        dataset, repos_dir, max_model_len = str(nano_data.HELDOUT), nano_data.REPOS, NANO_CONTEXT
        cfg = agent_config_from_options(NANO_AGENT_CONFIG, overrides, model_url=model_url, model=model)
        if not cfg.model.url:
            checkpoint = ensure_nano_checkpoint(NANO_CHECKPOINT)
    else:
        # A random tiny model writes noise: short answers and few steps keep the demo to a few minutes on a CPU.
        cfg = agent_config_from_options(None, overrides, model_url=model_url, model=model,
                                        defaults=("model.max_tokens=128", "budgets.steps=12"))
    embedded = not cfg.model.url
    run_id = "demo-" + time.strftime("%Y%m%d-%H%M%S")
    out_dir = output or Path(".cache/swebench-demo") / run_id
    code = run_swebench(dataset=dataset, split="test", instance_ids=[instance], pattern=None, workers=1, resume=False,
                        output=out_dir, run_id=run_id, executor="local", ray_address=None, images=None,
                        repos_dir=repos_dir, evaluate=True, agent_cfg=cfg, checkpoint=checkpoint,
                        swebench_config=None, swebench_set=[], summary_title="demo run", max_model_len=max_model_len)
    if code:
        raise typer.Exit(code)
    evaluation = latest_eval(out_dir, run_id) or {}
    verdict = next((r for r in evaluation.get("instances", []) if r["instance_id"] == instance), None)
    if verdict is None:
        status = next((s for s in RunDir(out_dir).statuses() if s.instance_id == instance), None)
        why = f"{status.state}: {status.reason} {status.detail}".strip() if status else "it did not run"
        out.print(f"RESULT: {instance} was NOT resolved: the agent produced no prediction ({why}).",
                  markup=False, highlight=False)
    elif verdict["status"] == "resolved":
        out.print(f"RESULT: {instance} was RESOLVED: the model's patch makes the failing tests pass and keeps the "
                  f"passing ones passing (log parser and JUnit XML agree).", markup=False, highlight=False)
    else:
        why = verdict["status"] + (f" ({verdict['infra_reason']})" if verdict.get("infra_reason") else "")
        detail = f": {verdict['detail']}" if verdict.get("detail") else ""
        out.print(f"RESULT: {instance} was NOT resolved - {why}{detail}.", markup=False, highlight=False)
    out.print(f"time: {time.monotonic() - started:.0f} s in all (model build, server start, agent, grading)",
              markup=False, highlight=False)
    if embedded and not nano:
        out.print("The embedded model is a tiny checkpoint with RANDOM weights: it cannot fix bugs, so this result is "
                  "expected. The demo shows the machinery end to end (isolated checkout, environment image, agent in "
                  "a sandbox, patch, grading, report); give --model-url of a real coder model for real results.",
                  markup=False, highlight=False)
    out.print(f"open {out_dir / 'report.html'} in a browser for the trajectory", markup=False, highlight=False)
