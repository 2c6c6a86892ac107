"""`loopcoder terminal run TASK_DIR...` (Terminal-Bench 1.x and 2.0 tasks in task containers) and
`loopcoder terminal tasks` (the bundled tasks' folders)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from loopcoder.configs import ConfigError

terminal_app = typer.Typer(help="Run Terminal-Bench tasks (1.x and 2.0 / Harbor) in task containers.",
                           no_args_is_help=True)
console = Console(stderr=True)


@terminal_app.command("tasks")
def tasks_command() -> None:
    """Print the folders of the bundled tasks, one per line."""
    from loopcoder.scenarios.terminal.run import bundled_tasks

    for path in bundled_tasks():
        typer.echo(str(path))


@terminal_app.command("run")
def run_command(
    task_dirs: list[Path] = typer.Argument(..., help="Task folders (task.yaml: 1.x, task.toml: 2.0).",
                                           show_default=False),
    agent: str = typer.Option("loopcoder", "--agent", help="loopcoder | oracle (the task's solution) | noop"),
    n_concurrent: int = typer.Option(1, "--n-concurrent", min=1, max=64, help="Trials at a time."),
    n_attempts: int = typer.Option(1, "--n-attempts", min=1, max=100, help="Trials per task."),
    output: Optional[Path] = typer.Option(None, "--output", help="New (or empty) folder for the run's results."),
    model_url: Optional[str] = typer.Option(None, "--model-url", help="OpenAI-compatible base URL (…/v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (default: the first /v1/models lists)."),
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="Thinking mode in every phase."),
    mode: Optional[str] = typer.Option(None, "--mode", help="plan (planner + executor) | single"),
    budget_steps: Optional[int] = typer.Option(None, "--budget-steps", help="Model calls per trial."),
    budget_input_tokens: Optional[int] = typer.Option(None, "--budget-input-tokens"),
    budget_output_tokens: Optional[int] = typer.Option(None, "--budget-output-tokens"),
    budget_wall_time: Optional[float] = typer.Option(None, "--budget-wall-time",
                                                     help="Seconds per trial (the task's agent timeout caps it)."),
    budget_cost: Optional[float] = typer.Option(None, "--budget-cost", help="USD (needs prices for the model)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Embedded server's checkpoint."),
    config: Optional[Path] = typer.Option(None, "--config", help="Agent YAML (default configs/agent.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override an agent setting: --set budgets.steps=20"),
) -> None:
    """Run each task's trials: build its image, let the agent work, copy the tests in, grade; print a table."""
    from loopcoder.scenarios.terminal.agents import AGENTS, make_agent
    from loopcoder.scenarios.terminal.run import run_tasks
    from loopcoder.scenarios.terminal.tasks import TaskError, load_task

    if agent not in AGENTS:
        raise ConfigError(f"--agent {agent!r}: choose one of {', '.join(AGENTS)}")
    try:
        tasks = [load_task(p) for p in task_dirs]
    except TaskError as exc:
        raise ConfigError(str(exc)) from None
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError("two task folders have the same name; each task's results go into a folder of its name")
    out = output or Path("loopcoder-runs") / f"terminal-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output folder {out} is not empty; choose a new one with --output")

    cfg, server = None, None
    if agent == "loopcoder":
        from loopcoder.agent import load_agent_config

        flags = {"model.url": model_url, "model.name": model, "mode": mode, "budgets.steps": budget_steps,
                 "budgets.input_tokens": budget_input_tokens, "budgets.output_tokens": budget_output_tokens,
                 "budgets.wall_time_s": budget_wall_time, "budgets.cost_usd": budget_cost, "planner.thinking": thinking, "executor.thinking": thinking}
        cfg = load_agent_config(config, list(overrides) + [f"{k}={json.dumps(v)}" for k, v in flags.items()
                                                           if v is not None])
    try:
        if cfg is not None and not cfg.model.url:
            from loopcoder.scenarios.agent_cli import start_embedded_server

            server = start_embedded_server(checkpoint or cfg.default_checkpoint)
            cfg.model.url = server.url + "/v1"
        out.mkdir(parents=True, exist_ok=True)
        console.print(f"{len(tasks)} task(s), agent {agent}, {n_attempts} attempt(s) each, "
                      f"{n_concurrent} at a time -> {out}")
        records, table = run_tasks(tasks, lambda: make_agent(agent, cfg), out, n_concurrent=n_concurrent,
                                   n_attempts=n_attempts, progress=lambda m: console.print(m, markup=False,
                                                                                           highlight=False))
    finally:
        if server is not None:
            server.stop()
    typer.echo(table)
    typer.echo(f"results in {out}")
