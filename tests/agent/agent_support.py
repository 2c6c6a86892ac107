"""Helpers of the agent tests: run one episode against a server, read what happened."""
from __future__ import annotations

from pathlib import Path

from loopcoder.agent import AgentConfig, ModelClient, Task, read_trajectory, run_episode
from loopcoder.runtime.workspace import GitWorkspace

FIX_OLD = "        return ordered[middle]\n    return ordered[middle]\n"
FIX_NEW = "        return ordered[middle]\n    return (ordered[middle - 1] + ordered[middle]) / 2\n"
PLAN = {"steps": [{"goal": "average the two middle values", "files": ["stats.py"], "verify": "python3 -m unittest"}]}
TASK = "median() is wrong for lists of even length"


def config(url: str, **changes) -> AgentConfig:
    """The shipped defaults pointed at ``url``, fast retries, and ``changes`` as dotted keys (budgets__steps=2)."""
    cfg = AgentConfig()
    cfg.model.url = url
    cfg.model.backoff_initial_s = 0.05
    cfg.fsync = False
    for key, value in changes.items():
        *path, last = key.split("__")
        node = cfg
        for part in path:
            node = getattr(node, part)
        setattr(node, last, value)
    return cfg


def episode(cfg: AgentConfig, repo: Path, out: Path, sandbox=None, task: str = TASK, model=None):
    """Clone ``repo`` into ``out/workspace``, run one episode; returns (result, events)."""
    ws = GitWorkspace.clone(repo, out / "workspace")
    result = run_episode(Task(task, ws, repo=str(repo), test_command="python3 -m unittest"),
                         model or ModelClient(cfg.model), cfg, out, sandbox=sandbox(ws.path) if sandbox else None)
    return result, read_trajectory(result.trajectory)


def of_type(events, kind: str):
    return [e for e in events if e.type == kind]
