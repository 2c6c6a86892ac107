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


# -- line endings: text the model writes with "\n" follows the file's own line ending ----------------

def raw(tb, rel):
    return (tb.workspace.root / rel).read_bytes()


def test_multi_line_new_str_for_a_one_line_old_str_follows_a_crlf_file(make_toolbox):
    tb = make_toolbox({"win.txt": b"alpha\r\nbeta\r\n"})
    res = tb.registry.call("str_replace", {"path": "win.txt", "old_str": "beta", "new_str": "beta\ngamma\ndelta"})
    assert res.ok, res.output
    assert raw(tb, "win.txt") == b"alpha\r\nbeta\r\ngamma\r\ndelta\r\n"
    assert "     3│gamma" in res.output and "\r" not in res.output


def test_insert_writes_every_inner_line_with_the_files_crlf(make_toolbox):
    tb = make_toolbox({"win.txt": b"alpha\r\nbeta\r\n"})
    assert tb.registry.call("insert", {"path": "win.txt", "line": 1, "text": "x\ny"}).ok
    assert raw(tb, "win.txt") == b"alpha\r\nx\r\ny\r\nbeta\r\n"
    assert tb.registry.call("insert", {"path": "win.txt", "line": 0, "text": "top\nsecond\n"}).ok
    assert raw(tb, "win.txt") == b"top\r\nsecond\r\nalpha\r\nx\r\ny\r\nbeta\r\n"


def test_crlf_file_without_a_final_newline(make_toolbox):
    tb = make_toolbox({"win.txt": b"one\r\ntwo"})
    assert tb.registry.call("str_replace", {"path": "win.txt", "old_str": "two", "new_str": "two\n2b"}).ok
    assert raw(tb, "win.txt") == b"one\r\ntwo\r\n2b"
    assert tb.registry.call("insert", {"path": "win.txt", "line": 3, "text": "three\nfour"}).ok
    assert raw(tb, "win.txt") == b"one\r\ntwo\r\n2b\r\nthree\r\nfour\r\n"
    # a stray CR at the end of the last line does not end it: the inserted text starts a line of its own
    tb = make_toolbox({"cr_end.txt": b"one\r\ntwo\r"})
    assert tb.registry.call("insert", {"path": "cr_end.txt", "line": 2, "text": "three"}).ok
    assert raw(tb, "cr_end.txt") == b"one\r\ntwo\r\r\nthree\r\n"


def test_mixed_line_endings_follow_the_edited_line(make_toolbox):
    tb = make_toolbox({"mixed.txt": b"a\r\nb\nc\r\n"})
    assert tb.registry.call("str_replace", {"path": "mixed.txt", "old_str": "b", "new_str": "b\nb2"}).ok
    assert raw(tb, "mixed.txt") == b"a\r\nb\nb2\nc\r\n"
    assert tb.registry.call("str_replace", {"path": "mixed.txt", "old_str": "a", "new_str": "a\na2"}).ok
    assert raw(tb, "mixed.txt") == b"a\r\na2\r\nb\nb2\nc\r\n"
    # old_str written with \n matches a CRLF stretch; the replacement takes that stretch's ending
    assert tb.registry.call("str_replace", {"path": "mixed.txt", "old_str": "a\na2", "new_str": "A\nA2"}).ok
    assert raw(tb, "mixed.txt") == b"A\r\nA2\r\nb\nb2\nc\r\n"
    # a stretch whose endings differ from line to line still matches an old_str written with \n
    assert tb.registry.call("str_replace", {"path": "mixed.txt", "old_str": "A2\nb\n", "new_str": "M\n"}).ok
    assert raw(tb, "mixed.txt") == b"A\r\nM\r\nb2\nc\r\n"


def test_cr_only_file_stays_cr_only(make_toolbox):
    tb = make_toolbox({"mac.txt": b"a\rb\r"})
    assert tb.registry.call("str_replace", {"path": "mac.txt", "old_str": "a\nb", "new_str": "a\nx\nb"}).ok
    assert raw(tb, "mac.txt") == b"a\rx\rb\r"
    assert tb.registry.call("insert", {"path": "mac.txt", "line": 0, "text": "top\n"}).ok
    assert raw(tb, "mac.txt") == b"top\ra\rx\rb\r"


def test_explicit_crlf_in_the_edit_is_kept_and_lf_files_stay_lf(make_toolbox):
    tb = make_toolbox({"unix.txt": b"one\ntwo\n"})
    assert tb.registry.call("str_replace", {"path": "unix.txt", "old_str": "one", "new_str": "one\nuno"}).ok
    assert raw(tb, "unix.txt") == b"one\nuno\ntwo\n"
    assert tb.registry.call("str_replace", {"path": "unix.txt", "old_str": "two\n", "new_str": "dos\r\n"}).ok
    assert raw(tb, "unix.txt") == b"one\nuno\ndos\r\n"


def test_line_numbers_count_newlines_only_as_view_does(make_toolbox):
    # a form feed (common in GNU and CPython sources) is not a line break for view, search or tree-sitter
    tb = make_toolbox({"ff.py": "x = 1\n\x0c\ny = 2\nz = 3\n"})
    res = tb.registry.call("str_replace", {"path": "ff.py", "old_str": "z = 3", "new_str": "z = 4"})
    assert res.ok and "     4│z = 4" in res.output, res.output
    assert tb.registry.call("insert", {"path": "ff.py", "line": 3, "text": "w = 0"}).ok
    assert (tb.workspace.root / "ff.py").read_text() == "x = 1\n\x0c\ny = 2\nw = 0\nz = 4\n"


# -- ambiguity and the zero-match hint ----------------------------------------------------------------

def test_overlapping_matches_are_ambiguous(make_toolbox):
    tb = make_toolbox({"a.txt": "aaa\n", "b.txt": "x\nabab\nab\n"})
    res = tb.registry.call("str_replace", {"path": "a.txt", "old_str": "aa", "new_str": "b"})
    assert not res.ok and "occurs 2 times" in res.output, res.output
    assert raw(tb, "a.txt") == b"aaa\n"
    res = tb.registry.call("str_replace", {"path": "b.txt", "old_str": "abab", "new_str": "X"})
    assert res.ok, res.output  # one match only: a match must not be refused for overlapping itself
    many = make_toolbox({"d.txt": "x = 1\n" * 12})
    res = many.registry.call("str_replace", {"path": "d.txt", "old_str": "x = 1", "new_str": "y"})
    assert not res.ok and "occurs 12 times" in res.output  # the count is exact beyond the lines listed
    crlf = make_toolbox({"c.txt": b"ab\r\nab\r\nab\r\n"})
    res = crlf.registry.call("str_replace", {"path": "c.txt", "old_str": "ab\nab", "new_str": "X"})
    assert not res.ok and "occurs 2 times" in res.output and "line 1" in res.output and "line 2" in res.output


def test_the_zero_match_hint_names_every_nearly_matching_line_once(make_toolbox):
    text = "x = compute(1)\ny = other()\nx = compute(1)\n"
    tb = make_toolbox({"dup.py": text})
    res = tb.registry.call("str_replace", {"path": "dup.py", "old_str": "x = compute(2)", "new_str": "q"})
    assert not res.ok and "Closest lines" in res.output
    assert res.output.count("line 1:") == 1 and res.output.count("line 3:") == 1, res.output
    res = tb.registry.call("str_replace", {"path": "dup.py", "old_str": "x=compute(1)\nzzz", "new_str": "q"})
    assert res.output.count("line 1:") == 1 and res.output.count("line 3:") == 1, res.output
