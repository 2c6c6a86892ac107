"""Task synthesis end to end on a tiny package in real sandboxes: the keep rule, the leak check, and
`swebench eval` grading a synthesized instance (gold resolved; empty and non-fixing patches not)."""
from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from loopcoder.scenarios.nano.mutate import mutations
from loopcoder.scenarios.nano.synth import PackageRecipe, PackageSandbox, Recipe, Synthesizer

REPO = "loopcoder-tests/tinycalc"
SOURCE = textwrap.dedent('''\
    """A tiny package for the synthesis tests."""


    def clamp(x, lo, hi):
        if x < lo:
            return lo
        if x > hi:
            return hi
        return x


    def mean(values):
        if not values:
            raise ValueError("mean of nothing")
        return sum(values) / len(values)


    def halvings(n):
        count = 0
        while n > 1:
            n = n // 2
            count += 1
        return count


    def untested(a, b):
        return a - b
''')
TESTS = textwrap.dedent('''\
    import pytest

    from tinycalc import clamp, halvings, mean


    def test_clamp_low():
        assert clamp(-5, 0, 10) == 0


    def test_clamp_high():
        assert clamp(50, 0, 10) == 10


    def test_clamp_inside():
        assert clamp(5, 0, 10) == 5


    def test_mean():
        assert mean([1, 2, 3]) == 2


    def test_mean_one():
        assert mean([4]) == 4


    def test_mean_empty():
        with pytest.raises(ValueError):
            mean([])


    def test_halvings():
        assert halvings(8) == 3
''')
OTHER = "def test_unrelated():\n    assert 'a' * 2 == 'aa'\n"


def make_tree(root: Path) -> Path:
    tree = root / "tinycalc" / "tree"
    (tree / "tinycalc").mkdir(parents=True)
    (tree / "tests").mkdir()
    (tree / "tinycalc" / "__init__.py").write_text(SOURCE)
    (tree / "tests" / "test_calc.py").write_text(TESTS)
    (tree / "tests" / "test_other.py").write_text(OTHER)
    # an sdist can ship files its own .gitignore names (a generated version.py): the base commit holds them
    (tree / ".gitignore").write_text("*.txt\n")
    (tree / "tinycalc" / "data.txt").write_text("shipped\n")
    (tree / ".nano-complete").write_text("")  # Synthesizer.tree(): already prepared, nothing to download
    return tree


def pick(kind: str, old: str, new: str, line_text: str):
    for m in mutations(SOURCE):
        if m.kind == kind and m.old == old and m.new == new and line_text in SOURCE.splitlines()[m.lineno - 1]:
            return m
    raise AssertionError(f"no {kind} mutation {old!r} -> {new!r} on {line_text!r}")


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, docker_ready):
    root = tmp_path_factory.mktemp("nano")
    work, out = root / "work", root / "out"
    tree = make_tree(work)
    pkg = PackageRecipe(name="tinycalc", repo=REPO, version="1.0", split="heldout", target=3, max_attempts=10)
    recipe = Recipe(packages={"tinycalc": pkg}, date="2026-11-01T12:00:00Z", drop_always=[])
    synth = Synthesizer(recipe, out, work, root / "cache", max_fail=2, per_function=5, min_timeout_s=3)
    manifest = synth.run(["tinycalc"])
    return {"synth": synth, "pkg": pkg, "tree": tree, "out": out, "work": work, "manifest": manifest}


@pytest.mark.slow  # about 12 s on top of the shared fixture (a second sandbox and a 5 s timeout)
def test_keep_rule_in_a_sandbox(synthesized):
    synth, pkg, tree = synthesized["synth"], synthesized["pkg"], synthesized["tree"]
    base = json.loads((synthesized["work"] / "tinycalc" / "baseline.json").read_text())
    assert len(base["passing"]) == 8 and base["failing"] == []
    covered = base["lines"]["tests/test_calc.py"]["tinycalc/__init__.py"]
    assert 5 in covered and 27 not in covered  # clamp's first line runs; untested() never does
    assert "tinycalc/__init__.py" not in base["lines"].get("tests/test_other.py", {})
    candidates = synth.candidates(pkg, tree, base)
    assert candidates and all(m.function != "untested" for _, m, _ in candidates)
    assert all(files == ["tests/test_calc.py"] for _, _, files in candidates)  # only the covering test file

    passing = set(base["passing"])
    sb = PackageSandbox(tree, REPO, "1.0")
    try:
        def check(m):
            return synth._validate_one(pkg, sb, "tinycalc/__init__.py", m, ["tests/test_calc.py"], passing, 0.1)

        kept = check(pick("constant", "0", "1", "count = 0"))
        assert kept["status"] == "kept" and kept["FAIL_TO_PASS"] == ["tests/test_calc.py::test_halvings"]
        assert len(kept["PASS_TO_PASS"]) == 6 and "tests/test_other.py::test_unrelated" not in kept["PASS_TO_PASS"]
        assert "test_halvings" in kept["sections"]
        # x <= lo: no test sits on the boundary, so nothing fails: dropped
        assert check(pick("compare", "<", "<=", "if x < lo:"))["status"] == "no_failure"
        # `if values:` breaks all three mean tests: more than max_fail (2)
        too_many = check(pick("invert_if", "not values", "values", "if not values:"))
        assert too_many["status"] == "too_many_failures" and too_many["failing"] == 3
        # n // 1 never shrinks: the run is cut at the time limit
        assert check(pick("off_by_one", "2", "1", "n = n // 2"))["status"] == "timeout"
        # the clean file is back after every validation
        assert (sb.root / "tinycalc" / "__init__.py").read_text() == SOURCE
    finally:
        sb.close()


def test_synthesized_instances_and_manifest(synthesized):
    out, manifest = synthesized["out"], synthesized["manifest"]
    results = [json.loads(line) for line in (synthesized["work"] / "tinycalc" / "results.jsonl").read_text().splitlines()]
    kept = [r for r in results if r["status"] == "kept"]
    insts = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    assert (out / "train.jsonl").read_text() == ""
    assert len(insts) == len(kept) >= 1 and manifest["counts"] == {"train": 0, "heldout": len(insts)}
    assert manifest["packages"]["tinycalc"]["validated"] == len(results) <= 10
    keys = {(r["mutation"]["function"], tuple(r["FAIL_TO_PASS"])) for r in kept}
    assert len(keys) == len(kept)  # no two kept mutants fail the same tests in the same function
    for inst in insts:
        f2p, p2p = json.loads(inst["FAIL_TO_PASS"]), json.loads(inst["PASS_TO_PASS"])
        assert 1 <= len(f2p) <= 2 and len(f2p) + len(p2p) == 7
        assert inst["instance_id"].startswith("loopcoder-tests__tinycalc.synth-") and inst["test_patch"] == ""
        assert inst["patch"].startswith("diff --git a/tinycalc/__init__.py b/tinycalc/__init__.py")
        assert (out / "repos" / f"{inst['instance_id']}.bundle").is_file()
        assert inst["environment_setup_commit"] == inst["base_commit"]
        m = inst["nano"]
        # the statement names the function but never shows the mutated source line
        mutated_line = next(r for r in kept if r["mutation"]["lineno"] == m["line"])["mutation"]
        text = inst["problem_statement"]
        assert f"tinycalc.{m['function']}" in text
        assert SOURCE.splitlines()[m["line"] - 1].strip() not in text
        assert mutated_line["new"] not in text or len(mutated_line["new"]) <= 2
    # a rerun validates nothing again and gives the same instances
    again = synthesized["synth"].run(["tinycalc"])
    assert again["packages"]["tinycalc"]["validated"] == len(results)
    assert (out / "heldout.jsonl").read_text().splitlines() == [json.dumps(i) for i in insts]


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def test_the_clean_code_is_unreachable_from_the_agents_checkout(synthesized, tmp_path):
    from loopcoder.scenarios.swebench.repos import check_repository, isolated_checkout

    out = synthesized["out"]
    clean_blob = subprocess.run(["git", "hash-object", "--stdin"], input=SOURCE, capture_output=True, text=True,
                                check=True).stdout.strip()
    for inst in map(json.loads, (out / "heldout.jsonl").read_text().splitlines()):
        dest = tmp_path / inst["instance_id"]
        isolated_checkout(inst, dest, repos_dir=out / "repos")
        assert _git(dest, "rev-list", "--all").split() == [inst["base_commit"]]  # one root commit, nothing else
        assert _git(dest, "rev-list", "--parents", "-n", "1", inst["base_commit"]).split() == [inst["base_commit"]]
        objects = _git(dest, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)").split("\n")
        blobs = [line.split()[0] for line in objects if line.endswith(" blob")]
        assert clean_blob not in blobs
        clean_function = "".join(SOURCE.splitlines(keepends=True)[inst["nano"]["line"] - 2:inst["nano"]["line"] + 1])
        for blob in blobs:
            assert clean_function not in _git(dest, "cat-file", "-p", blob)
        assert (dest / "tinycalc" / "__init__.py").read_text() != SOURCE
        assert (dest / "tinycalc" / "data.txt").read_text() == "shipped\n"
        assert check_repository(inst, out / "repos").startswith("ok")
        # the bundle itself holds nothing else either
        heads = _git(out, "bundle", "list-heads", str(out / "repos" / f"{inst['instance_id']}.bundle"))
        assert {line.split()[0] for line in heads.splitlines()} == {inst["base_commit"]}


def test_swebench_eval_grades_a_synthesized_instance(synthesized, docker_client, tmp_path):
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.dataset import load_dataset
    from loopcoder.scenarios.swebench.evaluation import EvalContext, evaluate_instance

    out = synthesized["out"]
    inst = load_dataset(out / "heldout.jsonl")[0]  # through the same loader `swebench eval` uses
    comment = inst["patch"].split("\n@@")[0] + "\n@@ -1,3 +1,4 @@\n+# a comment, not a fix\n " + \
        "\n ".join(SOURCE.splitlines()[:1]) + "\n \n \n"
    ctx = EvalContext(load_swebench_config(), load_runtime_config(), docker_client, tmp_path / "run", "nano",
                      repos_dir=out / "repos")
    preds = [{"instance_id": inst["instance_id"], "model_name_or_path": name, "model_patch": patch}
             for name, patch in (("gold", inst["patch"]), ("empty", ""), ("comment", comment))]
    results = {p["model_name_or_path"]: evaluate_instance(inst, p, ctx) for p in preds}
    assert results["gold"].status == "resolved" and results["gold"].junit_resolved is True
    assert results["empty"].status == "empty_patch" and not results["empty"].resolved
    assert results["comment"].status == "unresolved" and results["comment"].test_exit_code == 1
    script = (ctx.log_dir("gold", inst["instance_id"]) / "eval.sh").read_text()
    assert "tests/test_calc.py" in script and "test_other" not in script and "git apply" not in script
