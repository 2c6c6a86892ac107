"""The plan: what the planner writes (``write_plan``) and the executor reports progress on (``update_plan``).

Both are ordinary tools (``loopcoder.tools.base.Tool``) so they go through the same registry, schemas and
error handling as every other tool. ``PlanBook`` holds the current plan and decides when the executor's
reports call for a new plan: a step reported failed ``failures_to_replan`` times, or ``replan: true``.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from loopcoder.tools.base import Tool, ToolArgs, ToolError, ToolOutput


class PlanStep(ToolArgs):
    goal: str = Field(..., min_length=1, description="what this step achieves")
    files: list[str] = Field(default_factory=list, description="files to read or change")
    verify: str = Field(..., min_length=1, description="how to check the step is done (a test, a command)")


class Plan(ToolArgs):
    steps: list[PlanStep] = Field(..., min_length=1, max_length=20, description="the steps, in order")


class UpdatePlanArgs(ToolArgs):
    step: int = Field(..., ge=1, description="step number, from 1")
    status: Literal["in_progress", "done", "failed"]
    note: str = Field("", description="what happened")
    replan: bool = Field(False, description="ask the planner for a new plan")


class PlanText(ToolOutput):
    text: str

    def render(self) -> str:
        return self.text


_MARK = {"pending": " ", "in_progress": ">", "done": "x", "failed": "!"}


class PlanBook:
    """The current plan, each step's status and failure count, and a pending re-plan request."""

    def __init__(self, failures_to_replan: int = 2):
        self.failures_to_replan = failures_to_replan
        self.plan: Optional[Plan] = None
        self.status: list[str] = []
        self.failures: list[int] = []
        self.notes: list[str] = []
        self.replan_reason: Optional[str] = None  # set by update_plan; the agent clears it when it re-plans
        self.replans_left = 0

    def write_plan(self, plan: Plan) -> PlanText:
        self.plan = plan
        self.status = ["pending"] * len(plan.steps)
        self.failures = [0] * len(plan.steps)
        self.notes = [""] * len(plan.steps)
        self.replan_reason = None
        return PlanText(text="plan recorded:\n" + self.render())

    def update_plan(self, args: UpdatePlanArgs) -> PlanText:
        if self.plan is None:
            raise ToolError("there is no plan to update")
        if args.step > len(self.plan.steps):
            raise ToolError(f"step {args.step} does not exist; the plan has {len(self.plan.steps)} steps")
        i = args.step - 1
        self.status[i], self.notes[i] = args.status, args.note
        reason = None
        if args.status == "failed":
            self.failures[i] += 1
            if self.failures[i] >= self.failures_to_replan:
                reason = f"step {args.step} failed {self.failures[i]} times: {args.note}"
        if args.replan:
            reason = f"the executor asked for a new plan: {args.note}"
        text = self.render()
        if reason and self.replans_left > 0:
            self.replan_reason = reason
            text += f"\nre-planning ({reason})"
        elif reason:
            text += "\nno re-plans left: carry on with this plan"
        return PlanText(text=text)

    def render(self) -> str:
        if self.plan is None:
            return "(no plan)"
        lines = []
        for n, (step, status, note) in enumerate(zip(self.plan.steps, self.status, self.notes), 1):
            files = f" [{', '.join(step.files)}]" if step.files else ""
            lines.append(f"{n}. [{_MARK[status]}] {step.goal}{files} (verify: {step.verify})"
                         + (f" -- {note}" if note else ""))
        return "\n".join(lines)

    def tools(self) -> tuple[Tool, Tool]:
        """(write_plan for the planner, update_plan for the executor)."""
        return (Tool("write_plan", "Record the plan and end planning: ordered steps, each with goal, files and "
                     "how to verify it.", Plan, self.write_plan),
                Tool("update_plan", "Report a plan step's status (in_progress, done, failed); replan=true asks "
                     "for a new plan.", UpdatePlanArgs, self.update_plan))
