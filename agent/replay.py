"""Replaying a trajectory: ``ReplayModel`` answers with the recorded responses, in order, so the agent makes
the same tool calls again; ``replay_episode`` does that on a fresh clone of the same repository and
reports every tool result that came out different.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from loopcoder.agent.client import ModelError, ModelResponse, RetryHook, Usage
from loopcoder.agent.config import AgentConfig
from loopcoder.agent.episode import EpisodeResult, Task, run_episode
from loopcoder.agent.trajectory import Header, ModelAnswer, Stop, ToolResultEvent, read_trajectory
from loopcoder.runtime.sandbox import Sandbox
from loopcoder.runtime.workspace import GitWorkspace

# A replayed episode that asks for more answers than were recorded ends with this reason. Recorded
# episodes that stopped on the model's side (an error, an overflow, Ctrl-C) are expected to end so.
MODEL_SIDE_STOPS = {"model_error", "context_exceeded", "interrupted", "agent_error"}
_TIMES = re.compile(r"\d+\.\d+s\b")  # durations ("exit code 0 (0.1s)", "Ran 3 tests in 0.002s") vary per run


class ReplayExhausted(ModelError):
    stop_reason = "replay_exhausted"


class ReplayModel:
    """A ``Model`` that returns a trajectory's recorded answers one after another."""

    def __init__(self, events: list[Any]):
        header: Header = events[0]
        self.name = header.model.name
        self.url = None
        self._max_model_len = header.model.max_model_len
        self.answers = [e for e in events if isinstance(e, ModelAnswer)]
        self.position = 0
        self.on_retry: Optional[RetryHook] = None

    @classmethod
    def from_file(cls, path: str | Path) -> "ReplayModel":
        return cls(read_trajectory(path))

    def max_model_len(self) -> Optional[int]:
        return self._max_model_len

    def chat(self, messages: list[dict], tools: list[dict], thinking: Optional[bool],
             max_tokens: int) -> ModelResponse:
        if self.position >= len(self.answers):
            raise ReplayExhausted(f"the trajectory has only {len(self.answers)} recorded answers")
        a = self.answers[self.position]
        self.position += 1
        return ModelResponse(content=a.content, tool_calls=a.tool_calls, reasoning=a.reasoning,
                             usage=Usage(a.prompt_tokens, a.completion_tokens), finish_reason=a.finish_reason)


@dataclass
class Divergence:
    index: int  # position among the tool results
    step: int
    tool: str
    what: str
    recorded: str
    replayed: str


@dataclass
class ReplayReport:
    recorded_stop: str
    replayed_stop: str
    tool_results: int
    divergences: list[Divergence] = field(default_factory=list)
    episode: Optional[EpisodeResult] = None

    @property
    def same(self) -> bool:
        return not self.divergences


def replay_episode(trajectory: str | Path, out_dir: str | Path, repo: Optional[str] = None,
                   open_sandbox: Optional[Callable[[Path], Sandbox]] = None) -> ReplayReport:
    """Clone the recorded repository at the recorded base commit into ``out_dir/workspace``, run the agent
    with the recorded answers (in a sandbox from ``open_sandbox``), and compare the tool results."""
    events = read_trajectory(trajectory)
    header: Header = events[0]
    source = repo or header.task.repo
    if not source:
        raise FileNotFoundError(f"{trajectory} does not record its repository; pass the repository to replay on")
    out = Path(out_dir)
    ws = GitWorkspace.clone(source, out / "workspace", commit=header.task.base_commit)
    config = AgentConfig.model_validate(header.config)
    task = Task(text=header.task.text, workspace=ws, repo=str(source), test_command=header.task.test_command)
    sandbox = open_sandbox(ws.path) if open_sandbox else None
    try:
        result = run_episode(task, ReplayModel(events), config, out, sandbox=sandbox)
    finally:
        if sandbox is not None:
            sandbox.close()
    return compare(events, read_trajectory(result.trajectory), result)


def compare(recorded: list[Any], replayed: list[Any], episode: Optional[EpisodeResult] = None) -> ReplayReport:
    """Tool results side by side, in order (durations masked), and the two stop reasons."""
    before = [e for e in recorded if isinstance(e, ToolResultEvent)]
    after = [e for e in replayed if isinstance(e, ToolResultEvent)]
    stop_before = next((e.reason for e in recorded if isinstance(e, Stop)), "none (the run did not finish)")
    stop_after = next((e.reason for e in replayed if isinstance(e, Stop)), "none")
    report = ReplayReport(stop_before, stop_after, len(before), episode=episode)
    for i, (a, b) in enumerate(zip(before, after)):
        for what, x, y in (("tool", a.name, b.name), ("ok", str(a.ok), str(b.ok)),
                           ("output", _TIMES.sub("#s", a.output), _TIMES.sub("#s", b.output))):
            if x != y:
                report.divergences.append(Divergence(i, a.step, a.name, what, x, y))
                break
    if len(before) != len(after):
        report.divergences.append(Divergence(min(len(before), len(after)), 0, "", "number of tool results",
                                             str(len(before)), str(len(after))))
    expected_end = stop_after == stop_before or (stop_after == ReplayExhausted.stop_reason and
                                                 (stop_before in MODEL_SIDE_STOPS or stop_before.startswith("none")))
    if not expected_end:
        report.divergences.append(Divergence(len(after), 0, "", "stop reason", stop_before, stop_after))
    return report
