"""The trajectory: one append-only JSONL file of typed events, the single record of an episode.

The first line is the run header (task, key-free config, model, versions); then every model request and
response, retry, tool call and result, format error, plan change and context compaction; the last line
is the stop event. Each event is one ``write`` of a whole line to a file opened with ``O_APPEND`` (and
fsync'd when configured), so a crash or ``kill -9`` leaves every event written before it readable.
The CLI's progress display, replay and the summary all read these same events.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, Field, TypeAdapter

FORMAT_VERSION = 1


class _Event(BaseModel):
    time: float = Field(default_factory=time.time)


class TaskInfo(BaseModel):
    text: str
    repo: Optional[str] = None  # where the workspace was cloned from (replay clones it again)
    workspace: Optional[str] = None
    base_commit: Optional[str] = None
    test_command: Optional[str] = None


class ModelInfo(BaseModel):
    url: Optional[str] = None
    name: str
    max_model_len: Optional[int] = None


class Header(_Event):
    type: Literal["header"] = "header"
    format_version: int = FORMAT_VERSION
    task: TaskInfo
    model: ModelInfo
    config: dict[str, Any]
    versions: dict[str, str] = Field(default_factory=lambda: versions())


class PhaseStart(_Event):
    type: Literal["phase"] = "phase"
    phase: str
    reason: str = "start"


class ModelRequest(_Event):
    type: Literal["model_request"] = "model_request"
    step: int
    phase: str
    new_messages: list[dict[str, Any]]  # appended to the phase's history since its previous request
    n_messages: int
    tools: list[str]
    thinking: Optional[bool]
    max_tokens: int
    estimated_tokens: int


class ModelAnswer(_Event):
    type: Literal["model_response"] = "model_response"
    step: int
    phase: str
    content: Optional[str]
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    reasoning: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Optional[str] = None
    latency_s: float = 0.0


class Retry(_Event):
    type: Literal["retry"] = "retry"
    step: int
    attempt: int
    error: str
    wait_s: float


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    step: int
    id: str
    name: Optional[str]
    arguments: Optional[dict[str, Any]]
    raw: str
    source: str
    repaired: bool = False
    error: Optional[str] = None


class ToolResultEvent(_Event):
    type: Literal["tool_result"] = "tool_result"
    step: int
    id: str
    name: str
    ok: bool
    output: str
    duration_s: float


class FormatError(_Event):
    type: Literal["format_error"] = "format_error"
    step: int
    errors: list[str]
    consecutive: int


class PlanEvent(_Event):
    type: Literal["plan"] = "plan"
    step: int
    action: Literal["written", "updated", "replan"]
    plan: Optional[dict[str, Any]]
    rendered: str = ""  # the plan with each step's status, as the model sees it
    note: str = ""


class ContextEvent(_Event):
    type: Literal["context"] = "context"
    step: int
    action: Literal["summary", "compaction"]
    turns_replaced: int
    tokens_before: int
    tokens_after: int


class PatchInfo(BaseModel):
    path: Optional[str] = None
    files: list[str] = Field(default_factory=list)
    empty: bool = True
    verified: bool = False
    error: Optional[str] = None


class Stop(_Event):
    type: Literal["stop"] = "stop"
    reason: str
    detail: str = ""
    step: int
    stats: dict[str, Any] = Field(default_factory=dict)
    patch: Optional[PatchInfo] = None


Event = Annotated[Union[Header, PhaseStart, ModelRequest, ModelAnswer, Retry, ToolCallEvent, ToolResultEvent,
                        FormatError, PlanEvent, ContextEvent, Stop], Field(discriminator="type")]
_EVENT = TypeAdapter(Event)


class TrajectoryError(ValueError):
    """A trajectory file is unreadable; the message names the line."""


class Trajectory:
    """Appends events to ``path`` (created, never overwritten); ``listeners`` see each event after it is written."""

    def __init__(self, path: str | Path, fsync: bool = True,
                 listeners: tuple[Callable[[Any], None], ...] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            raise TrajectoryError(f"{self.path} exists; choose a new output folder") from None
        self.fsync = fsync
        self.listeners = list(listeners)

    def write(self, event: BaseModel) -> None:
        if self._fd is None:
            raise TrajectoryError(f"{self.path} is closed")
        data = (event.model_dump_json() + "\n").encode()
        while data:  # one write in practice; a short write must not leave half a line
            data = data[os.write(self._fd, data):]
        if self.fsync:
            os.fsync(self._fd)
        for listener in self.listeners:
            listener(event)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Trajectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_trajectory(path: str | Path) -> list[Any]:
    """Every event of a trajectory file, header first. A last line without its newline (the writer was
    killed mid-write) is left out; any other bad line is a TrajectoryError."""
    text = Path(path).read_text(encoding="utf-8")
    complete = text.split("\n")[:-1]  # the last piece is "" or a line the writer did not finish
    events = []
    for number, line in enumerate(complete, 1):
        try:
            events.append(_EVENT.validate_python(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as exc:
            raise TrajectoryError(f"{path}:{number}: not a trajectory event ({str(exc).splitlines()[0]})") from None
    if not events or not isinstance(events[0], Header):
        raise TrajectoryError(f"{path}: the first line is not a run header")
    return events


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("loopcoder", "openai"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out
