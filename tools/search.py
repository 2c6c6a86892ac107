"""Text search over the workspace: ripgrep when it is on PATH, a Python fallback otherwise.

Both backends search the same files (non-hidden, not ignored, not binary, not huge), sort hits by path and
line, clip long lines and stop after ``max_results`` hits, so a model sees the same answer either way.
Regexes are ripgrep's (Rust) dialect with rg and Python's ``re`` in the fallback; the common subset agrees.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loopcoder.tools.workspace import SKIP_DIRS, ToolError, Workspace, is_binary


@dataclass(frozen=True)
class Hit:
    path: str
    line: int
    text: str


@dataclass
class SearchHits:
    hits: list[Hit]
    more: bool  # hits were left out after max_results
    backend: str


def ripgrep_path() -> str | None:
    return shutil.which("rg")


class TextSearch:
    """Searches one workspace; ``backend`` is "auto", "always" (ripgrep) or "never" (Python)."""

    def __init__(self, workspace: Workspace, backend: str = "auto", timeout_s: float = 30.0,
                 max_line_chars: int = 400):
        self.workspace = workspace
        self.timeout_s = timeout_s
        self.max_line_chars = max_line_chars
        rg = ripgrep_path()
        if backend == "always" and rg is None:
            raise ToolError("search.ripgrep is 'always' but rg is not on PATH (apt-get install ripgrep)")
        self.rg = rg if backend != "never" else None

    @property
    def backend(self) -> str:
        return "ripgrep" if self.rg else "python"

    def search(self, pattern: str, regex: bool = False, glob: str | None = None, path: str | None = None,
               max_results: int = 50, ignore_case: bool = False) -> SearchHits:
        if not pattern:
            raise ToolError("pattern is empty")
        scope = self.workspace.resolve(path) if path else self.workspace.root
        if self.rg:
            return self._rg(pattern, regex, glob, scope, max_results, ignore_case)
        return self._python(pattern, regex, glob, scope, max_results, ignore_case)

    def files_containing(self, word: str, rels: list[str]) -> list[str]:
        """Which of ``rels`` contain ``word`` as a whole word (case-sensitive), sorted."""
        if not rels:
            return []
        if self.rg:
            proc = self._run_rg(["--files-with-matches", "--word-regexp", "--fixed-strings", "--no-ignore",
                                 "--", word, *rels])
            return sorted((p.removeprefix("./") for p in proc.stdout.decode("utf-8", "replace").splitlines() if p),
                          key=_path_key)
        rx = re.compile(rb"\b" + re.escape(word.encode()) + rb"\b")
        out = []
        needle = word.encode()
        for rel in rels:
            try:
                data = (self.workspace.root / rel).read_bytes()
            except OSError:
                continue
            if needle in data and rx.search(data):
                out.append(rel)
        return sorted(out, key=_path_key)

    # -- ripgrep -----------------------------------------------------------------------------------

    def _rg(self, pattern, regex, glob, scope: Path, max_results, ignore_case) -> SearchHits:
        args = ["--json", "--sort", "path", "--max-filesize", str(self.workspace.max_file_bytes)]
        args += [] if regex else ["--fixed-strings"]
        args += ["--ignore-case"] if ignore_case else []
        for d in sorted(SKIP_DIRS):
            args += ["--glob", f"!{d}/"]
        if glob:
            args += ["--glob", glob]
        target = self.workspace.rel(scope)
        args += ["--", pattern, target]
        proc = subprocess.Popen([self.rg, "--no-config", *args], cwd=self.workspace.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        hits: list[Hit] = []
        more = False
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                if not raw.startswith(b'{"type":"match"'):
                    continue
                if len(hits) >= max_results:
                    more = True
                    break
                data = json.loads(raw)["data"]
                rel = _rg_text(data["path"]).removeprefix("./")
                hits.append(Hit(rel, data["line_number"], self._clip(_rg_text(data["lines"]))))
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate(timeout=self.timeout_s)
        if proc.returncode == 2 and not hits and not more:
            msg = err.decode("utf-8", "replace").strip().splitlines()
            raise ToolError("search failed: " + (" ".join(msg)[:300] if msg else "ripgrep exited with status 2"))
        return SearchHits(hits, more, "ripgrep")

    def _run_rg(self, args: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.rg, "--no-config", *args], cwd=self.workspace.root, capture_output=True,
                                  timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ToolError(f"search timed out after {self.timeout_s:.0f}s; narrow it with path or glob") from None

    # -- Python fallback ---------------------------------------------------------------------------

    def _python(self, pattern, regex, glob, scope: Path, max_results, ignore_case) -> SearchHits:
        flags = re.IGNORECASE if ignore_case else 0
        try:
            rx = re.compile(pattern if regex else re.escape(pattern), flags)
        except re.error as exc:
            raise ToolError(f"invalid regex {pattern!r}: {exc}") from None
        prefix = self.workspace.rel(scope)
        if scope.is_file():
            rels = [prefix]
        else:
            rels = [f.rel for f in self.workspace.list_files()
                    if f.size <= self.workspace.max_file_bytes
                    and (prefix == "." or f.rel.startswith(prefix.rstrip("/") + "/"))]
        if glob:
            rels = [r for r in rels if _glob_match(r, glob)]
        hits: list[Hit] = []
        for rel in sorted(rels, key=_path_key):
            try:
                data = (self.workspace.root / rel).read_bytes()
            except OSError:
                continue
            if is_binary(data):
                continue
            text = data.decode("utf-8", "replace")
            if not rx.search(text):
                continue
            lines = text.split("\n")  # lines as ripgrep and view number them (not at \f or a lone \r)
            if lines[-1] == "":
                lines.pop()
            for n, line in enumerate(lines, 1):
                if rx.search(line):
                    if len(hits) >= max_results:
                        return SearchHits(hits, True, "python")
                    hits.append(Hit(rel, n, self._clip(line)))
        return SearchHits(hits, False, "python")

    def _clip(self, line: str) -> str:
        line = line.rstrip("\r\n")
        limit = self.max_line_chars
        return line if len(line) <= limit else line[:limit] + f" … [{len(line) - limit} more chars]"


def _path_key(rel: str) -> list[str]:
    # ripgrep's --sort path orders entry names within each directory; a plain string sort would put
    # "a.py" before "a/x.py" ("." < "/"), so sort by components to agree with it.
    return rel.split("/")


def _glob_match(rel: str, glob: str) -> bool:
    negate = glob.startswith("!")
    pat = glob[1:] if negate else glob
    if "/" in pat.strip("/"):
        ok = fnmatch.fnmatch(rel, pat.lstrip("/")) or fnmatch.fnmatch(rel, pat.replace("**/", ""))
    else:
        ok = any(fnmatch.fnmatch(part, pat) for part in rel.split("/"))
    return ok != negate


def _rg_text(obj: dict) -> str:
    if "text" in obj:
        return obj["text"]
    import base64

    return base64.b64decode(obj.get("bytes", "")).decode("utf-8", "replace")
