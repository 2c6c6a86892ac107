"""Read-only navigation tools: repo_map, find_definition, find_references, outline, search, view."""
from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import BinaryIO

from pydantic import Field

from loopcoder.tools.base import ToolArgs, ToolError, ToolOutput
from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.languages import LANGUAGES, language_for
from loopcoder.tools.repomap import RepoMap, approx_tokens, mentions_from_text
from loopcoder.tools.search import TextSearch
from loopcoder.tools.tag_index import TagIndex
from loopcoder.tools.tags import Definition, extract_tags, parse
from loopcoder.tools.workspace import Workspace, is_binary

# --- arguments ---------------------------------------------------------------------------------------


class RepoMapArgs(ToolArgs):
    mentioned_files: list[str] = Field(default_factory=list, description="files to centre the map on")
    mentioned_symbols: list[str] = Field(default_factory=list,
                                         description="names to centre the map on")
    token_budget: int | None = Field(None, ge=64, le=32768, description="size of the map in tokens")


class SymbolArgs(ToolArgs):
    symbol: str = Field(..., min_length=1, description="a name, e.g. `parse` or `Parser.parse`")


class OutlineArgs(ToolArgs):
    path: str = Field(..., description="source file")


class SearchArgs(ToolArgs):
    pattern: str = Field(..., min_length=1, description="text to find")
    regex: bool = Field(False, description="pattern is a regex")
    glob: str | None = Field(None, description="only files matching this glob, e.g. `*.py`")
    path: str | None = Field(None, description="only under this file or folder")
    ignore_case: bool = False


class ViewArgs(ToolArgs):
    path: str = Field(..., description="file or folder")
    start: int = Field(1, ge=1, description="first line (1-based)")
    end: int | None = Field(None, ge=1, description="last line (default: a screenful)")


# --- results -----------------------------------------------------------------------------------------


class Location(ToolOutput):
    path: str
    line: int
    end_line: int | None = None
    kind: str | None = None
    container: str | None = None
    text: str = ""


class RepoMapOutput(ToolOutput):
    text: str
    tokens: int
    files_indexed: int
    files_shown: int
    definitions_shown: int
    top_files: list[str]

    def render(self) -> str:
        if not self.text:
            return f"(no definitions found in {self.files_indexed} indexed files)"
        return (f"Repo map: {self.definitions_shown} definitions in {self.files_shown} of {self.files_indexed} "
                f"files (line│source)\n{self.text}")


class LocationsOutput(ToolOutput):
    query: str
    what: str  # "definitions" or "references"
    locations: list[Location]
    total: int

    def render(self) -> str:
        if not self.locations:
            return f"no {self.what} of {self.query!r} found"
        head = f"{self.total} {self.what} of {self.query!r}"
        if self.total > len(self.locations):
            head += f" (first {len(self.locations)} shown)"
        out = [head + ":"]
        for loc in self.locations:
            span = f"{loc.line}-{loc.end_line}" if loc.end_line and loc.end_line != loc.line else f"{loc.line}"
            label = f" [{loc.kind}{' in ' + loc.container if loc.container else ''}]" if loc.kind else ""
            out.append(f"{loc.path}:{span}{label}: {loc.text.strip()}")
        return "\n".join(out)


class OutlineItem(ToolOutput):
    name: str
    kind: str
    line: int
    end_line: int
    depth: int
    text: str


class OutlineOutput(ToolOutput):
    path: str
    language: str
    total_lines: int
    items: list[OutlineItem]

    def render(self) -> str:
        out = [f"{self.path} ({self.language}, {self.total_lines} lines): {len(self.items)} definitions"]
        for it in self.items:
            label = "" if it.name in it.text else f"  [{it.kind} {it.name}]"
            out.append(f"{it.line:6d}-{it.end_line:<6d}{'  ' * it.depth}{it.text.strip()}{label}")
        return "\n".join(out)


class SearchOutput(ToolOutput):
    pattern: str
    matches: list[Location]
    more: bool
    backend: str

    def render(self) -> str:
        if not self.matches:
            return f"no matches for {self.pattern!r}"
        out = [f"{len(self.matches)}{'+' if self.more else ''} matches for {self.pattern!r}"
               + (" (more left out; narrow with path or glob)" if self.more else "") + ":"]
        last = None
        for m in self.matches:
            if m.path != last:
                out.append(m.path)
                last = m.path
            out.append(f"{m.line:6d}│{m.text}")
        return "\n".join(out)


class ViewOutput(ToolOutput):
    path: str
    start: int
    end: int
    total_lines: int
    text: str
    is_dir: bool = False
    note: str = ""

    def render(self) -> str:
        if self.is_dir:
            return f"{self.path}/ ({self.total_lines} entries){self.note}\n{self.text}"
        head = f"{self.path} (lines {self.start}-{self.end} of {self.total_lines}){self.note}"
        return f"{head}\n{self.text}"


# --- the tools ---------------------------------------------------------------------------------------


_IDENT_TYPES = {"name", "constant", "simple_identifier"}


class Navigator:
    """Navigation over one workspace; owns the tag index and repo map so they stay warm between calls."""

    def __init__(self, workspace: Workspace, config: ToolsConfig, token_counter=None):
        self.workspace = workspace
        self.config = config
        self.index = TagIndex(workspace, config.repo_map.cache_dir, config.repo_map.workers)
        self.repo_map_ = RepoMap(self.index, token_counter or approx_tokens(config.repo_map.chars_per_token))
        self.text_search = TextSearch(workspace, config.search.ripgrep, config.search.timeout_s,
                                      config.limits.max_line_chars)
        self.focus_text = ""  # the task's text; its mentioned files and symbols personalise every repo map

    def repo_map(self, args: RepoMapArgs) -> RepoMapOutput:
        files = {self._rel_or_raise(p) for p in args.mentioned_files}
        idents = set(args.mentioned_symbols)
        scan = self.index.refresh()
        if self.focus_text:
            more_files, more_idents = mentions_from_text(self.focus_text, self.index)
            files |= more_files
            idents |= more_idents
        budget = args.token_budget or self.config.repo_map.token_budget
        rendered = self.repo_map_.render(budget, files, idents, scan)
        return RepoMapOutput(text=rendered.text, tokens=rendered.tokens, files_indexed=len(rendered.files),
                             files_shown=rendered.files_shown, definitions_shown=rendered.definitions_shown,
                             top_files=[f.path for f in rendered.files[:10]])

    def find_definition(self, args: SymbolArgs) -> LocationsOutput:
        container, name = _split_qualified(args.symbol)
        self.index.refresh()
        found: list[Location] = []
        for rel in sorted(self.index.files):
            defs = self.index.files[rel].defs
            for d in defs:
                if d.name != name:
                    continue
                parent = _container(d, defs)
                if container and (parent is None or parent.name != container):
                    continue
                found.append(Location(path=rel, line=d.start_line, end_line=d.end_line, kind=_kind(d, parent),
                                      container=parent.name if parent else None))
        # Real bodies before prototypes and impl blocks; within a kind, shorter paths (less nested) first.
        found.sort(key=lambda loc: (loc.kind in ("prototype", "impl"), loc.path.count("/"), loc.path, loc.line))
        shown = found[: self.config.limits.max_results]
        self._fill_text(shown)
        return LocationsOutput(query=args.symbol, what="definitions", locations=shown, total=len(found))

    def find_references(self, args: SymbolArgs) -> LocationsOutput:
        _, name = _split_qualified(args.symbol)
        if not re.fullmatch(r"[\w$]+", name):
            raise ToolError(f"{args.symbol!r} is not an identifier; use search for other text")
        self.index.refresh()
        candidates = self.text_search.files_containing(name, sorted(self.index.files))
        found: list[Location] = []
        needle = re.compile(rb"(?<![\w$])" + re.escape(name.encode()) + rb"(?![\w$])")
        for rel in candidates:
            lang = language_for(rel)
            source = (self.workspace.root / rel).read_bytes()
            tree = parse(source, lang)
            def_lines = {d.line for d in self.index.files[rel].defs if d.name == name}
            lines = source.split(b"\n")
            seen_lines = set()
            for m in needle.finditer(source):
                node = tree.root_node.named_descendant_for_byte_range(m.start(), m.end())
                if node is None or node.start_byte != m.start() or node.end_byte != m.end():
                    continue
                if "identifier" not in node.type and node.type not in _IDENT_TYPES:
                    continue  # inside a comment or string
                line = node.start_point[0] + 1
                if line in def_lines or line in seen_lines:
                    continue
                seen_lines.add(line)
                text = lines[line - 1].decode("utf-8", "replace")
                found.append(Location(path=rel, line=line, text=self._clip(text)))
        shown = found[: self.config.limits.max_results]
        return LocationsOutput(query=args.symbol, what="references", locations=shown, total=len(found))

    def outline(self, args: OutlineArgs) -> OutlineOutput:
        path = self.workspace.resolve(args.path)
        rel = self.workspace.rel(path)
        if path.is_dir():
            raise ToolError(f"{rel} is a directory; outline takes a source file (view lists a folder)")
        lang = language_for(path)
        if lang is None:
            raise ToolError(f"no outline for {rel}: not a source file in a supported language "
                            f"({', '.join(LANGUAGES)}); use view")
        text = self.workspace.read_text(path, "source file")
        source = text.encode()
        defs = extract_tags(source, lang).defs  # sorted by start line, outer before inner
        lines = text.splitlines()
        items = []
        open_defs: list[Definition] = []
        for d in defs:
            while open_defs and not (open_defs[-1].start_line <= d.start_line and d.end_line <= open_defs[-1].end_line):
                open_defs.pop()
            parent = open_defs[-1] if open_defs else None
            items.append(OutlineItem(name=d.name, kind=_kind(d, parent), line=d.start_line, end_line=d.end_line,
                                     depth=len(open_defs),
                                     text=self._clip(lines[d.start_line - 1] if d.start_line <= len(lines) else "")))
            open_defs.append(d)
        return OutlineOutput(path=rel, language=lang, total_lines=len(lines), items=items)

    def search(self, args: SearchArgs) -> SearchOutput:
        res = self.text_search.search(args.pattern, args.regex, args.glob, args.path,
                                      self.config.limits.max_results, args.ignore_case)
        return SearchOutput(pattern=args.pattern, backend=res.backend, more=res.more,
                            matches=[Location(path=h.path, line=h.line, text=h.text) for h in res.hits])

    def view(self, args: ViewArgs) -> ViewOutput:
        path = self.workspace.resolve(args.path)
        rel = self.workspace.rel(path)
        limit = self.config.limits.max_view_lines
        if path.is_dir():
            return self._list_dir(path, rel, limit)
        if args.end is not None and args.end < args.start:
            raise ToolError(f"end ({args.end}) is before start ({args.start})")
        with self.workspace.open_file(path) as fh:  # regular files only: a FIFO would block for good
            if is_binary(fh.read(8192)):
                raise ToolError(f"{rel} is a binary file ({os.fstat(fh.fileno()).st_size:,} bytes); not shown")
            fh.seek(0)
            total = _count_lines(fh)
            if total == 0:
                return ViewOutput(path=rel, start=0, end=0, total_lines=0, text="", note=" (empty file)")
            if args.start > total:
                raise ToolError(f"start line {args.start} is past the end of {rel} ({total} lines)")
            end = min(args.end or args.start + limit - 1, total)
            note = ""
            if end - args.start + 1 > limit:
                end = args.start + limit - 1
                note = f" (clipped to {limit} lines; ask for the next range)"
            elif args.end is None and end < total:
                note = f" (more below; next: start={end + 1})"
            fh.seek(0)
            chunk = itertools.islice(fh, args.start - 1, end)
            body = [f"{n:6d}│{self._clip(raw.decode('utf-8', 'replace'))}"
                    for n, raw in enumerate(chunk, args.start)]
        return ViewOutput(path=rel, start=args.start, end=end, total_lines=total, text="\n".join(body), note=note)

    # -- helpers -----------------------------------------------------------------------------------

    def _list_dir(self, path: Path, rel: str, limit: int) -> ViewOutput:
        entries = sorted((e for e in path.iterdir() if e.name != ".git"), key=lambda e: (not e.is_dir(), e.name))
        lines = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
        note = f" (first {limit} shown)" if len(entries) > limit else ""
        return ViewOutput(path=rel, start=1, end=len(lines), total_lines=len(entries), text="\n".join(lines),
                          is_dir=True, note=note)

    def _fill_text(self, locs: list[Location]) -> None:
        cache: dict[str, list[str]] = {}
        for loc in locs:
            if loc.path not in cache:
                try:
                    cache[loc.path] = (self.workspace.root / loc.path).read_text("utf-8", "replace").splitlines()
                except OSError:
                    cache[loc.path] = []
            lines = cache[loc.path]
            loc.text = self._clip(lines[loc.line - 1]) if loc.line <= len(lines) else ""

    def _clip(self, line: str) -> str:
        line = line.rstrip("\r\n")
        limit = self.config.limits.max_line_chars
        return line if len(line) <= limit else line[:limit] + f" … [{len(line) - limit} more chars]"

    def _rel_or_raise(self, path: str) -> str:
        return self.workspace.rel(self.workspace.resolve(path))


def _split_qualified(symbol: str) -> tuple[str | None, str]:
    parts = [p for p in re.split(r"::|\.|#|->", symbol.strip()) if p]
    if not parts:
        raise ToolError(f"symbol {symbol!r} has no name in it")
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


_CLASS_KINDS = {"class", "interface", "impl", "module", "enum"}


def _kind(d: Definition, parent: Definition | None) -> str:
    return "method" if d.kind == "function" and parent is not None and parent.kind in _CLASS_KINDS else d.kind


def _container(d: Definition, defs: list[Definition]) -> Definition | None:
    """The innermost other definition whose span holds ``d`` (its class, impl, module...)."""
    best = None
    for o in defs:
        if o is d or not (o.start_line <= d.start_line and d.end_line <= o.end_line):
            continue
        if (o.start_line, o.end_line) == (d.start_line, d.end_line):
            continue
        if best is None or (o.end_line - o.start_line) < (best.end_line - best.start_line):
            best = o
    return best


def _count_lines(fh: BinaryIO) -> int:
    n = 0
    last = b"\n"
    while chunk := fh.read(1 << 20):
        n += chunk.count(b"\n")
        last = chunk[-1:]
    return n + (0 if last == b"\n" else 1)
