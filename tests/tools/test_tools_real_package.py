"""Navigation on a real installed code base (the `rich` package, a pinned dependency, ~100 Python files)."""
from pathlib import Path

import rich

from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.toolbox import Toolbox

RICH = Path(rich.__file__).parent


def toolbox(tmp_path, **kwargs) -> Toolbox:
    config = ToolsConfig()
    config.repo_map.cache_dir = tmp_path / "cache"
    return Toolbox(RICH, config, **kwargs)


def test_repo_map_of_a_real_package_centres_on_the_mentioned_class(tmp_path):
    tb = toolbox(tmp_path)
    res = tb.registry.call("repo_map", {"mentioned_symbols": ["Syntax"], "token_budget": 512})
    assert res.ok and res.data.files_indexed > 50
    assert res.data.top_files[0] == "syntax.py"
    assert "class Syntax" in res.output and res.data.tokens <= 512


def test_task_text_steers_the_map_like_an_issue_would(tmp_path):
    issue = "Progress bars flicker: ProgressBar.__rich_console__ redraws even when the completed value is unchanged."
    tb = toolbox(tmp_path, task_text=issue)
    top = tb.registry.call("repo_map", {}).data.top_files
    assert top[0] == "progress_bar.py"


def test_definitions_and_references_in_a_real_package(tmp_path):
    tb = toolbox(tmp_path)
    res = tb.registry.call("find_definition", {"symbol": "Console.print"})
    assert [(loc.path, loc.kind, loc.container) for loc in res.data.locations] == [("console.py", "method", "Console")]
    refs = tb.registry.call("find_references", {"symbol": "Segment"}).data
    assert refs.total > 50 and len({loc.path for loc in refs.locations}) > 3
    outline = tb.registry.call("outline", {"path": "console.py"}).data
    assert any(it.name == "Console" and it.depth == 0 for it in outline.items)
    assert any(it.name == "print" and it.depth == 1 and it.kind == "method" for it in outline.items)
