"""AST mutation operators: each makes the expected one-span change, and reverting it restores the file byte for byte."""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from loopcoder.scenarios.nano.mutate import KINDS, mutations

SNIPPET = textwrap.dedent('''\
    """Module docstring: "abc" 1 2 3."""
    import math

    LIMIT = 10  # module level: never mutated


    def clamp(x, lo, hi):
        """Docstring stays."""
        if x < lo:
            return lo
        if x > hi and hi is not None:
            return hi
        return x


    def window(items, size):
        total = 0
        for i in range(len(items) - size + 1):
            total += sum(items[i:i + size])  # café: non-ASCII comment before nothing
        return total * 2


    def label(n, sep=","):
        parts = ["a", "b"]
        ok = True
        if not n:
            return ""
        while n > 0:
            n -= 1
        return sep.join(parts) if ok else math.pow(n, 2)
''')


def by_kind(kind):
    return [m for m in mutations(SNIPPET) if m.kind == kind]


def edited_line(m) -> tuple[str, str]:
    before = SNIPPET.splitlines()[m.lineno - 1]
    after = m.apply(SNIPPET).splitlines()[m.lineno - 1]
    return before.strip(), after.strip()


def lines_of(kind):
    return {edited_line(m) for m in by_kind(kind)}


def test_compare_swaps_the_operator_only():
    assert ("if x < lo:", "if x <= lo:") in lines_of("compare")
    assert ("if x > hi and hi is not None:", "if x >= hi and hi is not None:") in lines_of("compare")
    assert ("if x > hi and hi is not None:", "if x > hi and hi is None:") in lines_of("compare")
    assert ("while n > 0:", "while n >= 0:") in lines_of("compare")


def test_arithmetic_swaps_binary_and_augmented_operators():
    got = lines_of("arithmetic")
    assert ("return total * 2", "return total // 2") in got
    assert ("n -= 1", "n += 1") in got
    assert ("for i in range(len(items) - size + 1):", "for i in range(len(items) + size + 1):") in got


def test_off_by_one_and_slice_bounds():
    assert ("return total * 2", "return total * 3") in lines_of("off_by_one")
    slices = lines_of("slice_bound")
    before = "total += sum(items[i:i + size])  # café: non-ASCII comment before nothing"
    assert (before, before.replace("items[i:i + size]", "items[i + 1:i + size]")) in slices


def test_constants_swap_args_bool_ops_and_conditions():
    assert ("ok = True", "ok = False") in lines_of("constant")
    assert ('return ""', 'return " "') in lines_of("constant")
    assert ('parts = ["a", "b"]', 'parts = ["", "b"]') in lines_of("constant")
    assert ("return sep.join(parts) if ok else math.pow(n, 2)",
            "return sep.join(parts) if ok else math.pow(2, n)") in lines_of("swap_args")
    assert ("if x > hi and hi is not None:", "if x > hi or hi is not None:") in lines_of("bool_op")
    inverted = lines_of("invert_if")
    assert ("if x < lo:", "if not (x < lo):") in inverted
    assert ("if not n:", "if n:") in inverted
    assert ("return sep.join(parts) if ok else math.pow(n, 2)",
            "return sep.join(parts) if not ok else math.pow(n, 2)") in inverted


def test_guard_removal_and_dropped_condition_edit_whole_lines():
    guards = [m for m in by_kind("drop_guard") if m.old.startswith("    if x < lo:")]
    assert len(guards) == 1 and guards[0].old == "    if x < lo:\n        return lo\n" and guards[0].new == ""
    drops = [m for m in by_kind("drop_if") if m.function == "clamp"]
    assert drops == []  # clamp's ifs end in return: those are guards
    src = "def f(a):\n    out = []\n    if a:\n        out.append(1)\n        out.append(2)\n    return out\n"
    (drop,) = [m for m in mutations(src) if m.kind == "drop_if"]
    assert drop.apply(src) == "def f(a):\n    out = []\n    out.append(1)\n    out.append(2)\n    return out\n"


def test_wrong_variable_uses_another_parameter():
    got = lines_of("wrong_variable")
    assert ("if x < lo:", "if lo < lo:") in got or ("if x < lo:", "if x < hi:") in got
    assert all(m.function in ("clamp", "window", "label") for m in by_kind("wrong_variable"))


def test_only_function_bodies_are_mutated_and_docstrings_never():
    for m in mutations(SNIPPET):
        assert m.function and m.lineno >= 7, m
        assert "Docstring" not in m.old and "LIMIT" not in m.old
    assert {m.kind for m in mutations(SNIPPET)} == set(KINDS) - {"drop_if"}  # drop_if: see the test above


def test_every_mutation_is_one_span_and_reverts_exactly():
    for m in mutations(SNIPPET):
        mutated = m.apply(SNIPPET)
        assert mutated != SNIPPET
        # everything outside the span is untouched (formatting kept)
        assert mutated[:m.start] == SNIPPET[:m.start] and mutated[m.start + len(m.new):] == SNIPPET[m.end:]
        assert m.revert(mutated) == SNIPPET
    with pytest.raises(ValueError):
        by_kind("compare")[0].apply(SNIPPET.replace("x < lo", "x  <  lo"))


def test_the_gold_patch_git_makes_restores_the_original_bytes(tmp_path):
    def git(*args, **kw):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True, **kw).stdout

    git("init", "-q")
    f = tmp_path / "mod.py"
    for m in mutations(SNIPPET)[::7]:
        f.write_text(m.apply(SNIPPET))
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "m")
        f.write_text(SNIPPET)
        patch = git("diff", "HEAD")
        git("checkout", "-q", "--", "mod.py")
        assert f.read_text() == m.apply(SNIPPET)
        git("apply", "-", input=patch)
        assert f.read_bytes() == SNIPPET.encode()


def test_unparsable_source_gives_no_mutations():
    assert mutations("def f(:\n") == []
