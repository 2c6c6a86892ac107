"""The chat requests an episode sent, rebuilt from its trajectory, each with the answer it got.

A ``model_request`` event records only the messages added since the phase's previous request and the
names of the tools. The rest is rebuilt the way the agent built it: each phase's history grows by those
messages (a planner phase starts afresh, an executor resuming after a re-plan continues its own), old tool
outputs are elided with the agent's own ``ContextWindow`` before every request, and the tool schemas come
from the same registries (``phase_registries``, ``sent_schemas``) over a toolbox with the recorded test
command. The body is the one ``ModelClient`` sends (``chat_body``). A history folded into a summary (a
``context`` event) is rebuilt too (``refold``: the summary is the next request's first new message, the
kept tail follows from the recorded message count), a compaction is not; either way the phase's later
requests are marked unusable as training samples, as is any request whose rebuilt history does not have
the recorded number of messages. ``prompt_tokens`` and ``completion_tokens`` are what the server reported.

The answer is the assistant message the agent put into its history (``assistant_message``), with the
reasoning kept when the request asked for thinking: the text a model must write to make that move.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from loopcoder.agent.client import chat_body
from loopcoder.agent.config import AgentConfig
from loopcoder.agent.context import ContextWindow
from loopcoder.agent.loop import assistant_message, phase_registries, sent_schemas
from loopcoder.agent.plan import PlanBook
from loopcoder.agent.templates import Prompts
from loopcoder.agent.toolcalls import check_calls, parse_answer
from loopcoder.agent.trajectory import (ContextEvent, Header, ModelAnswer, ModelRequest, PhaseStart, Stop,
                                        read_trajectory)


@dataclass
class RecordedRequest:
    """One model call of an episode: the request body, the answer as a message, and whether both are usable."""

    step: int
    phase: str
    body: dict[str, Any]
    answer: Optional[dict[str, Any]]  # assistant message: content, tool_calls, reasoning_content
    problem: Optional[str] = None  # why this call cannot be a training sample (None: it can)
    prompt_tokens: int = 0  # the server's usage for this call (0: no answer)
    completion_tokens: int = 0


@dataclass
class EpisodeRequests:
    path: Path
    stop_reason: Optional[str]
    requests: list[RecordedRequest]


def refold(history: list[dict], new_messages: list[dict], n_messages: int, summary_at: int) -> list[dict]:
    """The history after the agent folded old turns into a summary (``ContextWindow.summarize``): the
    messages before ``summary_at``, the summary (the first new message), the kept tail of the old history,
    then the other new messages; the tail's length follows from the recorded message count."""
    summary, fresh = new_messages[0], new_messages[1:]
    keep = n_messages - summary_at - 1 - len(fresh)
    if keep < 0 or keep > len(history) - summary_at:
        raise ValueError(f"cannot refold {len(history)} messages into {n_messages}")
    tail = history[len(history) - keep:] if keep else []
    return history[:summary_at] + [summary] + tail + fresh


def episode_requests(path: str | Path) -> EpisodeRequests:
    """Every model call of the trajectory at ``path``, in order."""
    from loopcoder.tools.toolbox import Toolbox

    events = read_trajectory(path)
    header: Header = events[0]
    config = AgentConfig.model_validate(header.config)
    prompts = Prompts(config.prompts)
    with tempfile.TemporaryDirectory() as empty:  # the schemas do not depend on the files
        toolbox = Toolbox(workspace=empty, task_text=header.task.text, test_command=header.task.test_command)
    registries = phase_registries(toolbox.registry, PlanBook(config.step_failures_to_replan))
    all_tools = [*toolbox.registry.names, "write_plan", "update_plan"]
    histories: dict[str, list[dict]] = {}
    windows: dict[str, ContextWindow] = {}
    folded: set[str] = set()
    refold_next: set[str] = set()  # phases whose next request starts with a new summary
    summary_at: dict[str, int] = {}  # where each phase's summary sits (the first fold's first assistant turn)
    out: list[RecordedRequest] = []
    pending: Optional[tuple[ModelRequest, dict, Optional[str]]] = None
    stop, current = None, ""
    for event in events[1:]:
        if isinstance(event, (PhaseStart, ModelRequest)):
            current = event.phase  # a context event belongs to the phase that runs
        if isinstance(event, PhaseStart):
            if event.reason != "resume" or event.phase not in histories:
                histories[event.phase] = []
                windows[event.phase] = ContextWindow(config.context, header.model.max_model_len,
                                                     lambda lines: prompts.render("summary", lines=lines))
                folded.discard(event.phase)
                refold_next.discard(event.phase)
                summary_at.pop(event.phase, None)
        elif isinstance(event, ContextEvent):
            folded.add(current)
            if event.action == "summary":
                refold_next.add(current)
        elif isinstance(event, ModelRequest):
            if pending is not None:  # a request with no answer (a context overflow, then a retry)
                out.append(RecordedRequest(pending[0].step, pending[0].phase, pending[1], None, "no answer"))
            history = histories.setdefault(event.phase, [])
            if event.phase in refold_next and event.new_messages:
                refold_next.discard(event.phase)
                at = summary_at.setdefault(event.phase, next(
                    (i for i, m in enumerate(history) if m["role"] == "assistant"), len(history)))
                try:
                    history[:] = refold(history, event.new_messages, event.n_messages, at)
                except ValueError:
                    history.extend(event.new_messages)  # the count check below reports it
            else:
                history.extend(event.new_messages)
            window = windows.get(event.phase)
            if window is not None:
                window.elide_old_outputs(history)
            registry = registries.get(event.phase)
            problem = None
            if event.phase in folded:
                problem = "the history was folded into a summary"
            elif len(history) != event.n_messages:
                problem = f"rebuilt {len(history)} messages, the trajectory says {event.n_messages}"
            elif registry is None or registry.names != event.tools:
                problem = f"tools {event.tools} are not those of the {event.phase} phase"
            tools = sent_schemas(registry, config) if registry is not None else []
            body = chat_body(header.model.name, config.model, [dict(m) for m in history], tools,
                             event.thinking, event.max_tokens)
            pending = (event, body, problem)
        elif isinstance(event, ModelAnswer) and pending is not None:
            request, body, problem = pending
            pending = None
            parsed = parse_answer(event.content, event.tool_calls, f"call_{event.step}")
            registry = registries.get(request.phase)
            if registry is not None:
                check_calls(parsed, registry, all_tools, request.phase)
            reasoning = event.reasoning if request.thinking else None
            answer = assistant_message(parsed, reasoning)
            if problem is None and not parsed.calls:
                problem = "the answer has no tool call"
            elif problem is None and not all(c.ok for c in parsed.calls):
                problem = "the answer has a tool call that cannot run: " + next(c.error for c in parsed.calls
                                                                                if not c.ok)
            out.append(RecordedRequest(request.step, request.phase, body, answer, problem, event.prompt_tokens,
                                       event.completion_tokens))
        elif isinstance(event, Stop):
            stop = event.reason
    if pending is not None:
        out.append(RecordedRequest(pending[0].step, pending[0].phase, pending[1], None, "no answer"))
    return EpisodeRequests(Path(path), stop, out)

