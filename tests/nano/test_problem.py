"""Problem statements from observed failures: test frames and error lines only, seeded variety."""
from __future__ import annotations

import textwrap

from loopcoder.scenarios.nano.problem import (
    evidence, failing_excerpt, failure_sections, module_name, public_name, statement,
)

OUTPUT = textwrap.dedent('''\
    ============================= test session starts ==============================
    collected 3 items

    tests/test_calc.py F.F                                                   [100%]

    =================================== FAILURES ===================================
    _________________________________ test_mean ___________________________________
    tests/test_calc.py:9: in test_mean
        assert mean([1, 2, 3]) == 2
    E   assert 18.0 == 2
    E    +  where 18.0 = mean([1, 2, 3])
    _______________________________ test_clamp_low ________________________________
    tests/test_calc.py:4: in test_clamp_low
        assert clamp(-5, 0, 10) == 0
    tinycalc/__init__.py:3: in clamp
        return lo[0]
    E   TypeError: 'int' object is not subscriptable
    =========================== short test summary info ============================
    FAILED tests/test_calc.py::test_mean - assert 18.0 == 2
    FAILED tests/test_calc.py::test_clamp_low - TypeError: 'int' object is not subscriptable
''')
TEST_FILE = textwrap.dedent('''\
    from tinycalc import clamp, mean

    def test_clamp_low():
        assert clamp(-5, 0, 10) == 0

    def test_mean():
        """Docstring."""
        values = [1, 2, 3]
        assert mean([1, 2, 3]) == 2

    def test_long():
        a = 1
        b = 2
        assert clamp(a, b, 3) == [
            1,
            2,
            3,
            4,
            5,
        ]
''')


def test_sections_and_evidence_keep_test_frames_only():
    sections = failure_sections(OUTPUT)
    assert set(sections) == {"test_mean", "test_clamp_low"}
    ev = evidence(sections["test_clamp_low"], "tests/test_calc.py")
    assert ev["statements"] == ["assert clamp(-5, 0, 10) == 0"]  # the package frame's line is left out
    assert ev["exception"] == "TypeError" and ev["location"] == ("tests/test_calc.py", 4)
    ev = evidence(sections["test_mean"], "tests/test_calc.py")
    assert ev["errors"][0] == "assert 18.0 == 2" and ev["exception"] is None


def test_excerpt_is_the_test_up_to_the_failing_statement(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(TEST_FILE)
    assert failing_excerpt(tmp_path, ("tests/test_calc.py", 9)) == ["values = [1, 2, 3]", "assert mean([1, 2, 3]) == 2"]
    assert failing_excerpt(tmp_path, ("tests/missing.py", 9)) == []
    # whole statements only: the multi-line assert with what fits before it (max_lines), never half of one
    assert failing_excerpt(tmp_path, ("tests/test_calc.py", 14)) == ["b = 2", "assert clamp(a, b, 3) == [", "    1,",
                                                                       "    2,", "    3,", "    4,", "    5,", "]"]
    assert failing_excerpt(tmp_path, ("tests/test_calc.py", 14), max_lines=3)[0] == "assert clamp(a, b, 3) == ["


def test_names():
    assert module_name("src/pkg/sub/__init__.py") == "pkg.sub" and module_name("parse.py") == "parse"
    assert public_name("pkg.mod", "Parser.parse") == "pkg.mod.Parser.parse"
    assert public_name("pkg.mod", "Parser._helper") == "pkg.mod"
    assert public_name("pkg.mod", "Thing.__eq__") == "pkg.mod.Thing.__eq__"


def test_statements_vary_by_seed_and_never_show_package_frames(tmp_path):
    sections = failure_sections(OUTPUT)
    texts = {statement(str(seed), "tinycalc", "1.0", "tinycalc", "clamp", ["tests/test_calc.py::test_clamp_low"],
                       sections) for seed in range(12)}
    assert len(texts) >= 6
    for text in texts:
        assert "tinycalc.clamp" in text and "TypeError" in text
        assert "return lo[0]" not in text and "tinycalc/__init__.py" not in text
    again = statement("3", "tinycalc", "1.0", "tinycalc", "clamp", ["tests/test_calc.py::test_clamp_low"], sections)
    assert again in texts and again == statement("3", "tinycalc", "1.0", "tinycalc", "clamp",
                                                 ["tests/test_calc.py::test_clamp_low"], sections)
