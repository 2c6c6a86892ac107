"""`loopcoder agent run` (one episode on a local repository) and `loopcoder replay` (re-run a trajectory).

The repository is cloned into the output folder and the sandbox works on that clone, never on the
user's checkout. Without --model-url the native server is started in this process on the embedded
default checkpoint (the agent still talks to it over HTTP on 127.0.0.1).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from loopcoder.configs import ConfigError

agent_app = typer.Typer(help="Run the agent on a repository.", no_args_is_help=True)
console = Console(stderr=True)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from the model or the sandbox, safe for a terminal: control characters (ESC sequences that could
    clear or rewrite the screen) become U+FFFD, and rich markup is escaped."""
    return escape(_CONTROL.sub("\ufffd", text))


class Progress:
    """Live status (phase, step, last tool, tokens, time) and one line per tool result, from trajectory events."""

    def __init__(self, live: Optional[Live] = None):
        self.live = live
        self.phase, self.step, self.tool = "-", 0, "-"
        self.tokens_in = self.tokens_out = 0
        self.started = time.monotonic()

    def __call__(self, event: Any) -> None:
        kind = event.type
        if kind == "phase":
            self.phase = event.phase
            console.print(f"[bold]{event.phase}[/]" + (f" ({event.reason})" if event.reason != "start" else ""))
        elif kind == "model_request":
            self.step = event.step
        elif kind == "model_response":
            self.tokens_in += event.prompt_tokens
            self.tokens_out += event.completion_tokens
        elif kind == "tool_call":
            self.tool = event.name or "?"
        elif kind == "tool_result":
            mark = "[green]ok[/]" if event.ok else "[red]error[/]"
            first = printable((event.output.splitlines() or [""])[0][:90])
            console.print(f"  step {event.step:>3}  {event.name:<14} {mark}  {first}", highlight=False)
        elif kind == "format_error":
            first = printable(event.errors[-1].splitlines()[0][:90])
            console.print(f"  step {event.step:>3}  [yellow]format error[/] {first}", highlight=False)
        elif kind == "retry":
            console.print(f"  retry {event.attempt}: {printable(event.error[:80])} (waiting {event.wait_s:.1f} s)")
        elif kind == "context":
            console.print(f"  context {event.action}: {event.turns_replaced} turns folded, "
                          f"~{event.tokens_before} -> ~{event.tokens_after} tokens")
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Text:
        return Text(f"phase {self.phase} | step {self.step} | tool {self.tool} | tokens in {self.tokens_in:,} "
                    f"out {self.tokens_out:,} | {time.monotonic() - self.started:.0f} s", style="cyan")


def _task_text(task: Optional[str], task_file: Optional[Path]) -> str:
    if (task is None) == (task_file is None):
        raise ConfigError("pass exactly one of --task TEXT and --task-file FILE")
    if task_file is not None:
        return task_file.read_text()
    return task


def _output_dir(output: Optional[Path], repo: Path) -> Path:
    path = output or Path("loopcoder-runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{repo.resolve().name}"
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"output folder {path} is not empty; choose a new one with --output")
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_embedded_server(checkpoint: Path, max_model_len: int = 4096):
    """The native server on 127.0.0.1 (free port) in this process; a tiny random checkpoint is made if absent."""
    from loopcoder.model_server.api import ServerThread, create_app
    from loopcoder.model_server.engine import AsyncLLMEngine, EngineConfig
    from loopcoder.model_server.plt.checkpoint import init_checkpoint
    from loopcoder.scenarios.model_cli import _quiet_transformers

    _quiet_transformers()
    if not (checkpoint / "config.json").exists():
        with console.status(f"writing a tiny random checkpoint to {checkpoint}"):
            init_checkpoint(checkpoint, "tiny")
        console.print(f"wrote a tiny random checkpoint to {checkpoint} (random weights: it will not solve tasks)")
    with console.status(f"starting the native server on {checkpoint}"):
        engine = AsyncLLMEngine.from_config(EngineConfig(model=str(checkpoint), max_model_len=max_model_len,
                                                         max_num_seqs=4))
        server = ServerThread(create_app(engine)).start()
    console.print(f"native server for {engine.model_name!r} at {server.url}/v1")
    return server


def summary_text(result, plan: str, out_dir: Path, workspace: bool = True) -> str:
    """The one-screen summary printed at the end and saved as summary.txt (``workspace``: the run keeps
    its workspace folder, so name it)."""
    s, b = result.stats, result.budget
    share = f"{s['well_formed_share']:.0%}" if s.get("well_formed_share") is not None else "-"
    patch = result.patch
    patch_line = (f"error: {patch.error}" if patch.error else "empty (no change)" if patch.empty else
                  f"{len(patch.files)} file(s): {', '.join(patch.files)} -> {patch.path}")
    lines = [
        f"stop reason  {result.reason}" + (f" ({result.detail})" if result.detail else ""),
        f"steps        {result.steps} model calls, {b['wall_time_s']:.1f} s, tokens in {b['input_tokens']:,} "
        f"out {b['output_tokens']:,}, cost ${b['cost_usd']:.4f}",
        f"tool calls   {s['tool_calls']} ({share} well-formed, {s['repaired']} repaired), "
        f"{s['format_errors']} format errors, {s['retries']} retries",
        f"edits        {s['edits_applied']} applied of {s['edits_tried']} tried; test runs {s['test_runs']}; "
        f"re-plans {s['replans']}",
        f"patch        {patch_line}",
        f"trajectory   {result.trajectory}",
    ]
    if workspace:
        lines.append(f"workspace    {out_dir / 'workspace'}")
    if plan:
        lines += ["plan", *("  " + line for line in plan.splitlines())]
    return "\n".join(lines)


def last_plan(trajectory: Path) -> str:
    from loopcoder.agent.trajectory import PlanEvent, read_trajectory

    plans = [e for e in read_trajectory(trajectory) if isinstance(e, PlanEvent)]
    return plans[-1].rendered if plans else ""


# Options of an agent episode, shared by every command that runs the agent (`agent run`, `swebench run`).
MODEL_URL_OPT = typer.Option(None, "--model-url", help="OpenAI-compatible base URL (…/v1); default: the embedded "
                             "native server on the default checkpoint.")
MODEL_OPT = typer.Option(None, "--model", help="Model name (default: the first /v1/models lists).")
THINKING_OPT = typer.Option(None, "--thinking/--no-thinking", help="Thinking mode in every phase.")
MODE_OPT = typer.Option(None, "--mode", help="plan (planner + executor) | single")
BUDGET_STEPS_OPT = typer.Option(None, "--budget-steps", help="Model calls in the episode.")
BUDGET_INPUT_OPT = typer.Option(None, "--budget-input-tokens")
BUDGET_OUTPUT_OPT = typer.Option(None, "--budget-output-tokens")
BUDGET_WALL_OPT = typer.Option(None, "--budget-wall-time", help="Seconds.")
BUDGET_COST_OPT = typer.Option(None, "--budget-cost", help="USD (needs prices for the model).")
CHECKPOINT_OPT = typer.Option(None, "--checkpoint", help="Embedded server's checkpoint.")
AGENT_CONFIG_OPT = typer.Option(None, "--config", help="Agent YAML (default configs/agent.yaml).")
AGENT_SET_OPT = typer.Option([], "--set", help="Override an agent setting: --set context.elide_after_turns=4")


def agent_config_from_options(config: Optional[Path], overrides: list[str], *, model_url: Optional[str] = None,
                              model: Optional[str] = None, mode: Optional[str] = None,
                              thinking: Optional[bool] = None, budget_steps: Optional[int] = None,
                              budget_input_tokens: Optional[int] = None, budget_output_tokens: Optional[int] = None,
                              budget_wall_time: Optional[float] = None, budget_cost: Optional[float] = None,
                              defaults: tuple[str, ...] = ()):
    """The AgentConfig the shared options describe: YAML, then ``defaults``, ``--set`` and the flags given."""
    from loopcoder.agent import load_agent_config

    flags = {"model.url": model_url, "model.name": model, "mode": mode, "budgets.steps": budget_steps,
             "budgets.input_tokens": budget_input_tokens, "budgets.output_tokens": budget_output_tokens,
             "budgets.wall_time_s": budget_wall_time, "budgets.cost_usd": budget_cost,
             "planner.thinking": thinking, "executor.thinking": thinking}
    return load_agent_config(config, list(defaults) + list(overrides)
                             + [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None])


@agent_app.command("run")
def run_command(
    repo: Path = typer.Option(..., "--repo", help="Local git repository; it is cloned, your checkout is untouched."),
    task: Optional[str] = typer.Option(None, "--task", help="What to do (issue text)."),
    task_file: Optional[Path] = typer.Option(None, "--task-file", help="File holding the task text."),
    model_url: Optional[str] = MODEL_URL_OPT,
    model: Optional[str] = MODEL_OPT,
    thinking: Optional[bool] = THINKING_OPT,
    mode: Optional[str] = MODE_OPT,
    budget_steps: Optional[int] = BUDGET_STEPS_OPT,
    budget_input_tokens: Optional[int] = BUDGET_INPUT_OPT,
    budget_output_tokens: Optional[int] = BUDGET_OUTPUT_OPT,
    budget_wall_time: Optional[float] = BUDGET_WALL_OPT,
    budget_cost: Optional[float] = BUDGET_COST_OPT,
    test_command: Optional[str] = typer.Option(None, "--test-command", help="What run_tests runs in the sandbox."),
    output: Optional[Path] = typer.Option(None, "--output", help="New folder for workspace, patch, trajectory."),
    checkpoint: Optional[Path] = CHECKPOINT_OPT,
    config: Optional[Path] = AGENT_CONFIG_OPT,
    overrides: list[str] = AGENT_SET_OPT,
) -> None:
    """Run one episode on a local git repository in a Docker sandbox; write patch, trajectory and summary."""
    text = _task_text(task, task_file)
    cfg = agent_config_from_options(config, overrides, model_url=model_url, model=model, mode=mode,
                                    thinking=thinking, budget_steps=budget_steps,
                                    budget_input_tokens=budget_input_tokens,
                                    budget_output_tokens=budget_output_tokens, budget_wall_time=budget_wall_time,
                                    budget_cost=budget_cost)
    run_agent(repo, text, cfg, output, checkpoint, test_command)


@agent_app.command("demo")
def demo_command(
    model_url: Optional[str] = typer.Option(None, "--model-url", help="OpenAI-compatible base URL (…/v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name."),
    output: Optional[Path] = typer.Option(None, "--output", help="New folder for the run."),
    overrides: list[str] = typer.Option([], "--set", help="Override an agent setting."),
) -> None:
    """The agent on the bundled demo repository (a real bug in median()); the embedded tiny model by default."""
    from loopcoder.agent import load_agent_config
    from loopcoder.scenarios.demo import TASK_FILE, TEST_COMMAND, make_demo_repo

    repo = make_demo_repo(Path(".cache/demo-repo"))
    # a random tiny model writes noise: short answers and few steps keep the demo to a minute on a CPU
    defaults = ["model.max_tokens=128", "budgets.steps=12"]
    flags = {"model.url": model_url, "model.name": model}
    cfg = load_agent_config(None, defaults + list(overrides) + [f"{k}={json.dumps(v)}" for k, v in flags.items()
                                                                if v is not None])
    run_agent(repo, (repo / TASK_FILE).read_text(), cfg,
              output or Path(".cache/demo-runs") / time.strftime("%Y%m%d-%H%M%S"), None, TEST_COMMAND)


def run_agent(repo: Path, text: str, cfg, output: Optional[Path], checkpoint: Optional[Path],
              test_command: Optional[str]):
    """Clone ``repo`` into the output folder, run one episode there with live progress, print the summary."""
    from loopcoder.agent import ModelClient, Task, run_episode
    from loopcoder.runtime import open_sandbox
    from loopcoder.runtime.workspace import GitWorkspace

    GitWorkspace(repo)  # not a git working tree: one-line error before anything is created
    out_dir = _output_dir(output, repo)
    workspace = GitWorkspace.clone(repo, out_dir / "workspace")
    server = None
    try:
        if not cfg.model.url:
            server = start_embedded_server(checkpoint or cfg.default_checkpoint)
            cfg.model.url = server.url + "/v1"
        client = ModelClient(cfg.model)
        with console.status("starting the sandbox"):
            sandbox = open_sandbox(workspace.path)
        try:
            with Live(console=console, refresh_per_second=4, transient=True) as live:
                result = run_episode(Task(text=text, workspace=workspace, repo=str(Path(repo).resolve()),
                                          test_command=test_command), client, cfg, out_dir, sandbox=sandbox,
                                     listeners=(Progress(live),))
        finally:
            sandbox.close()
    finally:
        if server is not None:
            server.stop()
    summary = summary_text(result, last_plan(result.trajectory), out_dir)
    (out_dir / "summary.txt").write_text(summary + "\n")
    typer.echo(_CONTROL.sub("\ufffd", summary))
    if result.reason == "interrupted":
        raise typer.Exit(130)
    return result


def replay_command(
    trajectory: Path = typer.Argument(..., help="trajectory.jsonl of an earlier run."),
    repo: Optional[str] = typer.Option(None, "--repo", help="Repository to replay on (default: the recorded one)."),
    output: Optional[Path] = typer.Option(None, "--output", help="New folder for the replayed run."),
) -> None:
    """Re-run a trajectory's tool calls (its recorded model answers) in a fresh sandbox; report divergences."""
    from loopcoder.agent.replay import replay_episode
    from loopcoder.runtime import open_sandbox

    out_dir = _output_dir(output or trajectory.parent / f"replay-{time.strftime('%Y%m%d-%H%M%S')}",
                          Path(repo or "."))
    with console.status("replaying"):
        report = replay_episode(trajectory, out_dir, repo=repo, open_sandbox=open_sandbox)
    typer.echo(f"replayed {report.tool_results} tool results; stop: recorded {report.recorded_stop}, "
               f"replayed {report.replayed_stop}; new trajectory {out_dir / 'trajectory.jsonl'}")
    if report.same:
        typer.echo("no divergence")
        return
    for d in report.divergences:
        typer.echo(f"divergence at tool result {d.index} (step {d.step}, {d.tool or '-'}): {d.what}\n"
                   f"  recorded: {d.recorded[:300]!r}\n  replayed: {d.replayed[:300]!r}")
    raise typer.Exit(1)


