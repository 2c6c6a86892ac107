"""The shipped recipe (split by package, the mini dataset's packages held out) and the leak guard on trees."""
from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from loopcoder.scenarios.nano.mutate import mutations
from loopcoder.scenarios.nano.synth import clean_copy_elsewhere, is_test_path, load_recipe, source_files
from loopcoder.scenarios.swebench.dataset import MINI_DATASET
from loopcoder.scenarios.swebench.errors import DatasetError

MINI_BASE_VERSIONS = {"mahmoud/boltons": "26.1.0", "r1chardj0n3s/parse": "1.21.0", "andialbrecht/sqlparse": "0.5.5",
                      "Python-Markdown/markdown": "3.10.3"}


def test_the_shipped_recipe_splits_by_package_and_holds_out_the_mini_packages():
    recipe = load_recipe()
    train, heldout = recipe.split("train"), recipe.split("heldout")
    assert len(heldout) >= 4 and 12 <= len(train) + len(heldout) <= 20
    assert not {p.repo for p in train} & {p.repo for p in heldout}
    mini_repos = {json.loads(line)["repo"] for line in MINI_DATASET.read_text().splitlines()}
    held = {p.repo: p.version for p in heldout}
    assert mini_repos <= set(held)
    for repo, version in MINI_BASE_VERSIONS.items():
        assert held[repo] == version  # the versions the mini dataset's base commits import
    assert all(p.version[0].isdigit() for p in recipe.packages.values())


def test_bad_recipes_are_one_line_errors(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text(yaml.safe_dump({"packages": {"a": {"repo": "o/a", "version": "1", "split": "test"}}}))
    with pytest.raises(DatasetError, match="package a: split must be train or heldout"):
        load_recipe(bad)
    bad.write_text(yaml.safe_dump({"packages": {"a": {"repo": "o/a", "version": "1", "split": "train"},
                                                "b": {"repo": "o/a", "version": "2", "split": "heldout"}}}))
    with pytest.raises(DatasetError, match="a repository appears twice"):
        load_recipe(bad)
    with pytest.raises(DatasetError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_source_files_leave_out_tests_and_build_scripts(tmp_path):
    for rel in ("pkg/__init__.py", "pkg/core.py", "pkg/tests/test_core.py", "tests/conftest.py", "setup.py",
                "src/other/mod.py", "test_top.py", "pkg/_version.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert source_files(tmp_path) == ["pkg/__init__.py", "pkg/core.py", "src/other/mod.py"]
    assert is_test_path("testing/helpers.py") and not is_test_path("pkg/testutils_not.py")


def test_a_clean_copy_of_the_function_elsewhere_in_the_tree_is_found(tmp_path):
    src = textwrap.dedent('''\
        def area(w, h):
            if w < 0:
                raise ValueError(w)
            return w * h
    ''')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "geo.py").write_text(src)
    m = next(m for m in mutations(src) if m.kind == "arithmetic")
    assert clean_copy_elsewhere(tmp_path, "pkg/geo.py", src, m) is None
    (tmp_path / "build" / "lib" / "pkg").mkdir(parents=True)
    (tmp_path / "build" / "lib" / "pkg" / "geo.py").write_text("# copy\n" + src)
    assert clean_copy_elsewhere(tmp_path, "pkg/geo.py", src, m) == "build/lib/pkg/geo.py"


def test_cli_refuses_an_unknown_package_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("loopcoder")
    proc = subprocess.run([str(script), "nano", "synth", "--out", str(tmp_path), "-p", "nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown package(s) nope; the recipe has addict")


def test_only_tests_of_python_files_are_gradable():
    """ordered-set's README doctest passed in the sandbox but the graders' run never reports it: 16 synthesized
    instances naming `README.md::README.md` could never resolve."""
    from loopcoder.scenarios.nano.synth import gradable_tests

    passing = {"README.md::README.md", "tests/test_a.py::test_x", "tests/test_a.py::T::test_y",
               "tests/test_b.py::test_z", "docs/usage.rst::usage.rst"}
    files = ["tests/test_a.py", "README.md", "docs/usage.rst"]
    assert gradable_tests(passing, files) == ["tests/test_a.py::T::test_y", "tests/test_a.py::test_x"]
