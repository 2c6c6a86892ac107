"""One object that holds every tool for one task: navigation, editing, shell; and their registry."""
from __future__ import annotations

from pathlib import Path

from loopcoder.runtime.sandbox import Sandbox
from loopcoder.tools import editing as ed
from loopcoder.tools import navigation as nav
from loopcoder.tools import shell as sh
from loopcoder.tools.base import Tool
from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.registry import ToolRegistry
from loopcoder.tools.repomap import TokenCounter
from loopcoder.tools.tag_index import Progress
from loopcoder.tools.workspace import Workspace


class Toolbox:
    """The tools of one task. ``workspace`` defaults to ``sandbox.workspace``; ``task_text`` personalises maps.

    ``token_counter`` (text -> tokens, e.g. the model's tokenizer) sizes the repo map; ``progress`` is told
    (done, total) while a cold scan parses files, for a progress bar.
    """

    def __init__(self, workspace: str | Path | None = None, config: ToolsConfig | None = None,
                 sandbox: Sandbox | None = None, task_text: str = "", test_command: str | None = None,
                 token_counter: TokenCounter | None = None, progress: Progress | None = None):
        self.config = config or ToolsConfig()
        root = workspace if workspace is not None else (sandbox.workspace if sandbox is not None else None)
        if root is None:
            raise ValueError("Toolbox needs a workspace path or a sandbox")
        self.workspace = Workspace(root, self.config.limits.max_file_bytes)
        self.navigator = nav.Navigator(self.workspace, self.config, token_counter)
        self.navigator.focus_text = task_text
        self.navigator.index.progress = progress  # (files parsed, files to parse) during a scan
        self.editor = ed.Editor(self.workspace, self.config)
        self.editor.on_change = self.navigator.index.invalidate
        self.shell = sh.ShellTools(self.workspace, self.config, sandbox, test_command)
        self.registry = ToolRegistry(self._tools())

    @property
    def submitted(self) -> bool:
        return self.shell.submitted

    def _tools(self) -> list[Tool]:
        n, e, s = self.navigator, self.editor, self.shell
        tools = [
            Tool("repo_map", "Key files and definitions with line numbers, ranked by references; pass files "
                 "or symbols to centre the map on them.", nav.RepoMapArgs, n.repo_map),
            Tool("find_definition", "Where a symbol is defined (file, lines, kind, the line).", nav.SymbolArgs, n.find_definition),
            Tool("find_references", "Where a symbol is used in code, one line per use.", nav.SymbolArgs, n.find_references),
            Tool("outline", "Definitions in a file, nested, with line ranges.", nav.OutlineArgs,
                 n.outline),
            Tool("search", "Search file contents for text or a regex.",
                 nav.SearchArgs, n.search),
            Tool("view", "Show numbered lines of a file, or list a folder.",
                 nav.ViewArgs, n.view),
            Tool("str_replace", "Replace text that occurs exactly once in a file; refused if it "
                 "breaks the syntax.", ed.StrReplaceArgs,
                 e.str_replace, read_only=False),
            Tool("insert", "Insert lines after a line of a file.", ed.InsertArgs, e.insert,
                 read_only=False),
            Tool("create", "Create a file.", ed.CreateArgs, e.create, read_only=False),
            Tool("undo", "Undo the last edit of a file.", ed.UndoArgs, e.undo,
                 read_only=False),
            Tool("shell", "Run a bash command; returns exit code and output.",
                 sh.ShellArgs, s.shell, read_only=False),
            Tool("run_tests", f"Run the tests ({s.test_command}).",
                 sh.RunTestsArgs, s.run_tests, read_only=False),
            Tool("submit", "Submit the changes as the solution and stop.", sh.SubmitArgs, s.submit,
                 read_only=False),
        ]
        return tools
