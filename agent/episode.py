"""One episode on one workspace: tools, trajectory, the agent, and the patch, whatever the stop reason.

The workspace must be a git clone made for this episode (``GitWorkspace.clone``), never the user's own
checkout: the agent edits it and the sandbox writes into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from loopcoder.agent.client import Model
from loopcoder.agent.config import AgentConfig
from loopcoder.agent.loop import Agent, Outcome
from loopcoder.agent.trajectory import Header, ModelInfo, PatchInfo, Stop, TaskInfo, Trajectory
from loopcoder.runtime.sandbox import Sandbox
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.toolbox import Toolbox

TRAJECTORY = "trajectory.jsonl"
PATCH = "patch.diff"


@dataclass
class Task:
    text: str
    workspace: GitWorkspace  # the episode's own clone (GitWorkspace.clone), never the user's checkout
    repo: Optional[str] = None  # where the clone came from (recorded, so replay can clone it again)
    test_command: Optional[str] = None


@dataclass
class EpisodeResult:
    reason: str
    detail: str
    steps: int
    stats: dict[str, Any]
    budget: dict[str, Any]
    patch: PatchInfo
    trajectory: Path


def run_episode(task: Task, model: Model, config: AgentConfig, out_dir: str | Path,
                sandbox: Optional[Sandbox] = None, tools_config: Optional[ToolsConfig] = None,
                listeners: tuple[Callable[[Any], None], ...] = (),
                should_stop: Optional[Callable[[], bool]] = None) -> EpisodeResult:
    """Run the agent on ``task`` and write ``trajectory.jsonl`` and ``patch.diff`` into ``out_dir``.

    Without a sandbox, shell and run_tests answer with an error (the other tools work on the files).
    ``listeners`` see every trajectory event (progress displays). ``should_stop`` is asked before every
    model call; True stops the episode as ``interrupted`` (how a batch cancels episodes in other threads,
    which Ctrl-C does not reach).
    """
    config.check_for_model(model.name)
    out = Path(out_dir)
    workspace = task.workspace
    toolbox = Toolbox(workspace=workspace.path, config=tools_config, sandbox=sandbox, task_text=task.text,
                      test_command=task.test_command)
    header = Header(task=TaskInfo(text=task.text, repo=task.repo, workspace=str(workspace.path),
                                  base_commit=workspace.base_commit, test_command=task.test_command),
                    model=ModelInfo(url=getattr(model, "url", None), name=model.name,
                                    max_model_len=model.max_model_len()),
                    config=config.public_dump())
    with Trajectory(out / TRAJECTORY, fsync=config.fsync, listeners=listeners) as trajectory:
        trajectory.write(header)
        agent = Agent(model, toolbox, config, trajectory, task.test_command, should_stop)
        try:
            outcome = agent.run(task.text)
        except Exception as exc:  # noqa: BLE001 - a bug in the agent still ends with a stop event and the patch
            outcome = Outcome("agent_error", f"{type(exc).__name__}: {exc}")
        patch = save_patch(workspace, out / PATCH)
        stats = agent.stats.as_dict()
        trajectory.write(Stop(reason=outcome.reason, detail=outcome.detail, step=agent.budget.steps,
                              stats={**stats, "budget": agent.budget.used()}, patch=patch))
    return EpisodeResult(outcome.reason, outcome.detail, agent.budget.steps, stats, agent.budget.used(), patch,
                         out / TRAJECTORY)


def save_patch(workspace: GitWorkspace, path: Path) -> PatchInfo:
    """Extract the workspace's diff against its base commit and write it (an empty file when nothing changed)."""
    from loopcoder.runtime.errors import RuntimeFailure

    try:
        result = workspace.extract_patch()
    except RuntimeFailure as exc:
        return PatchInfo(error=str(exc))
    path.write_text(result.text)
    return PatchInfo(path=str(path), files=result.files, empty=result.empty, verified=result.verified)
