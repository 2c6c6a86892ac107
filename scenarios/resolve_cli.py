"""`loopcoder resolve URL`: resolve a GitHub issue from its URL; optionally open a draft pull request.

The job itself is ``loopcoder.scenarios.resolve.run.resolve``; this module turns flags into options, shows
progress and prints the short summary. docs/resolve.md describes everything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.live import Live

from loopcoder.scenarios.agent_cli import Progress, console, printable, summary_text


def resolve_command(
    url: str = typer.Argument(..., help="Issue URL: https://github.com/OWNER/REPO/issues/N (or an Enterprise host)."),
    repo_dir: Optional[Path] = typer.Option(None, "--repo-dir", help="Existing clone to start from (not touched: "
                                                                     "it is cloned again)."),
    open_pr: bool = typer.Option(False, "--open-pr", help="Commit, push (or push to your fork) and open a draft "
                                                          "pull request."),
    output: Optional[Path] = typer.Option(None, "--output", help="New folder for the run (default "
                                                                 "loopcoder-runs/<time>-<owner>-<repo>-<n>)."),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="REST API base (Enterprise: https://HOST/api/v3)."),
    git_url: Optional[str] = typer.Option(None, "--git-url", help="Git base URL: clones OWNER/REPO.git from "
                                                                  "there (mirrors, Enterprise)."),
    sandbox_network: str = typer.Option("none", "--sandbox-network", help="none (default) | bridge: give the "
                                                                          "agent's sandbox the network."),
    model_url: Optional[str] = typer.Option(None, "--model-url", help="OpenAI-compatible base URL (…/v1)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (default: the first /v1/models lists)."),
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="Thinking mode in every phase."),
    mode: Optional[str] = typer.Option(None, "--mode", help="plan (planner + executor) | single"),
    budget_steps: Optional[int] = typer.Option(None, "--budget-steps", help="Model calls in the episode."),
    budget_input_tokens: Optional[int] = typer.Option(None, "--budget-input-tokens"),
    budget_output_tokens: Optional[int] = typer.Option(None, "--budget-output-tokens"),
    budget_wall_time: Optional[float] = typer.Option(None, "--budget-wall-time", help="Seconds."),
    budget_cost: Optional[float] = typer.Option(None, "--budget-cost", help="USD (needs prices for the model)."),
    test_command: Optional[str] = typer.Option(None, "--test-command", help="What run_tests runs (default: "
                                                                            "detected)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Embedded server's checkpoint."),
    config: Optional[Path] = typer.Option(None, "--config", help="Agent YAML (default configs/agent.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: agent keys as in `agent run`, "
                                                          "resolve keys as resolve.github.timeout_s=60"),
) -> None:
    """Resolve a GitHub issue: fetch it with its comments, clone, run the agent in a sandbox, write the patch,
    trajectory and summary.md; with --open-pr, open a draft pull request."""
    from loopcoder.agent import load_agent_config
    from loopcoder.configs import ConfigError
    from loopcoder.scenarios.resolve.config import load_resolve_config
    from loopcoder.scenarios.resolve.run import ResolveOptions, _PullRequestNotOpened, resolve

    if sandbox_network not in ("none", "bridge"):
        raise ConfigError(f"--sandbox-network must be none or bridge (got {sandbox_network!r})")
    resolve_sets = [o.removeprefix("resolve.") for o in overrides if o.startswith("resolve.")]
    agent_sets = [o for o in overrides if not o.startswith("resolve.")]
    flags = {"model.url": model_url, "model.name": model, "mode": mode, "budgets.steps": budget_steps,
             "budgets.input_tokens": budget_input_tokens, "budgets.output_tokens": budget_output_tokens,
             "budgets.wall_time_s": budget_wall_time, "budgets.cost_usd": budget_cost,
             "planner.thinking": thinking, "executor.thinking": thinking}
    agent_cfg = load_agent_config(config, agent_sets + [f"{k}={json.dumps(v)}" for k, v in flags.items()
                                                        if v is not None])
    opts = ResolveOptions(url=url, agent_config=agent_cfg, config=load_resolve_config(None, resolve_sets),
                          repo_dir=repo_dir, open_pr=open_pr, output=output, api_url=api_url, git_url=git_url,
                          checkpoint=checkpoint, test_command=test_command, sandbox_network=sandbox_network)
    if sandbox_network != "none":
        console.print("[yellow]warning:[/] --sandbox-network bridge: the agent's commands and the repository's "
                      "code can reach the network")

    def say(line: str) -> None:
        console.print(printable(line), highlight=False)

    try:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            outcome = resolve(opts, say=say, status=lambda text: _Status(live, text), listeners=(Progress(live),))
    except _PullRequestNotOpened as exc:
        _print(exc.outcome)
        raise
    _print(outcome)
    if outcome.episode.reason == "interrupted":
        raise typer.Exit(130)


class _Status:
    """A one-line status in the live area while a long step runs (``update`` changes its text)."""

    def __init__(self, live: Live, text: str):
        self.live, self.text = live, text

    def __enter__(self) -> "_Status":
        self.update(self.text)
        return self

    def __exit__(self, *exc) -> None:
        self.live.update("")

    def update(self, text: str) -> None:
        from rich.text import Text

        self.live.update(Text(f"{text} ...", style="cyan"))


def _print(outcome) -> None:
    """The short summary on stdout: the issue, the agent's summary, changes, final check, files, pull request."""
    from loopcoder.scenarios.resolve.report import diffstat, last_plan

    ep, issue = outcome.episode, outcome.issue
    n = len(issue.comments)
    lines = [f"issue        {outcome.repository.full_name}#{issue.number}: {issue.title.strip()[:100]} "
             f"({issue.state}, {n} comment{'' if n == 1 else 's'})"]
    lines += summary_text(ep, last_plan(ep.trajectory), outcome.out_dir).splitlines()
    patch = Path(ep.patch.path).read_text() if ep.patch.path else ""
    changes = diffstat(patch)
    if changes:
        lines.append("changed      " + ", ".join(f"{c.path} (+{c.added} -{c.removed})" if c.added is not None
                                                 else f"{c.path} (binary)" for c in changes))
    if outcome.final_check:
        f = outcome.final_check
        lines.append(f"final check  {f.command}: {'passed' if f.passed else 'FAILED'} ({f.result})")
    lines.append(f"summary      {outcome.summary_path}")
    if outcome.pull_request:
        pr = outcome.pull_request
        fork = " (fork created)" if pr.fork_created else ""
        lines.append(f"pull request {pr.pull.html_url} (draft: {pr.pull.draft}, head {pr.pull.head}, pushed to "
                     f"{pr.pushed_to}{fork})")
    typer.echo(printable("\n".join(lines)).replace("\\[", "["))
