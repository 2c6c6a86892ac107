"""summary.md: what changed and why, the tests that ran and their results, the environment; also the body of
the draft pull request, so it names no local path.

Text written by the model (its submit summary, plan goals) and by the issue's authors is untrusted: it is
quoted, stripped of control characters and capped, never interpreted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loopcoder.agent.trajectory import PlanEvent, Stop, ToolCallEvent, ToolResultEvent, read_trajectory
from loopcoder.runtime.hostgit import empty_git_dir, run_git

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TEST_SHELL = re.compile(r"\b(pytest|unittest|tox|nox|make\s+(test|tests|check)|npm\s+(run\s+)?test|yarn\s+test|"
                         r"go\s+test|cargo\s+test|runtests)\b")


@dataclass
class TestRun:
    when: str  # "agent, step 3" | "final check"
    command: str
    passed: bool
    result: str  # one line


@dataclass
class FileChange:
    path: str
    added: Optional[int]  # None: binary
    removed: Optional[int]


def clean(text: str, limit: int = 2000) -> str:
    text = _CONTROL.sub("\ufffd", text or "").strip()
    return text if len(text) <= limit else text[:limit] + " [...]"


def _cell(text: str, limit: int = 160) -> str:
    return clean(text, limit).replace("\n", " ").replace("|", "\\|")


def diffstat(patch: str) -> list[FileChange]:
    """Lines added and removed per file (``git apply --numstat``; reads only the patch text)."""
    if not patch.strip():
        return []
    proc = run_git(["apply", "--numstat", "-"], git_dir=empty_git_dir(), input=patch.encode("utf-8", "surrogateescape"),
                   check=False)
    out = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        added, removed, path = (line.split("\t", 2) + ["", ""])[:3]
        out.append(FileChange(path, int(added) if added.isdigit() else None,
                              int(removed) if removed.isdigit() else None))
    return out


def tests_from_trajectory(path: Path) -> list[TestRun]:
    """run_tests calls and shell commands that run tests, in order, with their results."""
    events = read_trajectory(path)
    calls = {e.id: e for e in events if isinstance(e, ToolCallEvent)}
    runs = []
    for e in events:
        if not isinstance(e, ToolResultEvent):
            continue
        call = calls.get(e.id)
        first = (e.output.splitlines() or [""])[0]
        if e.name == "run_tests":
            lines = e.output.splitlines()
            command = lines[1][2:] if len(lines) > 1 and lines[1].startswith("$ ") else "run_tests"
            passed = first.startswith("tests passed")
            runs.append(TestRun(f"agent, step {e.step}", command, passed, first.split(": ", 1)[-1] if
                                first.startswith("tests ") else first))
        elif e.name == "shell" and call is not None and isinstance(call.arguments, dict):
            command = str(call.arguments.get("command", ""))
            if _TEST_SHELL.search(command):
                runs.append(TestRun(f"agent, step {e.step}", command, first.startswith("exit code 0 "), first))
    return runs


def last_plan(path: Path) -> str:
    plans = [e for e in read_trajectory(path) if isinstance(e, PlanEvent)]
    return plans[-1].rendered if plans else ""


def stop_event(path: Path) -> Optional[Stop]:
    stops = [e for e in read_trajectory(path) if isinstance(e, Stop)]
    return stops[-1] if stops else None


_OUTCOME = {"submitted": "the agent submitted a solution", "steps": "the step budget ran out",
            "input_tokens": "the input-token budget ran out", "output_tokens": "the output-token budget ran out",
            "wall_time": "the time budget ran out", "cost": "the cost budget ran out",
            "format_errors": "the model's answers could not be read",
            "repeating": "the model kept repeating a call whose result could not change",
            "no_plan": "no plan was written",
            "context_exceeded": "the conversation outgrew the model's context",
            "model_error": "the model server failed", "interrupted": "interrupted (Ctrl-C)",
            "agent_error": "an error in the agent"}


def summary_markdown(*, issue_ref, issue, result, model_name: str, base_commit: str, branch: str,
                     env_lines: list[str], env_result_line: str, test_command: Optional[str], test_source: str,
                     env_failures: list[str], final: Optional[TestRun], patch_text: str) -> str:
    """The summary (markdown). ``result`` is the agent's EpisodeResult."""
    out = [f"## LoopCoder: {issue_ref.full_name}#{issue_ref.number}", ""]
    state = issue.state + (", locked" if issue.locked else "")
    out.append(f"**Issue:** [{_cell(issue.title, 200)}]({issue.html_url or issue_ref.url}) ({state}, "
               f"{len(issue.comments)} comment{'s' if len(issue.comments) != 1 else ''})  ")
    detail = "" if result.reason == "submitted" else f" (stop reason `{_cell(result.reason, 40)}`)"
    out.append(f"**Outcome:** {_OUTCOME.get(result.reason, 'stopped')}{detail} after {result.steps} model "
               f"call{'s' if result.steps != 1 else ''}")
    out += ["", "### What changed", ""]
    changes = diffstat(patch_text)
    if result.patch.error:
        out.append(f"The patch could not be extracted: {clean(result.patch.error, 300)}")
    elif not changes:
        out.append("No change was made.")
    else:
        for c in changes:
            stat = "binary" if c.added is None else f"+{c.added} -{c.removed}"
            out.append(f"- `{_cell(c.path, 200)}` ({stat})")
        added = sum(c.added or 0 for c in changes)
        removed = sum(c.removed or 0 for c in changes)
        out.append(f"\n{len(changes)} file{'s' if len(changes) != 1 else ''}, +{added} -{removed}.")
    out += ["", "### Why", ""]
    why = clean(result.detail, 3000) if result.reason == "submitted" else ""
    out.append("\n".join("> " + line for line in why.splitlines()) if why else
               "The agent gave no explanation" + (" (it did not submit)." if result.reason != "submitted" else "."))
    plan = last_plan(result.trajectory)
    if plan:
        out += ["", "Plan (as last updated):", "", "```", clean(plan, 3000).replace("```", "'''"), "```"]
    out += ["", "### Tests", ""]
    runs = tests_from_trajectory(result.trajectory) + ([final] if final else [])
    if runs:
        out += ["| when | command | result |", "|---|---|---|"]
        for r in runs:
            command = _cell(r.command, 120).replace("`", "'")
            out.append(f"| {r.when} | `{command}` | "
                       f"{'passed' if r.passed else 'FAILED'}: {_cell(r.result)} |")
        if final:
            out.append("\nThe final check is LoopCoder's own run of the test command on the changed tree after the "
                       "episode (not the model's report).")
    else:
        out.append("No tests were run.")
    out += ["", "### Environment", ""]
    out += [f"- detected: {_cell(line, 300)}" for line in env_lines]
    out.append(f"- sandbox: {env_result_line}")
    out += [f"- {_cell(f, 300)}" for f in env_failures]
    out.append(f"- test command: `{test_command}` ({test_source})" if test_command else
               "- test command: none found")
    verified = " (verified to apply to a clean checkout)" if result.patch.verified else ""
    out += ["", "### Run", "",
            f"Model `{_cell(model_name, 80)}`, {result.budget['input_tokens']:,} input and "
            f"{result.budget['output_tokens']:,} output tokens, {result.budget['wall_time_s']:.0f} s; base commit "
            f"`{base_commit[:12]}` ({_cell(branch, 80)}); patch{verified} and trajectory kept with the run.", ""]
    return "\n".join(out)
