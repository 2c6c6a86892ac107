"""The agent's loop: ask the model, read its tool calls, run them, show it the results, check the budgets.

``mode: plan`` runs a planner (read-only tools + ``write_plan``) and then an executor (every tool +
``update_plan``) that goes back to the planner when a step fails repeatedly or it asks to, and ends with
``submit``; ``mode: single`` is one loop with every tool. Each phase is the same loop over its own message
history; everything that happens is written to the trajectory as it happens.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from loopcoder.agent.budget import Budget
from loopcoder.agent.client import ContextOverflow, Model, ModelError, ModelResponse
from loopcoder.agent.config import AgentConfig
from loopcoder.agent.context import ContextWindow, compact_schema
from loopcoder.agent.plan import PlanBook
from loopcoder.agent.templates import Prompts
from loopcoder.agent.toolcalls import ParsedAnswer, ToolCall, check_calls, parse_answer, refuse_cut_call
from loopcoder.agent.trajectory import (ContextEvent, FormatError, ModelAnswer, ModelRequest, PhaseStart,
                                        PlanEvent, Retry, ToolCallEvent, ToolResultEvent, Trajectory)
from loopcoder.tools.registry import ToolRegistry
from loopcoder.tools.toolbox import Toolbox

EDIT_TOOLS = {"str_replace", "insert", "create", "undo"}
WORKSPACE_TOOLS = EDIT_TOOLS | {"shell"}  # a successful call of these may have changed the workspace
NO_CALL = ("no tool call found{cut}; answer with exactly one tool call, such as:\n"
           '<tool_call>\n{{"name": "view", "arguments": {{"path": "."}}}}\n</tool_call>')


def phase_registries(tools: ToolRegistry, book: PlanBook) -> dict[str, ToolRegistry]:
    """The tools of each phase: the planner's read-only ones + write_plan, the executor's all + update_plan."""
    write_plan, update_plan = book.tools()
    read_only = tools.subset(n for n, t in tools.tools.items() if t.read_only)
    return {"planner": ToolRegistry([*read_only.tools.values(), write_plan]),
            "executor": ToolRegistry([*tools.tools.values(), update_plan]),
            "single": tools}


def sent_schemas(registry: ToolRegistry, config: AgentConfig) -> list[dict]:
    """The tool schemas as the requests send them (compacted unless configured otherwise)."""
    tools = registry.schemas()
    if config.context.compact_tool_schemas:
        tools = [compact_schema(t) for t in tools]
    return tools


def assistant_message(parsed: ParsedAnswer, reasoning: Optional[str] = None) -> dict:
    """An answer as it goes back into the history: readable calls as native tool calls, the rest as text."""
    text = parsed.text
    for call in parsed.calls:
        if call.unreadable and call.source == "native":
            text += f"\n<tool_call>\n{call.raw}\n</tool_call>"
    message: dict = {"role": "assistant", "content": text.strip() or None}
    calls = [c.openai() for c in parsed.calls if not c.unreadable]
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


class RepeatGuard:
    """Refuses a call that already ran ``limit`` times with one same output since the workspace last changed.

    A small model in a loop sends the same failing ``str_replace`` and the same test run again and again; it is
    told so instead of being answered the same way, and ``max_refused`` refusals end the episode (``repeating``)
    rather than letting it burn the rest of its budget. A call whose earlier outputs differ (a flaky test, a
    shell command that changes things) is never refused; any successful call that can change the workspace
    (an edit tool, ``shell``) starts the count afresh.
    """

    def __init__(self, limit: Optional[int], max_refused: int):
        self.limit, self.max_refused = limit, max_refused
        self.outputs: dict[str, list[int]] = {}  # per call key: hashes of its outputs, in order
        self.refused = 0

    @staticmethod
    def key(call: ToolCall) -> str:
        return call.name + "\0" + json.dumps(call.arguments, sort_keys=True)

    def refusal(self, call: ToolCall) -> Optional[str]:
        """The error that answers ``call`` instead of running it, or None to run it."""
        seen = self.outputs.get(self.key(call), [])
        if self.limit is None or len(seen) < self.limit or len(set(seen[-self.limit:])) != 1:
            return None
        self.refused += 1
        return (f"error: not run: this exact {call.name} call already ran {len(seen)} times since the workspace last "
                "changed, with the same result each time; it would not change anything. Try a different call.")

    def ran(self, call: ToolCall, ok: bool, output: str, changes_workspace: bool) -> None:
        if ok and changes_workspace:
            self.outputs.clear()
            self.refused = 0
        self.outputs.setdefault(self.key(call), []).append(hash(output))

    def exhausted(self) -> bool:
        return self.limit is not None and self.refused >= self.max_refused


@dataclass
class Outcome:
    """How a phase (or the episode) ended: a stop reason, or planned/replan between phases."""

    reason: str
    detail: str = ""


@dataclass
class Phase:
    name: str  # planner | executor | single
    registry: ToolRegistry
    tools: list[dict]  # schemas as sent
    thinking: Optional[bool]
    context: ContextWindow
    messages: list[dict]
    max_steps: Optional[int] = None
    steps: int = 0
    fresh: list[dict] = field(default_factory=list)  # messages not yet recorded in a model_request

    def add(self, message: dict) -> None:
        self.messages.append(message)
        self.fresh.append(message)


@dataclass
class Stats:
    tool_calls: int = 0
    well_formed: int = 0
    repaired: int = 0
    format_errors: int = 0  # answers without a single usable call
    edits_tried: int = 0
    edits_applied: int = 0
    test_runs: int = 0
    retries: int = 0
    replans: int = 0
    summaries: int = 0
    repeats_refused: int = 0  # identical calls answered with an error instead of being run (RepeatGuard)
    overhead_s: list[float] = field(default_factory=list)  # per step, outside model and tool time

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "overhead_s"}
        out["well_formed_share"] = round(self.well_formed / self.tool_calls, 4) if self.tool_calls else None
        if self.overhead_s:
            ordered = sorted(self.overhead_s)
            out["overhead_ms_p50"] = round(statistics.median(ordered) * 1e3, 3)
            out["overhead_ms_p99"] = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 3)
        return out


class Agent:
    def __init__(self, model: Model, toolbox: Toolbox, config: AgentConfig, trajectory: Trajectory,
                 test_command: Optional[str] = None, should_stop: Optional[Callable[[], bool]] = None):
        self.model, self.toolbox, self.config, self.traj = model, toolbox, config, trajectory
        self.test_command = test_command
        self.should_stop = should_stop  # asked before every model call (a batch cancelling its episodes)
        self.prompts = Prompts(config.prompts)
        self.budget = Budget(config.budgets, config.price(model.name))
        self.stats = Stats()
        self.book = PlanBook(config.step_failures_to_replan)
        self.book.replans_left = config.max_replans
        self.max_model_len = model.max_model_len()
        self.consecutive_errors = 0
        self.repeats = RepeatGuard(config.max_repeats, config.max_refused_repeats)
        model.on_retry = self._on_retry
        self.registries = phase_registries(toolbox.registry, self.book)
        self.all_tools = [*toolbox.registry.names, "write_plan", "update_plan"]

    # -- phases -----------------------------------------------------------------------------------
    def run(self, task: str) -> Outcome:
        self.task_block = self.prompts.render("task", task=task, test_command=self.test_command)
        try:
            if self.config.mode == "single":
                return self.run_phase(self.new_phase("single", self.task_block))
            return self.plan_and_execute()
        except KeyboardInterrupt:
            return Outcome("interrupted", "Ctrl-C")

    def plan_and_execute(self) -> Outcome:
        outcome = self.run_phase(self.new_phase("planner", self.task_block))
        if outcome.reason != "planned":
            return outcome
        executor = self.new_phase("executor", self.prompts.render(
            "executor_task", task_block=self.task_block, plan=self.book.render()))
        while True:
            outcome = self.run_phase(executor)
            if outcome.reason != "replan":
                return outcome
            self.stats.replans += 1
            self.book.replans_left -= 1
            outcome = self.run_phase(self.new_phase("planner", self.prompts.render(
                "replan", task_block=self.task_block, plan=self.book.render(), reason=outcome.detail), "replan"))
            if outcome.reason != "planned":
                return outcome
            executor.add({"role": "user", "content": self.prompts.render("new_plan", plan=self.book.render())})
            self.traj.write(PhaseStart(phase="executor", reason="resume"))

    def new_phase(self, name: str, first_message: str, reason: str = "start") -> Phase:
        registry = self.registries[name]
        settings = self.config.planner if name == "planner" else self.config.executor
        tools = sent_schemas(registry, self.config)
        context = ContextWindow(self.config.context, self.max_model_len,
                                lambda lines: self.prompts.render("summary", lines=lines))
        phase = Phase(name, registry, tools, settings.thinking, context, [],
                      max_steps=self.config.planner.max_steps if name == "planner" else None)
        phase.add({"role": "system", "content": self.prompts.render(name)})
        phase.add({"role": "user", "content": first_message})
        self.traj.write(PhaseStart(phase=name, reason=reason))
        return phase

    # -- the loop ---------------------------------------------------------------------------------
    def run_phase(self, phase: Phase) -> Outcome:
        while True:
            started = time.perf_counter()
            if self.should_stop is not None and self.should_stop():
                return Outcome("interrupted", "stopped by the caller")
            if spent := self.budget.exhausted():
                return Outcome(*spent)
            if phase.max_steps is not None and phase.steps >= phase.max_steps:
                return Outcome("no_plan", f"no write_plan in {phase.steps} planner calls")
            try:
                answer = self.ask(phase)
            except ModelError as exc:
                return Outcome(exc.stop_reason, str(exc))
            parsed = parse_answer(answer.content, answer.tool_calls, f"call_{self.budget.steps}")
            check_calls(parsed, phase.registry, self.all_tools, phase.name)
            refuse_cut_call(parsed, answer.finish_reason)
            phase.add(self.assistant_message(answer, parsed))
            outcome, tool_time = self.run_calls(phase, parsed)
            if parsed.well_formed:
                self.consecutive_errors = 0
            self.stats.overhead_s.append(time.perf_counter() - started - answer.latency_s - tool_time)
            if outcome is None and not parsed.well_formed:
                outcome = self.format_error(phase, parsed, answer)
            if outcome is not None:
                return outcome

    def ask(self, phase: Phase) -> ModelResponse:
        ctx = phase.context
        ctx.elide_old_outputs(phase.messages)
        max_tokens = self.max_tokens(phase)
        if ctx.needs_summary(phase.messages, phase.tools, max_tokens):
            self.fold(phase, "summary")
        self.budget.steps += 1
        phase.steps += 1
        self.record_request(phase, max_tokens)
        try:
            answer = self.model.chat(phase.messages, phase.tools, phase.thinking, max_tokens)
        except ContextOverflow:
            self.fold(phase, "compaction")  # one compaction and one retry; a second overflow ends the episode
            self.record_request(phase, max_tokens)
            answer = self.model.chat(phase.messages, phase.tools, phase.thinking, max_tokens)
        ctx.learn(phase.messages, phase.tools, answer.usage.prompt_tokens)
        self.budget.charge(answer.usage)
        self.traj.write(ModelAnswer(step=self.budget.steps, phase=phase.name, content=answer.content,
                                    tool_calls=answer.tool_calls, reasoning=answer.reasoning,
                                    prompt_tokens=answer.usage.prompt_tokens,
                                    completion_tokens=answer.usage.completion_tokens,
                                    finish_reason=answer.finish_reason, latency_s=round(answer.latency_s, 6)))
        return answer

    def run_calls(self, phase: Phase, parsed: ParsedAnswer) -> tuple[Optional[Outcome], float]:
        """Run the answer's calls in order; answer each one that can be sent back. Returns (outcome, tool time)."""
        outcome, tool_time = None, 0.0
        for call in parsed.calls:
            self.record_call(call)
            if call.unreadable:
                continue  # not in the history as a call: the error goes in the user message after
            result, duration = None, 0.0
            if outcome is not None:
                ok, output = False, "not run: an earlier call of this answer ended the phase"
            elif call.error:
                ok, output = False, f"error: {call.error}"
            elif (refusal := self.repeats.refusal(call)) is not None:
                ok, output = False, refusal
                self.stats.repeats_refused += 1
                if self.repeats.exhausted():
                    outcome = Outcome("repeating", f"{self.repeats.refused} identical calls refused since the "
                                                   f"workspace last changed; last: {call.name}")
            else:
                start = time.perf_counter()
                result = phase.registry.call(call.name, call.arguments)
                duration = time.perf_counter() - start
                tool_time += duration
                ok, output = result.ok, result.output
                self.count_tool(call.name, ok)
                self.repeats.ran(call, ok, output, call.name in WORKSPACE_TOOLS)
            self.traj.write(ToolResultEvent(step=self.budget.steps, id=call.id, name=call.name, ok=ok,
                                            output=output, duration_s=round(duration, 6)))
            phase.add({"role": "tool", "tool_call_id": call.id, "content": phase.context.observation(output)})
            if result is not None:
                outcome = self.after_tool(call, result)
        errors = [f"error: {c.error}" for c in parsed.calls if c.unreadable]
        if errors:
            phase.add({"role": "user", "content": "\n".join(errors)})
        return outcome, tool_time

    def after_tool(self, call: ToolCall, result) -> Optional[Outcome]:
        if not result.ok:
            return None
        if call.name == "write_plan":
            self.traj.write(PlanEvent(step=self.budget.steps, action="written", plan=self.book.plan.model_dump(),
                                      rendered=self.book.render()))
            return Outcome("planned")
        if call.name == "update_plan":
            reason = self.book.replan_reason
            self.traj.write(PlanEvent(step=self.budget.steps, action="replan" if reason else "updated",
                                      plan=self.book.plan.model_dump(), rendered=self.book.render(),
                                      note=reason or ""))
            self.book.replan_reason = None
            return Outcome("replan", reason) if reason else None
        if call.name == "submit":
            return Outcome("submitted", getattr(result.data, "summary", ""))
        return None

    def format_error(self, phase: Phase, parsed: ParsedAnswer, answer: ModelResponse) -> Optional[Outcome]:
        """An answer without one usable call: tell the model (when nothing else did), count, maybe stop."""
        self.stats.format_errors += 1
        self.consecutive_errors += 1
        cut = " (your answer was cut at max_tokens)" if answer.finish_reason == "length" else ""
        errors = [c.error for c in parsed.calls] or [NO_CALL.format(cut=cut)]
        if not parsed.calls:
            phase.add({"role": "user", "content": f"error: {errors[0]}"})
        self.traj.write(FormatError(step=self.budget.steps, errors=errors, consecutive=self.consecutive_errors))
        if self.consecutive_errors >= self.config.max_format_errors:
            last = errors[-1].splitlines()[0]
            return Outcome("format_errors", f"{self.consecutive_errors} answers in a row without a usable tool "
                                            f"call; last: {last}")
        return None

    # -- bookkeeping ------------------------------------------------------------------------------
    def max_tokens(self, phase: Phase) -> int:
        limit = self.config.model.max_tokens
        if (left := self.budget.output_left()) is not None:
            limit = min(limit, left)
        if self.max_model_len:  # servers such as vLLM refuse prompt + max_tokens beyond the context
            room = self.max_model_len - phase.context.estimate(phase.messages, phase.tools)
            limit = min(limit, max(32, room))
        return limit

    def fold(self, phase: Phase, action: str) -> None:
        ctx = phase.context
        before = ctx.estimate(phase.messages, phase.tools)
        folded = ctx.summarize(phase.messages) if action == "summary" else ctx.compact(phase.messages)
        if not folded and action == "summary":
            return  # nothing old enough to fold yet
        self.stats.summaries += 1
        # the request log shows the summary as a new message and forgets the messages folded into it
        phase.fresh = [m for m in phase.fresh if any(m is kept for kept in phase.messages)]
        if ctx.summary_index is not None and folded:
            phase.fresh.insert(0, phase.messages[ctx.summary_index])
        self.traj.write(ContextEvent(step=self.budget.steps, action=action, turns_replaced=folded,
                                     tokens_before=before, tokens_after=ctx.estimate(phase.messages, phase.tools)))

    def assistant_message(self, answer: ModelResponse, parsed: ParsedAnswer) -> dict:
        return assistant_message(parsed, answer.reasoning if self.config.keep_reasoning else None)

    def record_request(self, phase: Phase, max_tokens: int) -> None:
        self.traj.write(ModelRequest(step=self.budget.steps, phase=phase.name, new_messages=phase.fresh,
                                     n_messages=len(phase.messages), tools=phase.registry.names,
                                     thinking=phase.thinking, max_tokens=max_tokens,
                                     estimated_tokens=phase.context.estimate(phase.messages, phase.tools)))
        phase.fresh = []

    def record_call(self, call: ToolCall) -> None:
        self.stats.tool_calls += 1
        self.stats.well_formed += call.ok
        self.stats.repaired += call.repaired
        self.traj.write(ToolCallEvent(step=self.budget.steps, id=call.id, name=call.name, arguments=call.arguments,
                                      raw=call.raw, source=call.source, repaired=call.repaired, error=call.error))

    def count_tool(self, name: str, ok: bool) -> None:
        if name in EDIT_TOOLS:
            self.stats.edits_tried += 1
            self.stats.edits_applied += ok
        if name == "run_tests":
            self.stats.test_runs += 1

    def _on_retry(self, attempt: int, error: str, wait_s: float) -> None:
        self.stats.retries += 1
        self.traj.write(Retry(step=self.budget.steps, attempt=attempt, error=error, wait_s=round(wait_s, 3)))
