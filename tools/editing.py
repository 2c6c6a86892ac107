"""Safe editing tools: str_replace, insert, create, undo.

Every edit is checked with tree-sitter before it is written: an edit that adds a syntax error is refused
(``edit.reject_syntax_errors``) or written with a warning naming the line. Each file keeps a stack of its
previous contents, so ``undo`` can step back, including deleting a file that ``create`` made.
"""
from __future__ import annotations

import difflib
import os
from collections import defaultdict
from pathlib import Path

from pydantic import Field

from loopcoder.tools.base import ToolArgs, ToolError, ToolOutput
from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.languages import language_for
from loopcoder.tools.tags import parse, syntax_errors
from loopcoder.tools.workspace import Workspace, is_binary

MAX_CANDIDATES = 8
CONTEXT_LINES = 3


class StrReplaceArgs(ToolArgs):
    path: str = Field(..., description="file to edit, relative to the workspace root")
    old_str: str = Field(..., description="exact text to replace; must occur exactly once in the file "
                                          "(include enough surrounding lines to make it unique)")
    new_str: str = Field(..., description="replacement text (may be empty to delete)")


class InsertArgs(ToolArgs):
    path: str = Field(..., description="file to edit, relative to the workspace root")
    line: int = Field(..., ge=0, description="insert after this line (0 inserts at the top)")
    text: str = Field(..., description="lines to insert")


class CreateArgs(ToolArgs):
    path: str = Field(..., description="new file, relative to the workspace root; folders are created")
    content: str = Field(..., description="the whole file content")
    overwrite: bool = Field(False, description="replace the file if it already exists")


class UndoArgs(ToolArgs):
    path: str = Field(..., description="file whose last edit (str_replace, insert, create) to undo")


class EditOutput(ToolOutput):
    path: str
    action: str
    message: str
    snippet: str = ""
    warnings: list[str] = Field(default_factory=list)

    def render(self) -> str:
        out = [self.message]
        out += [f"warning: {w}" for w in self.warnings]
        if self.snippet:
            out.append(self.snippet)
        return "\n".join(out)


class Editor:
    """Edits files of one workspace and remembers what each edit replaced."""

    def __init__(self, workspace: Workspace, config: ToolsConfig):
        self.workspace = workspace
        self.config = config
        self.history: dict[str, list[bytes | None]] = defaultdict(list)  # None: the file did not exist
        self.on_change = lambda rel: None  # told each changed path, so caches need not trust mtimes alone

    def str_replace(self, args: StrReplaceArgs) -> EditOutput:
        path, rel, text = self._read(args.path)
        old, new = args.old_str, args.new_str
        if not old:
            raise ToolError("old_str is empty; use insert to add text, or create for a new file")
        if old == new:
            raise ToolError("old_str and new_str are the same; nothing to change")
        count = text.count(old)
        if count == 0 and "\r\n" in text and "\r\n" not in old:
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")  # the model writes \n; file uses CRLF
            count = text.count(old)
        if count == 0:
            raise ToolError(f"old_str not found in {rel}. {_closest(text, old)}")
        if count > 1:
            raise ToolError(f"old_str occurs {count} times in {rel}; it must occur exactly once. Add surrounding "
                            f"lines to pick one. Matches start at: {_occurrences(text, old)}")
        at = text.index(old)
        updated = text[:at] + new + text[at + len(old):]
        first = text.count("\n", 0, at) + 1
        last = first + new.count("\n")
        return self._write(path, rel, text, updated, "str_replace", f"replaced 1 occurrence in {rel}",
                           first, last)

    def insert(self, args: InsertArgs) -> EditOutput:
        path, rel, text = self._read(args.path)
        lines = text.splitlines(keepends=True)
        if args.line > len(lines):
            raise ToolError(f"line {args.line} is past the end of {rel} ({len(lines)} lines); "
                            f"use line={len(lines)} to append")
        if not args.text:
            raise ToolError("text is empty; nothing to insert")
        newline = "\r\n" if "\r\n" in text else "\n"
        block = args.text if args.text.endswith(("\n", "\r\n")) else args.text + newline
        if args.line and lines and not lines[args.line - 1].endswith("\n"):
            lines[args.line - 1] += newline  # inserting after a last line that had no newline
        updated = "".join(lines[: args.line]) + block + "".join(lines[args.line:])
        first = args.line + 1
        return self._write(path, rel, text, updated, "insert",
                           f"inserted {block.count(chr(10))} line(s) after line {args.line} of {rel}",
                           first, first + block.count("\n") - 1)

    def create(self, args: CreateArgs) -> EditOutput:
        path = self.workspace.resolve(args.path, must_exist=False)
        rel = self.workspace.rel(path)
        if path == self.workspace.root or path.is_dir():
            raise ToolError(f"{rel} is a directory; give a file path")
        previous: str | None = None
        if path.exists():
            if not args.overwrite:
                raise ToolError(f"{rel} already exists; use str_replace to change it, or overwrite=true to "
                                "replace it whole")
            _, _, previous = self._read(args.path)
        if path.parent.exists() and not path.parent.is_dir():
            raise ToolError(f"cannot create {rel}: {self.workspace.rel(path.parent)} is a file")
        return self._write(path, rel, previous, args.content, "create",
                           f"{'overwrote' if previous is not None else 'created'} {rel} "
                           f"({args.content.count(chr(10)) + (0 if args.content.endswith(chr(10)) else 1)} lines)",
                           1, min(args.content.count("\n") + 1, 2 * CONTEXT_LINES + 1))

    def undo(self, args: UndoArgs) -> EditOutput:
        path = self.workspace.resolve(args.path, must_exist=False)
        rel = self.workspace.rel(path)
        stack = self.history.get(rel)
        if not stack:
            raise ToolError(f"no edit of {rel} to undo")
        previous = stack.pop()
        if previous is None:
            if path.exists():
                path.unlink()
            self.on_change(rel)
            return EditOutput(path=rel, action="undo", message=f"undid the creation of {rel} (file removed)")
        _write_visibly(path, previous)
        self.on_change(rel)
        return EditOutput(path=rel, action="undo",
                          message=f"restored {rel} to its content before the last edit "
                                  f"({len(stack)} earlier edit(s) left to undo)")

    # -- helpers -----------------------------------------------------------------------------------

    def _read(self, raw_path: str) -> tuple[Path, str, str]:
        path = self.workspace.resolve(raw_path)
        rel = self.workspace.rel(path)
        if path.is_dir():
            raise ToolError(f"{rel} is a directory, not a file")
        size = path.stat().st_size
        if size > self.workspace.max_file_bytes:
            raise ToolError(f"{rel} is too large to edit safely ({size:,} bytes, limit "
                            f"{self.workspace.max_file_bytes:,})")
        data = path.read_bytes()
        if is_binary(data):
            raise ToolError(f"{rel} is a binary file; it cannot be edited as text")
        try:
            return path, rel, data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError(f"{rel} is not UTF-8 text (byte {exc.start}); it cannot be edited safely") from None

    def _write(self, path: Path, rel: str, before: str | None, after: str, action: str, message: str,
               first: int, last: int) -> EditOutput:
        warnings = []
        lang = language_for(rel)
        if lang is not None:
            new_errors = _new_syntax_errors(before or "", after, lang, first, last)
            if new_errors:
                line, what = new_errors[0]
                text_at = after.splitlines()[line - 1].strip() if line <= len(after.splitlines()) else ""
                problem = f"syntax error at line {line} ({what}): {text_at[:120]!r}"
                if self.config.edit.reject_syntax_errors:
                    raise ToolError(f"edit rejected, {rel} is unchanged: it would add a {problem}. "
                                    "Fix the edit and try again")
                warnings.append(f"the edit added a {problem}")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_visibly(path, after.encode("utf-8"))
        self.on_change(rel)
        stack = self.history[rel]
        stack.append(before.encode("utf-8") if before is not None else None)
        del stack[: -self.config.edit.max_undo]
        return EditOutput(path=rel, action=action, message=message, snippet=_snippet(after, first, last),
                          warnings=warnings)


def _write_visibly(path: Path, data: bytes) -> None:
    """Write ``data``, making sure (mtime seconds, size) changes so caches keyed on them see the edit.

    Python's .pyc files (and make) trust whole-second mtimes plus size: a same-size edit within the second
    of the last compile would otherwise run the old code.
    """
    try:
        before = path.stat()
    except FileNotFoundError:
        before = None
    path.write_bytes(data)
    if before is None:
        return
    after = path.stat()
    if after.st_size == before.st_size and int(after.st_mtime) == int(before.st_mtime):
        bumped = (int(before.st_mtime) + 1) * 1_000_000_000
        os.utime(path, ns=(after.st_atime_ns, bumped))


def _new_syntax_errors(before: str, after: str, lang: str, first: int, last: int) -> list[tuple[int, str]]:
    """Syntax errors of ``after`` when it has more than ``before`` had; those in the edited lines first."""
    errs_after = syntax_errors(parse(after.encode(), lang), limit=1000)
    if not errs_after:
        return []
    errs_before = syntax_errors(parse(before.encode(), lang), limit=1000) if before else []
    if len(errs_after) <= len(errs_before):
        return []  # the file was already broken there; this edit did not make it worse
    return sorted(errs_after, key=lambda e: not (first - 1 <= e[0] <= last + 1))


def _snippet(text: str, first: int, last: int) -> str:
    lines = text.splitlines()
    lo = max(1, first - CONTEXT_LINES)
    hi = min(len(lines), max(last, first) + CONTEXT_LINES)
    return "\n".join(f"{n:6d}│{lines[n - 1]}" for n in range(lo, hi + 1))


def _occurrences(text: str, needle: str) -> str:
    out = []
    start = 0
    while (at := text.find(needle, start)) != -1 and len(out) < MAX_CANDIDATES:
        line = text.count("\n", 0, at) + 1
        out.append(f"line {line}: {text.splitlines()[line - 1].strip()[:80]!r}")
        start = at + 1
    return "; ".join(out)


def _closest(text: str, old: str) -> str:
    """A hint for a failed match: the lines that nearly match, with their numbers."""
    lines = text.splitlines()
    want = [ln.strip() for ln in old.splitlines() if ln.strip()]
    if not want:
        return "old_str is only whitespace"
    # Same text, different indentation or spacing: the most common miss.
    squashed = ["".join(ln.split()) for ln in lines]
    key = "".join(want[0].split())
    same = [i for i, ln in enumerate(squashed) if ln == key]
    if same:
        spots = ", ".join(f"line {i + 1}: {lines[i][:80]!r}" for i in same[:MAX_CANDIDATES])
        return (f"Its first line matches, ignoring whitespace, at {spots}; copy the exact text "
                "(indentation, spaces, tabs) with view")
    close = difflib.get_close_matches(want[0], [ln.strip() for ln in lines], n=MAX_CANDIDATES, cutoff=0.6)
    if not close:
        return "No similar line either; view the file to copy the exact text"
    spots = []
    for cand in close:
        for i, ln in enumerate(lines):
            if ln.strip() == cand:
                spots.append(f"line {i + 1}: {ln.strip()[:80]!r}")
                break
    return "Closest lines: " + "; ".join(spots)
