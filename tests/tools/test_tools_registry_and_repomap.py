"""The registry's schemas and error handling; the repo map's budget, caching, and parallel cold scan."""
import json
import os
import pickle

import numpy as np
import pytest

from loopcoder.configs import load_config
from loopcoder.tools import tag_index
from loopcoder.tools.base import ToolOutput
from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.pagerank import pagerank
from loopcoder.tools.repomap import mentions_from_text
from loopcoder.tools.tag_index import TagIndex
from loopcoder.tools.workspace import Workspace


def many_files(n: int) -> dict[str, str]:
    files = {"core/base.py": "class BaseThing:\n    def run_all(self):\n        return 1\n"}
    for i in range(n):
        files[f"mod/m{i:03d}.py"] = (f"from core.base import BaseThing\n\n\nclass Thing{i}(BaseThing):\n"
                                     f"    def work_{i}(self):\n        return self.run_all() + {i}\n")
    return files


def test_every_tool_has_an_openai_function_schema(make_toolbox):
    tb = make_toolbox({"a.py": "x = 1\n"})
    schemas = tb.registry.schemas()
    names = [s["function"]["name"] for s in schemas]
    assert names == ["repo_map", "find_definition", "find_references", "outline", "search", "view", "str_replace",
                     "insert", "create", "undo", "shell", "run_tests", "submit"]
    for s in schemas:
        assert s["type"] == "function" and s["function"]["description"]
        params = s["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert "title" not in json.dumps(params)
        json.dumps(s)  # plain JSON
    view = next(s for s in schemas if s["function"]["name"] == "view")["function"]["parameters"]
    assert view["required"] == ["path"] and view["properties"]["start"]["minimum"] == 1
    read_only = [s["function"]["name"] for s in tb.registry.schemas(read_only=True)]
    assert read_only == ["repo_map", "find_definition", "find_references", "outline", "search", "view"]


def test_bad_calls_become_one_line_error_results(make_toolbox):
    tb = make_toolbox({"a.py": "x = 1\n"})
    cases = {
        ("nope", "{}"): "unknown tool 'nope'",
        ("view", "{not json"): "not valid JSON",
        ("view", "[1, 2]"): "must be a JSON object",
        ("view", "{}"): "missing required argument 'path'",
        ("view", '{"path": "a.py", "colour": 1}'): "unknown argument 'colour'",
        ("view", '{"path": "a.py", "start": "x"}'): "start: Input should be a valid integer",
        ("outline", '{"path": "a.txt"}'): "no such file",
    }
    for (name, args), expected in cases.items():
        res = tb.registry.call(name, args)
        assert not res.ok and expected in res.output and "\n" not in res.output, (name, args, res.output)
        assert res.output.startswith("error: ")


def test_a_crashing_tool_is_reported_not_raised(make_toolbox):
    tb = make_toolbox({"a.py": "x = 1\n"})

    def boom(args):
        raise RuntimeError("disk on fire")

    tool = tb.registry.tools["view"]
    object.__setattr__(tool, "run", boom)
    res = tb.registry.call("view", {"path": "a.py"})
    assert not res.ok and "view failed unexpectedly: RuntimeError: disk on fire" in res.output


def test_results_are_typed_and_serialisable(make_toolbox):
    tb = make_toolbox({"a.py": "def f():\n    return 1\n"})
    res = tb.registry.call("outline", {"path": "a.py"})
    assert isinstance(res.data, ToolOutput)
    dumped = json.loads(res.model_dump_json())
    assert dumped["data"]["items"][0]["name"] == "f"


def test_shipped_config_validates_and_unknown_keys_fail():
    assert load_config(ToolsConfig, default="tools") == ToolsConfig()
    from loopcoder.configs import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        load_config(ToolsConfig, default="tools", overrides=["repo_map.colour=1"])


def test_pagerank_follows_links_and_personalisation():
    src, dst, w = np.array([0, 1, 2]), np.array([2, 2, 0]), np.ones(3)
    r = pagerank(3, src, dst, w)
    assert abs(r.sum() - 1) < 1e-9 and r.argmax() == 2
    p = pagerank(3, src, dst, w, personalization=np.array([0, 1.0, 0]))
    assert p[1] > r[1]


def test_repo_map_fits_the_token_budget(make_toolbox):
    tb = make_toolbox(many_files(60))
    small = tb.registry.call("repo_map", {"token_budget": 100}).data
    big = tb.registry.call("repo_map", {"token_budget": 2000}).data
    assert 0 < small.tokens <= 100 < big.tokens <= 2000
    assert big.definitions_shown > small.definitions_shown
    assert small.top_files[0] == "core/base.py"  # everyone subclasses it


def test_repo_map_uses_the_task_text(make_toolbox):
    tb = make_toolbox(many_files(20), task_text="Thing7.work_7 returns the wrong value; see mod/m012.py")
    tb.navigator.index.refresh()
    files, idents = mentions_from_text(tb.navigator.focus_text, tb.navigator.index)
    assert files == {"mod/m012.py"} and {"Thing7", "work_7"} <= idents
    top = tb.registry.call("repo_map", {}).data.top_files
    assert set(top[:2]) == {"mod/m007.py", "mod/m012.py"}


def test_tag_cache_reparses_only_changed_files_and_survives_a_restart(tmp_path):
    root = tmp_path / "ws"
    for rel, text in many_files(10).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    ws = Workspace(root)
    idx = TagIndex(ws, tmp_path / "cache", workers=1)
    assert idx.refresh().parsed == 11
    assert idx.refresh().parsed == 0
    (root / "mod/m003.py").write_text("def replaced_fn():\n    pass\n")
    (root / "mod/m004.py").unlink()
    stats = idx.refresh()
    assert (stats.parsed, stats.removed) == (1, 1)
    again = TagIndex(ws, tmp_path / "cache", workers=1)  # a new process: loads the pickle
    assert again.refresh().parsed == 0
    assert [d.name for d in again.files["mod/m003.py"].defs] == ["replaced_fn"]
    assert "mod/m004.py" not in again.files


def test_parallel_cold_scan_matches_the_serial_one(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    for rel, text in many_files(40).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    serial = TagIndex(Workspace(root), tmp_path / "c1", workers=1)
    serial.refresh()
    monkeypatch.setattr(tag_index, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(tag_index, "BATCH", 4)
    parallel = TagIndex(Workspace(root), tmp_path / "c2", workers=3)
    seen = []
    parallel.refresh(progress=lambda done, total: seen.append((done, total)))
    assert parallel.files.keys() == serial.files.keys()
    for rel in serial.files:
        assert parallel.files[rel].defs == serial.files[rel].defs
        assert parallel.files[rel].refs == serial.files[rel].refs
    assert seen[-1] == (41, 41)


def test_an_interrupted_cold_scan_keeps_what_it_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(tag_index, "BATCH", 1)
    root = tmp_path / "ws"
    for rel, text in many_files(10).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    idx = TagIndex(Workspace(root), tmp_path / "cache", workers=1)

    def stop(done, total):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        idx.refresh(progress=stop)
    saved = pickle.loads(idx.cache_path.read_bytes())
    assert len(saved["entries"]) == 4
    assert TagIndex(Workspace(root), tmp_path / "cache", workers=1).refresh().parsed == 7


def test_minified_and_binary_files_give_no_tags(make_toolbox):
    minified = "var a=function(){return 1};" * 400
    tb = make_toolbox({"app.min.js": minified, "ok.js": "function fine() { return 1; }\n",
                       "weird.py": b"def f():\x00 pass\n"})
    tb.navigator.index.refresh()
    assert tb.navigator.index.files["app.min.js"].defs == []
    assert tb.navigator.index.files["weird.py"].defs == []
    assert [d.name for d in tb.navigator.index.files["ok.js"].defs] == ["fine"]


def test_tag_worker_process_answers_batches_like_the_main_process(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "ws"
    for rel, text in many_files(3).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    rels = ["core/base.py", "mod/m001.py", "missing.py"]
    proc = subprocess.Popen([sys.executable, "-m", "loopcoder.tools.tag_worker", str(root)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    tag_index.write_message(proc.stdin, rels)
    got = tag_index.read_message(proc.stdout)
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert got == tag_index._tag_batch(str(root), rels)
    assert [rel for rel, _, _ in got] == ["core/base.py", "mod/m001.py"]


def test_dispatch_takes_plain_and_openai_shaped_tool_calls(make_toolbox):
    tb = make_toolbox({"a.py": "def f():\n    return 1\n"})
    plain = tb.registry.dispatch({"name": "outline", "arguments": '{"path": "a.py"}'})
    openai = tb.registry.dispatch({"id": "call_1", "type": "function",
                                   "function": {"name": "outline", "arguments": '{"path": "a.py"}'}})
    assert plain.ok and openai.ok and plain.output == openai.output
    assert "needs a function name" in tb.registry.dispatch({"arguments": "{}"}).output
    assert "needs a function name" in tb.registry.dispatch("outline").output


def test_navigation_refuses_what_it_cannot_do_with_a_reason(make_toolbox):
    tb = make_toolbox({"notes.md": "# notes\n", "a.py": "def f():\n    return 1\n"})
    assert "not a source file in a supported language" in tb.registry.call("outline", {"path": "notes.md"}).output
    assert "not an identifier" in tb.registry.call("find_references", {"symbol": "f()"}).output
    assert "no definitions of 'g' found" in tb.registry.call("find_definition", {"symbol": "g"}).output
    assert tb.registry.call("find_references", {"symbol": "f"}).output == "no references of 'f' found"
    assert "is a directory" in tb.registry.call("outline", {"path": "."}).output


def test_the_tag_cache_keeps_only_the_newest_workspaces(tmp_path, monkeypatch):
    monkeypatch.setattr(tag_index, "MAX_CACHE_FILES", 2)
    paths = []
    for i in range(3):
        root = tmp_path / f"ws{i}"
        root.mkdir()
        (root / "a.py").write_text("def f():\n    pass\n")
        idx = TagIndex(Workspace(root), tmp_path / "cache", workers=1)
        idx.refresh()
        paths.append(idx.cache_path)
        os.utime(idx.cache_path, (i, i))  # deterministic ages: ws0 oldest
    assert [p.exists() for p in paths] == [False, True, True]
