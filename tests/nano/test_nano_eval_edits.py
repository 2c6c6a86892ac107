"""benchmarks/nano_eval.py's edit columns: the real str_replace tool's refusals are classified by reason, and a
patch counts as at the gold lines when it changes a line the gold patch changes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import git

from loopcoder.tools.toolbox import Toolbox

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("nano_eval", ROOT / "benchmarks" / "nano_eval.py")
nano_eval = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nano_eval)

SOURCE = "def f(a, b):\n    if a > b:\n        return a\n    return b\n\n\ndef g(x):\n    return x + 1\n"


def outcome(tb: Toolbox, **args) -> str:
    result = tb.registry.call("str_replace", args)
    return nano_eval.edit_outcome({"ok": result.ok, "output": result.output})


def test_each_refusal_of_the_real_tool_gets_its_reason(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    tb = Toolbox(tmp_path)
    assert outcome(tb, path="m.py", old_str="    if a > b:\n", new_str="    if a > b:\n") == "identical"
    assert outcome(tb, path="m.py", old_str="    if a > b:\n") == "bad_arguments"  # new_str missing
    assert outcome(tb, path="nowhere.py", old_str="x", new_str="y") == "no_such_file"
    assert outcome(tb, path="m.py", old_str="    if a >= b:\n", new_str="    if a < b:\n") == "old_str_not_found"
    assert outcome(tb, path="m.py", old_str="    if a > b:\n", new_str="    if a < b:\n") == "applied"
    # the agent loop's refusal of a call repeated with the same output (agent/loop.py)
    assert nano_eval.edit_outcome({"ok": False, "output": "error: not run: this exact str_replace call already ran 2 "
                                                         "times since the workspace last changed"}) == "repeated_call"
    assert nano_eval.edit_outcome({"ok": False, "output": "error: something new"}) == "other_error"


def diff(tmp_path: Path, before: str, after: str) -> str:
    repo = git.Repo.init(tmp_path / "r")
    (tmp_path / "r" / "m.py").write_text(before)
    repo.index.add(["m.py"])
    repo.index.commit("base")
    (tmp_path / "r" / "m.py").write_text(after)
    return repo.git.diff() + "\n"


def test_a_patch_is_at_the_gold_lines_when_it_changes_one_of_them(tmp_path):
    gold = diff(tmp_path / "gold", SOURCE, SOURCE.replace("a > b", "a < b"))
    assert nano_eval.changed_lines(gold) == {("m.py", 2)}
    wrong_change_same_line = diff(tmp_path / "same", SOURCE, SOURCE.replace("a > b", "a >= b"))
    elsewhere = diff(tmp_path / "else", SOURCE, SOURCE.replace("x + 1", "x + 2"))
    inserted = diff(tmp_path / "ins", SOURCE, SOURCE.replace("    if a > b:\n", "    if a > b:\n        pass\n"))
    assert nano_eval.changed_lines(gold) & nano_eval.changed_lines(wrong_change_same_line)
    assert not nano_eval.changed_lines(gold) & nano_eval.changed_lines(elsewhere)
    assert nano_eval.changed_lines(elsewhere) == {("m.py", 8)}
    assert nano_eval.changed_lines(inserted) == {("m.py", 2)}  # an insertion counts the line it follows
    broken = gold.replace("@@ -1,5 +1,5 @@", "@@ -1,5 +1,9 @@")  # a hunk header that lies about its lines
    assert broken != gold
    assert nano_eval.changed_lines(broken) == set()
