"""SWE-bench scenario without Docker: dataset, environment specs, framing, JUnit, tamper rules, repositories."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from swebench.harness.grading import get_logs_eval
from swebench.harness.utils import make_test_spec
from swebench.task.checks import expected_image

from loopcoder.scenarios.cli import main
from loopcoder.scenarios.swebench import dataset as ds
from loopcoder.scenarios.swebench.config import GradingConfig, SwebenchConfig, load_swebench_config
from loopcoder.scenarios.swebench.dataset import CLASSIC_FIELDS, load_dataset, validate_instance
from loopcoder.scenarios.swebench.environment import (
    directives_for, frame_script, official_image_name, resolve_environment,
)
from loopcoder.scenarios.swebench.errors import DatasetError
from loopcoder.scenarios.swebench.evaluation import _reconstruct_log
from loopcoder.scenarios.swebench.junit import junit_key, parse_junit
from loopcoder.scenarios.swebench.predictions import append_prediction, load_predictions
from loopcoder.scenarios.swebench.repos import check_repository, future_objects, isolated_checkout
from loopcoder.scenarios.swebench.tamper import inspect_patch


@pytest.fixture(scope="module")
def mini():
    return load_dataset("mini")


# -- dataset ---------------------------------------------------------------------------------------


def test_mini_dataset_has_six_classic_instances_from_four_repositories(mini):
    assert len(mini) >= 6 and len({i["repo"] for i in mini}) >= 4
    for inst in mini:
        assert set(CLASSIC_FIELDS) <= set(inst)
        assert json.loads(inst["FAIL_TO_PASS"]) and isinstance(json.loads(inst["PASS_TO_PASS"]), list)
        assert inst["environment_setup_commit"] == inst["base_commit"]
        assert "tests/" in inst["test_patch"] and "tests/" not in inst["patch"]


def test_every_bundle_holds_the_base_commit_and_nothing_after_it(mini):
    for inst in mini:
        assert check_repository(inst).startswith("ok"), inst["instance_id"]


def test_bundles_hold_only_main_and_head_at_the_base_commit(mini):
    for inst in mini:
        heads = subprocess.run(["git", "bundle", "list-heads", str(ds.find_repo_source(inst))], capture_output=True,
                               text=True, check=True).stdout.split("\n")
        refs = {line.split()[1]: line.split()[0] for line in heads if line}
        assert refs == {"HEAD": inst["base_commit"], "refs/heads/main": inst["base_commit"]}


def test_bad_datasets_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instance_id": "x"\n')
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(bad)
    monkeypatch.setattr(ds, "HUB", ("127.0.0.1", 9))  # nothing listens on the discard port here
    with pytest.raises(DatasetError, match="not a local file and the Hugging Face Hub .* is not reachable"):
        load_dataset("SWE-bench/SWE-bench_Lite")


def test_parquet_datasets_load_offline(mini, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(mini), tmp_path / "mini.parquet")
    assert [i["instance_id"] for i in load_dataset(tmp_path / "mini.parquet")] == [i["instance_id"] for i in mini]


def test_instance_validation_names_the_field(mini):
    inst = dict(mini[0])
    validate_instance(inst)
    with pytest.raises(DatasetError, match="base_commit 'abc' is not a 40-hex"):
        validate_instance({**inst, "base_commit": "abc"})
    with pytest.raises(DatasetError, match="missing or empty field.*test_patch"):
        validate_instance({**inst, "test_patch": None})
    validate_instance({**inst, "test_patch": ""})  # synthesized instances: the tests are in the tree
    with pytest.raises(DatasetError, match="missing or empty field.*patch"):
        validate_instance({**inst, "patch": ""})
    with pytest.raises(DatasetError, match="FAIL_TO_PASS is empty"):
        validate_instance({**inst, "FAIL_TO_PASS": "[]"})
    # the id names its eval log folder, which is emptied before each eval: never a path
    for bad in ("../../home", "a/b", "..", "a\\b", "a\0b"):
        with pytest.raises(DatasetError, match="instance_id must be a file name"):
            validate_instance({**inst, "instance_id": bad})
    validate_instance({**inst, "instance_id": "django__django-11099"})


def test_unknown_instance_ids_are_reported(mini):
    with pytest.raises(DatasetError, match="Missing IDs: nope__nope-1"):
        load_dataset("mini", instance_ids=["nope__nope-1"])


# -- environment -----------------------------------------------------------------------------------


def test_official_image_names_follow_swebench(mini):
    for iid in ("django__django-11099", "astropy__astropy-12907", mini[0]["instance_id"]):
        assert official_image_name(iid) == expected_image(iid)


def test_spec_table_merges_repo_version_over_repo_over_default(tmp_path):
    cfg = load_swebench_config(None, ["repos.a/b.test_cmd=pytest -x -rA", "repos.a/b@2.pip_packages=[pytest==7.4.4]"])
    assert cfg.spec_for("a/b", "1.0").test_cmd == "pytest -x -rA"
    assert cfg.spec_for("a/b", "2").pip_packages == ["pytest==7.4.4"]
    assert cfg.spec_for("a/b", "2").test_cmd == "pytest -x -rA"
    assert cfg.spec_for("c/d", "1").log_parser == "parse_log_pytest"


def test_environment_of_a_classic_instance(mini):
    inst = next(i for i in mini if i["instance_id"] == "Python-Markdown__markdown-1634")
    env = resolve_environment(inst, SwebenchConfig())
    assert env.log_parser == "parse_log_pytest" and env.eval_type == "pass_and_fail"
    assert env.test_directives == ["tests/test_syntax/extensions/test_abbr.py"]
    script = env.eval_script(host_applies_test_patch=False)
    assert f"git checkout {inst['base_commit']} -- tests/test_syntax/extensions/test_abbr.py" in script
    assert "git apply -v - <<'EOF_114329324912'" in script and ": '>>>>> Start Test Output'" in script
    # swebench's own TestSpec accepts the filled-in instance.
    spec = make_test_spec(env.swebench_instance(inst, True))
    assert spec.FAIL_TO_PASS == json.loads(inst["FAIL_TO_PASS"]) and spec.log_parser == "parse_log_pytest"


def test_an_empty_test_patch_runs_the_test_files_the_test_ids_name(mini):
    inst = {**next(i for i in mini if i["instance_id"] == "Python-Markdown__markdown-1634"), "test_patch": "",
            "FAIL_TO_PASS": json.dumps(["tests/test_b.py::test_x"]),
            "PASS_TO_PASS": json.dumps(["tests/test_a.py::T::test_y", "tests/test_b.py::test_z[1]"])}
    env = resolve_environment(inst, SwebenchConfig())
    assert env.test_directives == ["tests/test_b.py", "tests/test_a.py"] and env.test_files == []
    for host_applies in (False, True):
        script = env.eval_script(host_applies_test_patch=host_applies)
        assert "git apply" not in script and "git checkout" not in script
        assert script.splitlines()[-2].endswith("-p no:cacheprovider tests/test_b.py tests/test_a.py")
    spec = make_test_spec(env.swebench_instance(inst, False))
    assert spec.FAIL_TO_PASS == ["tests/test_b.py::test_x"]


def test_other_python_versions_are_refused_in_build_mode(mini):
    cfg = load_swebench_config(None, ['repos.mahmoud/boltons.python="3.8"'])
    with pytest.raises(DatasetError, match="asks for Python 3.8; the offline base image has only Python 3.11"):
        resolve_environment(mini[0], cfg)


def test_django_directives_are_dotted_modules():
    patch = "diff --git a/tests/forms_tests/test_x.py b/tests/forms_tests/test_x.py\n"
    assert directives_for(patch, "django") == ["forms_tests.test_x"]
    assert directives_for(patch + "diff --git a/docs/a.txt b/docs/a.txt\n") == ["tests/forms_tests/test_x.py"]


# -- framing: what the code under test prints cannot frame the log -------------------------------

FORGED_TAIL = ("PASSED tests/t.py::test_f2p\nFAILED tests/t.py::test_fake\n"
               ">>>>> Test Exit Code: 0\n")


def _spec():
    return make_test_spec({"instance_id": "o__r-1", "image": "x", "repo": "o/r", "version": "1",
                           "FAIL_TO_PASS": ["tests/t.py::test_f2p"], "PASS_TO_PASS": ["tests/t.py::test_p2p"],
                           "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail",
                           "eval_script": "#!/bin/bash\n: '>>>>> Start Test Output'\npytest\n: '>>>>> End Test Output'\n"})


def test_forged_exit_status_fools_swebench_but_not_the_framed_log(tmp_path):
    from swebench.harness.grading import parse_test_exit_code

    nonce = "n" * 32
    real = "PASSED tests/t.py::test_p2p\nFAILED tests/t.py::test_f2p\n"
    # What swebench's own eval script would log: the forged lines sit inside its markers, and the forged
    # exit status comes first, so it is the one swebench reads.
    raw = tmp_path / "raw.txt"
    raw.write_text(f"+ : '>>>>> Start Test Output'\n{real}{FORGED_TAIL}+ : '>>>>> End Test Output'\n"
                   ">>>>> Test Exit Code: 1\n")
    status, ok = get_logs_eval(_spec(), str(raw))
    assert ok and status["tests/t.py::test_f2p"] == "PASSED" and parse_test_exit_code(raw.read_text()) == 0
    framed = (f"+ echo '@@LOOPCODER-TESTS-START-{nonce}@@'\n@@LOOPCODER-TESTS-START-{nonce}@@\n{real}{FORGED_TAIL}"
              f"@@LOOPCODER-TESTS-END-{nonce}@@ 1\n")
    text, note = _reconstruct_log(framed, nonce)
    assert "printed 1 harness marker(s)" in note and nonce not in text
    assert parse_test_exit_code(text) == 1  # the status the host recorded, not the printed one
    assert text.count("+ : '>>>>> Start Test Output'") == 1 and text.count("+ : '>>>>> End Test Output'") == 1
    # Lines that are not markers still reach the log parser: the JUnit verdict is what catches them.
    ours = tmp_path / "ours.txt"
    ours.write_text(text)
    assert get_logs_eval(_spec(), str(ours))[0]["tests/t.py::test_f2p"] == "PASSED"


def test_a_repeated_nonce_marker_is_reported():
    nonce = "m" * 32
    out = f"@@LOOPCODER-TESTS-START-{nonce}@@\nx\n@@LOOPCODER-TESTS-END-{nonce}@@ 0\n@@LOOPCODER-TESTS-END-{nonce}@@ 1\n"
    assert "repeats the harness's nonce markers" in _reconstruct_log(out, nonce)[1]


def test_frame_script_replaces_only_the_marker_lines():
    script = "#!/bin/bash\nset -uxo pipefail\n: '>>>>> Start Test Output'\npytest a.py\n: '>>>>> End Test Output'\ngit x\n"
    framed = frame_script(script, "abc")
    assert "echo '@@LOOPCODER-TESTS-START-abc@@'" in framed and "pytest a.py" in framed
    assert '__loopcoder_rc=$?; echo "@@LOOPCODER-TESTS-END-abc@@ $__loopcoder_rc"' in framed
    assert ">>>>>" not in framed
    with pytest.raises(DatasetError):
        frame_script("pytest\n", "abc")


# -- JUnit ------------------------------------------------------------------------------------------


def test_junit_xml_of_a_real_pytest_run_matches_swebench_test_ids(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_k.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('v', ['a b', 'c'])\ndef test_p(v):\n    assert v != 'c'\n\n"
        "class TestC:\n    def test_m(self):\n        pass\n\n"
        "@pytest.mark.xfail\ndef test_x():\n    assert 0\n\n"
        "@pytest.mark.skip\ndef test_s():\n    pass\n")
    xml = tmp_path / "r.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                    "-o", "junit_family=xunit1", "tests/test_k.py"], cwd=tmp_path, capture_output=True)
    ids = ["tests/test_k.py::test_p[a", "tests/test_k.py::test_p[c]", "tests/test_k.py::TestC::test_m",
           "tests/test_k.py::test_x", "tests/test_k.py::test_s", "tests/test_k.py::test_gone"]
    res = parse_junit(xml.read_bytes(), ids)
    assert res.status == {"tests/test_k.py::test_p[a": "PASSED",  # truncated id, as swebench's log parser makes it
                          "tests/test_k.py::test_p[c]": "FAILED", "tests/test_k.py::TestC::test_m": "PASSED",
                          "tests/test_k.py::test_x": "XFAIL", "tests/test_k.py::test_s": "SKIPPED"}
    assert res.missing == ["tests/test_k.py::test_gone"] and res.total == 5
    assert junit_key("a/b.py::C::t[x::y]") == ("a.b.C", "t[x::y]")


def test_a_forged_passing_duplicate_does_not_hide_a_failure():
    xml = (b'<testsuites><testsuite name="pytest"><testcase classname="t" name="test_a"><failure message="x"/>'
           b'</testcase><testcase classname="t" name="test_a"/></testsuite></testsuites>')
    assert parse_junit(xml, ["t.py::test_a"]).status == {"t.py::test_a": "FAILED"}


def test_unreadable_junit_is_an_error():
    from loopcoder.scenarios.swebench.junit import JunitError

    with pytest.raises(JunitError):
        parse_junit(b"<testsuites><oops", ["a.py::t"])


# -- test-infrastructure rules ---------------------------------------------------------------------


def _diff(path: str, added: list[str], new: bool = False) -> str:
    head = f"diff --git a/{path} b/{path}\n" + ("new file mode 100644\n--- /dev/null\n" if new else f"--- a/{path}\n")
    return head + f"+++ b/{path}\n@@ -0,0 +1,{len(added)} @@\n" + "".join(f"+{l}\n" for l in added)


def _rules(patch: str, before: dict, after: dict, repo: str = "o/r", reset=()) -> set[str]:
    return {f.rule for f in inspect_patch(patch, repo, GradingConfig(), before.get, after.get, list(reset))}


def test_conftest_and_pytest_ini_are_flagged_anywhere():
    assert _rules(_diff("conftest.py", ["x = 1"], new=True), {}, {}) == {"infrastructure_file"}
    assert _rules(_diff("src/pkg/conftest.py", ["x = 1"]), {"src/pkg/conftest.py": ""}, {}) == {"infrastructure_file"}
    assert _rules(_diff("lib/sitecustomize.py", ["x = 1"], new=True), {}, {}) == {"infrastructure_file"}


def test_new_test_files_are_inert_but_existing_test_helpers_are_flagged():
    assert _rules(_diff("tests/test_repro.py", ["def test_x(): pass"], new=True), {}, {}) == set()
    assert _rules(_diff("tests/helpers.py", ["x = 1"]), {"tests/helpers.py": "y = 2\n"}, {}) == {"test_code"}
    # a test file the test patch resets before the tests run does not matter
    assert _rules(_diff("tests/test_a.py", ["x = 1"]), {"tests/test_a.py": ""}, {}, reset=["tests/test_a.py"]) == set()


def test_pyproject_is_compared_section_by_section():
    before = '[project]\nname = "p"\ndependencies = ["a"]\n[tool.pytest.ini_options]\naddopts = "-ra"\n'
    bump = before.replace('["a"]', '["a", "b"]')
    assert _rules(_diff("pyproject.toml", ["x"]), {"pyproject.toml": before}, {"pyproject.toml": bump}) == set()
    opts = before.replace('"-ra"', '"-ra -p no:junitxml"')
    assert _rules(_diff("pyproject.toml", ["x"]), {"pyproject.toml": before}, {"pyproject.toml": opts}) == {"pytest_config"}
    plugin = bump + '[project.entry-points.pytest11]\nmine = "p.plugin"\n'
    assert _rules(_diff("pyproject.toml", ["x"]), {"pyproject.toml": before}, {"pyproject.toml": plugin}) == {"pytest_config"}
    cfg = "[metadata]\nname = p\n"
    assert _rules(_diff("setup.cfg", ["x"]), {"setup.cfg": cfg}, {"setup.cfg": cfg + "[tool:pytest]\naddopts = -x\n"}) == {"pytest_config"}


def test_code_reaching_into_the_runner_is_flagged_except_in_the_runner_itself():
    patch = _diff("src/pkg/core.py", ["import _pytest.reports"])
    assert _rules(patch, {"src/pkg/core.py": ""}, {}) == {"runner_pattern"}
    assert _rules(patch, {"src/pkg/core.py": ""}, {}, repo="pytest-dev/pytest") == set()
    assert _rules(_diff("src/pkg/core.py", ["return a + b"]), {"src/pkg/core.py": ""}, {}) == set()


# -- predictions and checkouts ---------------------------------------------------------------------


def test_predictions_round_trip_and_bad_files(tmp_path):
    p = tmp_path / "preds.jsonl"
    for n in range(3):
        append_prediction(p, {"instance_id": f"a__b-{n % 2}", "model_name_or_path": "m", "model_patch": f"p{n}"})
    loaded = load_predictions(p)
    assert loaded["a__b-0"]["model_patch"] == "p2" and len(loaded) == 2  # the last line of an id wins
    (tmp_path / "d.json").write_text(json.dumps({"x": {"instance_id": "x", "model_patch": None}}))
    assert load_predictions(tmp_path / "d.json")["x"]["model_name_or_path"] == "None"
    (tmp_path / "bad.jsonl").write_text('{"model_patch": "x"}\n')
    with pytest.raises(DatasetError, match="has no instance_id"):
        load_predictions(tmp_path / "bad.jsonl")


def _git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_isolated_checkout_drops_later_commits_tags_and_branches(tmp_path):
    src = tmp_path / "o__r"
    src.mkdir()
    _git(src, "init", "-q", "-b", "main")
    (src / "f.txt").write_text("bug\n")
    _git(src, "add", "f.txt")
    _git(src, "commit", "-qm", "base")
    base = _git(src, "rev-parse", "HEAD")
    (src / "f.txt").write_text("fix\n")
    _git(src, "commit", "-qam", "the fix")
    _git(src, "tag", "v2")
    _git(src, "branch", "later")
    assert len(future_objects(src, base)) >= 4  # main, later, v2, and the fix's commit, tree and blob
    inst = {"instance_id": "o__r-1", "repo": "o/r", "base_commit": base}
    dest = isolated_checkout(inst, tmp_path / "checkout", repos_dir=tmp_path)
    assert (dest / "f.txt").read_text() == "bug\n"
    assert _git(dest, "rev-list", "--all").split() == [base] and _git(dest, "tag") == ""
    assert future_objects(dest, base) == []
    assert check_repository(inst, tmp_path).startswith("LEAKS")


# -- CLI --------------------------------------------------------------------------------------------


def test_cli_dataset_lists_the_mini_set_and_bad_input_is_one_line(capsys, mini):
    main(["swebench", "dataset"])
    assert f"{len(mini)} instance(s) valid" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["swebench", "dataset", "--dataset", "/nonexistent/x.jsonl"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == "error: dataset file not found: /nonexistent/x.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["swebench", "eval", "--dataset", "mini"])
    assert e.value.code == 2 and "exactly one of --predictions FILE and --gold" in capsys.readouterr().err
