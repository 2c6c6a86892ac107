"""Safe editing tools: str_replace, insert, create, undo.

Every edit is checked with tree-sitter before it is written: an edit that adds a syntax error is refused
(``edit.reject_syntax_errors``) or written with a warning naming the line. Each file keeps a stack of its
previous contents, so ``undo`` can step back, including deleting a file that ``create`` made. Text the model
writes with "\n" takes the line ending of the line it lands on (CRLF, LF, or CR in a CR-only file). Files
are read and written through ``Workspace`` (no symlink followed, regular files only, new files owned by
the workspace's owner).
"""
from __future__ import annotations

import difflib
import os
import re
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
    path: str = Field(..., description="file to edit")
    old_str: str = Field(..., description="exact text, found once in the file (add lines around it "
                                          "to make it unique)")
    new_str: str = Field(..., description="replacement (empty deletes)")


class InsertArgs(ToolArgs):
    path: str = Field(..., description="file to edit")
    line: int = Field(..., ge=0, description="insert after this line (0: at the top)")
    text: str = Field(..., description="lines to insert")


class CreateArgs(ToolArgs):
    path: str = Field(..., description="new file")
    content: str = Field(..., description="file content")
    overwrite: bool = Field(False, description="replace an existing file")


class UndoArgs(ToolArgs):
    path: str = Field(..., description="file to undo the last edit of")


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
        matches, count = _find_all(text, old)
        if not count and _NEWLINE.search(old):
            # The model writes \n; the file may use CRLF or CR, or mix them: any line break matches one.
            matches, count = _find_all(text, old, any_newline=True)
        if not count:
            raise ToolError(f"old_str not found in {rel}. {_closest(text, old)}")
        if count > 1:
            overlap = any(b[0] < a[1] for a, b in zip(matches, matches[1:]))
            raise ToolError(f"old_str occurs {count} times in {rel}{' (matches overlap)' if overlap else ''}; "
                            "it must occur exactly once. Add surrounding lines to pick one. Matches start at: "
                            f"{_occurrences(text, matches)}")
        at, end = matches[0]
        new = _follow_line_ending(new, _ending_at(text, at))
        updated = text[:at] + new + text[end:]
        first = _line_of(text, at)
        last = first + new.count("\n")
        return self._write(path, rel, text, updated, "str_replace", f"replaced 1 occurrence in {rel}",
                           first, last)

    def insert(self, args: InsertArgs) -> EditOutput:
        path, rel, text = self._read(args.path)
        lines = _split_keepends(text)
        if args.line > len(lines):
            raise ToolError(f"line {args.line} is past the end of {rel} ({len(lines)} lines); "
                            f"use line={len(lines)} to append")
        if not args.text:
            raise ToolError("text is empty; nothing to insert")
        # The ending of the line inserted after (at the top: of the first line).
        newline = _ending_at(text, sum(map(len, lines[: max(args.line - 1, 0)])))
        ended = ("\n", "\r") if newline == "\r" else "\n"  # a lone CR ends a line only in a CR-only file
        block = _follow_line_ending(args.text, newline)
        if not block.endswith(ended):
            block += newline
        if args.line and not lines[args.line - 1].endswith(ended):
            lines[args.line - 1] += newline  # inserting after a last line that had no newline
        updated = "".join(lines[: args.line]) + block + "".join(lines[args.line:])
        first = args.line + 1
        return self._write(path, rel, text, updated, "insert",
                           f"inserted {len(_NEWLINE.findall(block))} line(s) after line {args.line} of {rel}",
                           first, max(first, first + block.count("\n") - 1))

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
            self.workspace.remove_file(path)
            self.on_change(rel)
            return EditOutput(path=rel, action="undo", message=f"undid the creation of {rel} (file removed)")
        self.workspace.write_file(path, previous)
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
        with self.workspace.open_file(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > self.workspace.max_file_bytes:
                raise ToolError(f"{rel} is too large to edit safely ({size:,} bytes, limit "
                                f"{self.workspace.max_file_bytes:,})")
            data = fh.read()
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
                after_lines = _display_lines(after)
                text_at = after_lines[line - 1].strip() if line <= len(after_lines) else ""
                problem = f"syntax error at line {line} ({what}): {text_at[:120]!r}"
                if self.config.edit.reject_syntax_errors:
                    raise ToolError(f"edit rejected, {rel} is unchanged: it would add a {problem}. "
                                    "Fix the edit and try again")
                warnings.append(f"the edit added a {problem}")
        self.workspace.write_file(path, after.encode("utf-8"))
        self.on_change(rel)
        stack = self.history[rel]
        stack.append(before.encode("utf-8") if before is not None else None)
        del stack[: -self.config.edit.max_undo]
        return EditOutput(path=rel, action=action, message=message, snippet=_snippet(after, first, last),
                          warnings=warnings)


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
    lines = _display_lines(text)
    lo = max(1, first - CONTEXT_LINES)
    hi = min(len(lines), max(last, first) + CONTEXT_LINES)
    return "\n".join(f"{n:6d}│{lines[n - 1]}" for n in range(lo, hi + 1))


# -- lines and line endings -----------------------------------------------------------------------
# Line numbers count "\n" only, as view, search, tree-sitter and git do (a form feed or a lone CR does not
# start a line). Line endings are "\r\n", "\n", or "\r" in a file that has no "\n" at all.

_NEWLINE = re.compile(r"\r\n|\r|\n")
_BARE_LF = re.compile(r"(?<!\r)\n")


def _display_lines(text: str) -> list[str]:
    """The file's lines as view numbers them, without their endings."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _split_keepends(text: str) -> list[str]:
    """The file's lines as view numbers them, each with its ending."""
    return [ln for ln in re.split(r"(?<=\n)", text) if ln]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _ending_at(text: str, offset: int) -> str:
    """The line ending of the line holding ``offset``; a last line without one takes the line before's."""
    if "\n" not in text:
        return "\r" if "\r" in text else "\n"
    nl = text.find("\n", offset)
    if nl == -1:
        nl = text.rfind("\n", 0, offset)
    return "\r\n" if nl > 0 and text[nl - 1] == "\r" else "\n"


def _follow_line_ending(new: str, ending: str) -> str:
    """``new`` with each bare "\n" (as models write) turned into ``ending``; explicit "\r\n" is kept."""
    return new if ending == "\n" else _BARE_LF.sub(ending, new)


def _find_all(text: str, needle: str, any_newline: bool = False) -> tuple[list[tuple[int, int]], int]:
    """The first MAX_CANDIDATES (start, end) spans of ``needle`` and how many there are, overlapping ones
    included ("aa" is twice in "aaa"). ``any_newline``: a line break in ``needle`` matches any line ending.
    """
    if any_newline:
        body = r"(?:\r\n|\r|\n)".join(re.escape(p) for p in _NEWLINE.split(needle))
    else:
        body = re.escape(needle)
    spans: list[tuple[int, int]] = []
    total = 0
    for m in re.finditer(f"(?=({body}))", text):  # a lookahead consumes nothing: overlaps are found
        total += 1
        if len(spans) < MAX_CANDIDATES:
            spans.append(m.span(1))
    return spans, total


def _occurrences(text: str, matches: list[tuple[int, int]]) -> str:
    lines = _display_lines(text)
    per_line: dict[int, int] = {}
    for at, _ in matches:
        line = _line_of(text, at)
        per_line[line] = per_line.get(line, 0) + 1
    return "; ".join(f"line {n}{f' ({k} matches)' if k > 1 else ''}: {lines[n - 1].strip()[:80]!r}"
                     for n, k in per_line.items())


def _closest(text: str, old: str) -> str:
    """A hint for a failed match: the lines that nearly match, each named once with its number."""
    lines = _display_lines(text)
    want = [ln.strip() for ln in _NEWLINE.split(old) if ln.strip()]
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
    stripped = [ln.strip() for ln in lines]
    # Each distinct text once (a repeated line would otherwise crowd out the others), then every line
    # that holds it, best match first.
    close = difflib.get_close_matches(want[0], list(dict.fromkeys(stripped)), n=MAX_CANDIDATES, cutoff=0.6)
    if not close:
        return "No similar line either; view the file to copy the exact text"
    spots = [f"line {i + 1}: {stripped[i][:80]!r}" for cand in close for i, ln in enumerate(stripped) if ln == cand]
    more = f" (and {len(spots) - MAX_CANDIDATES} more)" if len(spots) > MAX_CANDIDATES else ""
    return "Closest lines: " + "; ".join(spots[:MAX_CANDIDATES]) + more
