"""The agents a terminal trial can run: ``loopcoder`` (the model-driven agent), ``oracle`` (the task's own
solution, to validate tasks) and ``noop`` (does nothing: a task it resolves is broken).

Each gets the task, the started task container and a deadline (the task's agent timeout), and returns an
``AgentRun``; what it did is logged under the trial's agent folder. The tests are not in the container
while an agent runs: they are copied in after it returns.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import Field

from loopcoder.runtime.errors import RuntimeFailure
from loopcoder.scenarios.terminal.tasks import V1, TerminalTask
from loopcoder.tools.base import Tool, ToolArgs, ToolError, ToolOutput
from loopcoder.tools.registry import ToolRegistry
from loopcoder.tools.shell import CommandOutput

PROMPTS = Path(__file__).resolve().parent / "prompts"
AGENTS = ("loopcoder", "oracle", "noop")
MAX_READ_BYTES = 200_000


@dataclass
class AgentRun:
    """How the agent phase ended. ``failure`` uses terminal-bench's FailureMode values."""

    failure: str = "none"  # none | agent_timeout | unknown_agent_error | context_length_exceeded | fatal_llm_parse_error
    detail: str = ""
    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None
    steps: Optional[int] = None


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


# -- oracle and noop ---------------------------------------------------------------------------------------------

class NoopAgent:
    name = "noop"

    def perform(self, task: TerminalTask, sandbox, deadline: float, log_dir: Path) -> AgentRun:
        return AgentRun()


class OracleAgent:
    """Runs the task's solution as the harnesses do: 1.x ``bash /oracle/solution.sh`` (or the commands of
    ``solution.yaml`` one by one), 2.0 ``/solution/solve.sh`` with ``[solution] env``."""

    name = "oracle"

    def perform(self, task: TerminalTask, sandbox, deadline: float, log_dir: Path) -> AgentRun:
        log_dir.mkdir(parents=True, exist_ok=True)
        if task.solution_sh is None and task.solution_yaml is None:
            return AgentRun("unknown_agent_error", f"task {task.name} has no solution")
        if task.generation == V1 and task.solution_sh is not None:
            sandbox.copy_in(task.solution_sh, "/oracle/solution.sh")
            steps = [("bash /oracle/solution.sh", None, None)]
        elif task.generation == V1:
            steps = [(c.command, c.max_timeout_sec, c.block) for c in task.solution_yaml]
        else:
            sandbox.copy_in(task.solution_dir, "/solution")
            rel = task.solution_sh.relative_to(task.solution_dir).as_posix()
            script = shlex.quote(f"/solution/{rel}")
            steps = [(f"chmod +x {script} && {script}", None, None)]
        with open(log_dir / "oracle.txt", "w", encoding="utf-8") as log:
            for command, step_timeout, _block in steps:
                left = _remaining(deadline)
                if left <= 0:
                    return AgentRun("agent_timeout", "the agent timeout passed before the solution finished")
                res = sandbox.exec(command, timeout=min(left, step_timeout or left),
                                   env=task.solution_env or None)
                log.write(f"$ {command}\n{res.output}\n[exit {res.exit_code}{', timed out' if res.timed_out else ''}]\n")
                if res.timed_out and _remaining(deadline) <= 0.05:
                    return AgentRun("agent_timeout", f"the solution ran past the agent timeout ({task.agent_timeout_s:g} s)")
        return AgentRun()


# -- the shell-centred tool set of the model-driven agent --------------------------------------------------------

class ShellArgs(ToolArgs):
    command: str = Field(..., min_length=1, description="bash command; cd and export carry over to later commands")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="seconds before the command is killed")


class ReadArgs(ToolArgs):
    path: str = Field(..., min_length=1, description="file path in the container (relative: to the working directory)")


class WriteArgs(ToolArgs):
    path: str = Field(..., min_length=1, description="file path in the container (relative: to the working directory)")
    content: str = Field(..., description="the whole new content of the file")


class SubmitArgs(ToolArgs):
    summary: str = Field("", description="one paragraph: what was done")


class TextOutput(ToolOutput):
    text: str

    def render(self) -> str:
        return self.text


class SubmitOutput(ToolOutput):
    submitted: bool = True
    summary: str = ""

    def render(self) -> str:
        return "submitted; the episode ends here"


class TerminalTools:
    """shell, read_file, write_file and submit on a task container; refuses every call once ``deadline``
    passed, so nothing the agent does can overlap the tests."""

    def __init__(self, sandbox, deadline: float, default_timeout_s: float = 180.0):
        self.sandbox, self.deadline, self.default_timeout_s = sandbox, deadline, default_timeout_s
        self.stopped = False
        self.registry = ToolRegistry([
            Tool("shell", "Run a bash command in the task's container (as root, in the task's working directory); "
                 "returns exit code and output. Background processes end with their command.", ShellArgs, self.shell,
                 read_only=False),
            Tool("read_file", "Read a text file in the container.", ReadArgs, self.read_file),
            Tool("write_file", "Create or replace a file in the container with the given content.", WriteArgs,
                 self.write_file, read_only=False),
            Tool("submit", "Say the task is done and stop.", SubmitArgs, self.submit, read_only=False),
        ])

    def _left(self) -> float:
        left = _remaining(self.deadline)
        if self.stopped or left <= 0:
            raise ToolError("the agent's time for this task is up; no more commands run")
        return left

    def shell(self, args: ShellArgs) -> CommandOutput:
        left = self._left()
        try:
            res = self.sandbox.exec(args.command, timeout=min(args.timeout_s or self.default_timeout_s, left))
        except RuntimeFailure as exc:
            raise ToolError(str(exc)) from None
        return CommandOutput.from_exec(args.command, res)

    def read_file(self, args: ReadArgs) -> TextOutput:
        self._left()
        try:
            data = self.sandbox.read_file(args.path)
        except RuntimeFailure as exc:
            raise ToolError(str(exc)) from None
        cut = len(data) > MAX_READ_BYTES
        text = data[:MAX_READ_BYTES].decode("utf-8", errors="replace")
        return TextOutput(text=text + (f"\n[... {len(data) - MAX_READ_BYTES:,} more bytes not shown]" if cut else ""))

    def write_file(self, args: WriteArgs) -> TextOutput:
        self._left()
        try:
            self.sandbox.write_file(args.path, args.content)
        except RuntimeFailure as exc:
            raise ToolError(str(exc)) from None
        return TextOutput(text=f"wrote {len(args.content.encode())} bytes to {args.path}")

    def submit(self, args: SubmitArgs) -> SubmitOutput:
        return SubmitOutput(summary=args.summary)


_FAILURES = {"context_exceeded": "context_length_exceeded", "format_errors": "fatal_llm_parse_error",
             "model_error": "unknown_agent_error", "agent_error": "unknown_agent_error"}


class LoopCoderAgent:
    """The agent of ``loopcoder.agent`` (plan or single mode) with the shell-centred tools and terminal prompts."""

    name = "loopcoder"

    def __init__(self, config, model_factory=None):
        self.config = config
        self.model_factory = model_factory

    def perform(self, task: TerminalTask, sandbox, deadline: float, log_dir: Path) -> AgentRun:
        from loopcoder.agent import ModelClient
        from loopcoder.agent.loop import Agent, Outcome
        from loopcoder.agent.trajectory import Header, ModelInfo, Stop, TaskInfo, Trajectory

        log_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.config.model_copy(deep=True)
        if cfg.prompts.dir is None:
            cfg.prompts.dir = PROMPTS
        left = max(_remaining(deadline), 1.0)
        cfg.budgets.wall_time_s = min(cfg.budgets.wall_time_s or left, left)
        cfg.model.timeout_s = min(cfg.model.timeout_s, left)
        tools = TerminalTools(sandbox, deadline)
        try:
            model = self.model_factory(cfg.model) if self.model_factory else ModelClient(cfg.model)
            cfg.check_for_model(model.name)
            header = Header(task=TaskInfo(text=task.instruction, workspace=f"container:{sandbox.workdir}"),
                            model=ModelInfo(url=getattr(model, "url", None), name=model.name,
                                            max_model_len=model.max_model_len()),
                            config=cfg.public_dump())
        except Exception as exc:  # noqa: BLE001 - an unreachable model is this trial's agent error
            return AgentRun("unknown_agent_error", f"{type(exc).__name__}: {exc}")
        with Trajectory(log_dir / "trajectory.jsonl", fsync=cfg.fsync) as trajectory:
            trajectory.write(header)
            agent = Agent(model, tools, cfg, trajectory)
            try:
                outcome = agent.run(task.instruction)
            except Exception as exc:  # noqa: BLE001 - recorded as the trial's agent error
                outcome = Outcome("agent_error", f"{type(exc).__name__}: {exc}")
            finally:
                tools.stopped = True
            trajectory.write(Stop(reason=outcome.reason, detail=outcome.detail, step=agent.budget.steps,
                                  stats={**agent.stats.as_dict(), "budget": agent.budget.used()}))
        used = agent.budget.used()
        failure = _FAILURES.get(outcome.reason, "none")
        if outcome.reason == "wall_time" or _remaining(deadline) <= 0:
            failure = "agent_timeout"
        return AgentRun(failure, f"{outcome.reason}: {outcome.detail}".rstrip(": "), used["input_tokens"],
                        used["output_tokens"], used["steps"])


def make_agent(name: str, agent_config=None, model_factory=None):
    if name == "oracle":
        return OracleAgent()
    if name == "noop":
        return NoopAgent()
    if name == "loopcoder":
        if agent_config is None:
            raise ValueError("the loopcoder agent needs an agent config")
        return LoopCoderAgent(agent_config, model_factory)
    raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
