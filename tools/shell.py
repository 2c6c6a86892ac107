"""Tools that run in the task's sandbox: shell, run_tests, and submit (which ends the episode)."""
from __future__ import annotations

import re
import shlex

from pydantic import Field

from loopcoder.runtime.sandbox import ExecResult, Sandbox
from loopcoder.tools.base import ToolArgs, ToolError, ToolOutput
from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.workspace import Workspace


class ShellArgs(ToolArgs):
    command: str = Field(..., min_length=1, description="bash command; cd and export carry over")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="kill after this many seconds")


class RunTestsArgs(ToolArgs):
    paths: list[str] = Field(default_factory=list,
                             description="test files or ids (tests/t.py::test_y); empty: all")


class SubmitArgs(ToolArgs):
    summary: str = Field("", description="what was wrong and what the change does")


class CommandOutput(ToolOutput):
    command: str
    exit_code: int
    output: str
    timed_out: bool
    truncated_bytes: int
    duration_s: float
    oom_killed: bool = False

    @classmethod
    def from_exec(cls, command: str, res: ExecResult) -> "CommandOutput":
        return cls(command=command, exit_code=res.exit_code, output=res.output, timed_out=res.timed_out,
                   truncated_bytes=res.truncated_bytes, duration_s=res.duration_s, oom_killed=res.oom_killed)

    def status(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f}s (killed)"
        if self.oom_killed:
            return "killed: out of memory"
        return f"exit code {self.exit_code} ({self.duration_s:.1f}s)"

    def render(self) -> str:
        cut = f", {self.truncated_bytes:,} bytes of output cut from the middle" if self.truncated_bytes else ""
        return f"{self.status()}{cut}\n{self.output}" if self.output else f"{self.status()}{cut}, no output"


class TestsOutput(CommandOutput):
    passed: bool
    summary: str

    def render(self) -> str:
        verdict = "tests passed" if self.passed else "tests FAILED"
        return f"{verdict}: {self.summary or self.status()}\n$ {self.command}\n{self.output}"


class SubmitOutput(ToolOutput):
    submitted: bool
    summary: str

    def render(self) -> str:
        return "submitted; the episode ends here"


_SUMMARY = re.compile(r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
                      r"(?:, )?)+)(?: in [\d.]+s.*)?=*\s*$", re.MULTILINE)


_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$", re.MULTILINE)
_UNITTEST_END = re.compile(r"^(OK|FAILED)(?: \((.*)\))?\s*$", re.MULTILINE)


def _unittest_summary(output: str) -> str:
    """``Ran 3 tests: FAILED (failures=1)`` from unittest's closing lines, or "" when there are none."""
    ran = _UNITTEST_RAN.findall(output)
    end = _UNITTEST_END.findall(output)
    if not ran or not end:
        return ""
    verdict, detail = end[-1]
    return f"Ran {ran[-1]} tests: {verdict}" + (f" ({detail})" if detail else "")


class ShellTools:
    """Runs commands in a ``Sandbox``; ``submitted`` turns true once the model calls submit."""

    def __init__(self, workspace: Workspace, config: ToolsConfig, sandbox: Sandbox | None,
                 test_command: str | None = None):
        self.workspace = workspace
        self.config = config
        self.sandbox = sandbox
        self.test_command = test_command or config.shell.test_command
        self.submitted = False
        self.summary = ""

    def shell(self, args: ShellArgs) -> CommandOutput:
        res = self._exec(args.command, args.timeout_s or self.config.shell.timeout_s)
        return CommandOutput.from_exec(args.command, res)

    def run_tests(self, args: RunTestsArgs) -> TestsOutput:
        for p in args.paths:
            self.workspace.resolve(p.split("::", 1)[0])  # confined, and a clear error for a typo
        command = " ".join([self.test_command, *(shlex.quote(p) for p in args.paths)])
        res = self._exec(command, self.config.shell.test_timeout_s)
        out = CommandOutput.from_exec(command, res)
        found = _SUMMARY.findall(res.output)
        summary = found[-1].strip().rstrip(",") if found else _unittest_summary(res.output)
        return TestsOutput(**out.model_dump(), passed=res.ok, summary=summary)

    def submit(self, args: SubmitArgs) -> SubmitOutput:
        self.submitted = True
        self.summary = args.summary
        return SubmitOutput(submitted=True, summary=args.summary)

    def _exec(self, command: str, timeout: float) -> ExecResult:
        if self.sandbox is None:
            raise ToolError("no sandbox is attached to this session; shell and run_tests are unavailable")
        try:
            return self.sandbox.exec(command, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a broken sandbox is reported to the model, not raised
            raise ToolError(f"sandbox error: {type(exc).__name__}: {exc}".replace("\n", " ")[:500]) from None
