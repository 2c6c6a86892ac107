"""str_replace, insert, create, undo: the happy paths and every error path."""
import pytest

from loopcoder.tools.config import ToolsConfig

SRC = """def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
"""


@pytest.fixture
def tb(make_toolbox):
    return make_toolbox({"calc.py": SRC, "notes.txt": "one\ntwo\n", "blob.bin": b"\x00\x01binary",
                         "latin1.txt": "caf\xe9\n".encode("latin-1")})


def read(tb, rel):
    return (tb.workspace.root / rel).read_text()


def test_str_replace_changes_exactly_one_occurrence_and_shows_it(tb):
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "return a - b", "new_str": "return b - a"})
    assert res.ok, res.output
    assert read(tb, "calc.py") == SRC.replace("return a - b", "return b - a")
    assert "     6│    return b - a" in res.output


def test_str_replace_with_no_match_shows_the_nearly_matching_lines(tb):
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "def sub(a,b):", "new_str": "x"})
    assert not res.ok and "not found" in res.output and "line 5" in res.output and "ignoring whitespace" in res.output
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "  return a / b", "new_str": "x"})
    assert not res.ok and "Closest lines" in res.output and "return a * b" in res.output
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "zzz qqq", "new_str": "x"})
    assert not res.ok and "No similar line" in res.output
    assert read(tb, "calc.py") == SRC


def test_str_replace_with_several_matches_lists_each_candidate(tb):
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "(a, b):", "new_str": "(a, b, c):"})
    assert not res.ok and "occurs 3 times" in res.output
    assert all(f"line {n}" in res.output for n in (1, 5, 9)), res.output
    assert read(tb, "calc.py") == SRC


def test_str_replace_refuses_empty_identical_missing_directory_binary_and_non_utf8(tb):
    call = tb.registry.call
    assert "old_str is empty" in call("str_replace", {"path": "calc.py", "old_str": "", "new_str": "x"}).output
    assert "the same" in call("str_replace", {"path": "calc.py", "old_str": "add", "new_str": "add"}).output
    assert "no such file" in call("str_replace", {"path": "nope.py", "old_str": "a", "new_str": "b"}).output
    (tb.workspace.root / "pkg").mkdir()
    assert "is a directory" in call("str_replace", {"path": "pkg", "old_str": "a", "new_str": "b"}).output
    assert "binary file" in call("str_replace", {"path": "blob.bin", "old_str": "binary", "new_str": "b"}).output
    assert "not UTF-8" in call("str_replace", {"path": "latin1.txt", "old_str": "caf", "new_str": "b"}).output
    assert "missing required argument 'new_str'" in call("str_replace", {"path": "calc.py", "old_str": "a"}).output


def test_an_edit_that_breaks_the_syntax_is_rejected_with_its_line(tb):
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "def sub(a, b):", "new_str": "def sub(a, b:"})
    assert not res.ok and "edit rejected" in res.output and "line 5" in res.output and "unchanged" in res.output
    assert read(tb, "calc.py") == SRC
    res = tb.registry.call("insert", {"path": "calc.py", "line": 2, "text": "    if a >\n"})
    assert not res.ok and "line 3" in res.output
    assert "edit rejected" in tb.registry.call("create", {"path": "new.py", "content": "def f(:\n"}).output
    assert not (tb.workspace.root / "new.py").exists()


def test_syntax_check_can_warn_instead_of_reject(make_toolbox):
    config = ToolsConfig()
    config.edit.reject_syntax_errors = False
    tb = make_toolbox({"calc.py": SRC}, config=config)
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "return a * b", "new_str": "return a *"})
    assert res.ok and "warning: the edit added a syntax error at line 10" in res.output
    assert "return a *\n" in read(tb, "calc.py")


def test_an_already_broken_file_can_still_be_edited_elsewhere(make_toolbox):
    broken = SRC.replace("def mul(a, b):", "def mul(a, b:")
    tb = make_toolbox({"calc.py": broken})
    res = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "a + b", "new_str": "b + a"})
    assert res.ok, res.output
    fixed = tb.registry.call("str_replace", {"path": "calc.py", "old_str": "def mul(a, b:", "new_str": "def mul(a, b):"})
    assert fixed.ok


def test_insert_adds_lines_after_the_given_line(tb):
    res = tb.registry.call("insert", {"path": "notes.txt", "line": 1, "text": "one and a half"})
    assert res.ok and read(tb, "notes.txt") == "one\none and a half\ntwo\n"
    assert tb.registry.call("insert", {"path": "notes.txt", "line": 0, "text": "zero\n"}).ok
    assert tb.registry.call("insert", {"path": "notes.txt", "line": 4, "text": "three\n"}).ok
    assert read(tb, "notes.txt") == "zero\none\none and a half\ntwo\nthree\n"


def test_insert_errors(tb):
    call = tb.registry.call
    assert "past the end" in call("insert", {"path": "notes.txt", "line": 9, "text": "x"}).output
    assert "text is empty" in call("insert", {"path": "notes.txt", "line": 1, "text": ""}).output
    assert "greater than or equal to 0" in call("insert", {"path": "notes.txt", "line": -1, "text": "x"}).output


def test_create_makes_folders_and_refuses_to_clobber(tb):
    res = tb.registry.call("create", {"path": "pkg/sub/new.py", "content": "def new():\n    return 1\n"})
    assert res.ok and read(tb, "pkg/sub/new.py").startswith("def new")
    again = tb.registry.call("create", {"path": "pkg/sub/new.py", "content": "x = 1\n"})
    assert not again.ok and "already exists" in again.output
    assert tb.registry.call("create", {"path": "pkg/sub/new.py", "content": "x = 1\n", "overwrite": True}).ok
    assert read(tb, "pkg/sub/new.py") == "x = 1\n"
    assert "is a directory" in tb.registry.call("create", {"path": "pkg", "content": "x"}).output
    assert "is a file" in tb.registry.call("create", {"path": "notes.txt/inner.py", "content": "x"}).output


def test_undo_steps_back_through_edits_and_removes_created_files(tb):
    call = tb.registry.call
    call("str_replace", {"path": "calc.py", "old_str": "a + b", "new_str": "a + b + 0"})
    call("insert", {"path": "calc.py", "line": 0, "text": "# calculator\n"})
    assert call("undo", {"path": "calc.py"}).ok and read(tb, "calc.py") == SRC.replace("a + b", "a + b + 0")
    assert call("undo", {"path": "calc.py"}).ok and read(tb, "calc.py") == SRC
    assert "no edit of calc.py to undo" in call("undo", {"path": "calc.py"}).output
    call("create", {"path": "fresh.py", "content": "x = 1\n"})
    res = call("undo", {"path": "fresh.py"})
    assert res.ok and "file removed" in res.output and not (tb.workspace.root / "fresh.py").exists()


def test_edits_keep_crlf_files_crlf(make_toolbox):
    tb = make_toolbox({"win.txt": b"alpha\r\nbeta\r\n"})
    res = tb.registry.call("str_replace", {"path": "win.txt", "old_str": "alpha\nbeta", "new_str": "alpha\ngamma"})
    assert res.ok and (tb.workspace.root / "win.txt").read_bytes() == b"alpha\r\ngamma\r\n"


def test_an_edit_is_seen_by_the_next_navigation_call(tb):
    assert tb.registry.call("find_definition", {"symbol": "div"}).data.locations == []
    res = tb.registry.call("insert", {"path": "calc.py", "line": 10, "text": "\n\ndef div(a, b):\n    return a / b\n"})
    assert res.ok, res.output
    locs = tb.registry.call("find_definition", {"symbol": "div"}).data.locations
    assert [(loc.path, loc.line) for loc in locs] == [("calc.py", 13)]


def test_a_same_size_edit_changes_the_whole_second_mtime_so_pyc_caches_see_it(tb):
    p = tb.workspace.root / "calc.py"
    before = p.stat()
    assert tb.registry.call("str_replace", {"path": "calc.py", "old_str": "a - b", "new_str": "b - a"}).ok
    after = p.stat()
    assert after.st_size == before.st_size and int(after.st_mtime) != int(before.st_mtime)
    assert tb.registry.call("undo", {"path": "calc.py"}).ok
    assert int(p.stat().st_mtime) != int(after.st_mtime)
