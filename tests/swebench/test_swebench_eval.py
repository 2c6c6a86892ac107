"""`swebench eval` on the bundled mini dataset: real git bundles, real environment images, real containers.

Gold patches resolve; empty patches resolve none; patches that print fake results, rewrite pytest's
reports or neuter the test helpers resolve none; a patch that does not apply, an image that fails to
build and a test run past its timeout are infrastructure failures with their reasons, and the batch
goes on after each.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.swebench.batch import evaluate_batch
from loopcoder.scenarios.swebench.dataset import find_repo_source
from loopcoder.scenarios.swebench.predictions import gold_predictions

pytestmark = pytest.mark.docker
TWO = ["mahmoud__boltons-459", "Python-Markdown__markdown-1634"]


def make_patch(inst: dict, edit) -> str:
    """A model patch: ``edit(root)`` changes a fresh checkout of ``inst``; returns the diff."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = GitWorkspace.clone(find_repo_source(inst), Path(tmp) / "ws", commit=inst["base_commit"])
        edit(ws.path)
        return ws.extract_patch().text


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def pred(inst: dict, patch: str, model: str = "attacker") -> dict:
    return {"instance_id": inst["instance_id"], "model_name_or_path": model, "model_patch": patch}


def official_report(ctx, model: str) -> dict:
    return json.loads((ctx.run_dir / f"{model}.{ctx.run_id}.json").read_text())


def test_gold_patches_of_every_bundled_instance_resolve_with_both_verdicts(make_context, mini):
    # The whole mini set takes about 35 s here, so it runs in the normal suite.
    ctx = make_context(run_id="gold")
    insts = list(mini.values())
    report = evaluate_batch(insts, gold_predictions(insts), ctx)
    for r in report.results:
        assert (r.status, r.swebench_resolved, r.junit_resolved, r.flags) == ("resolved", True, True, []), r
        per_instance = json.loads((ctx.log_dir("gold", r.instance_id) / "report.json").read_text())[r.instance_id]
        assert per_instance["resolved"] is True and per_instance["loopcoder"]["junit_resolved"] is True
        assert per_instance["tests_status"]["FAIL_TO_PASS"]["failure"] == []
    official = official_report(ctx, "gold")
    assert official["resolved_instances"] == len(insts) >= 6 and official["error_ids"] == []
    # One image per repository and version: boltons' three instances share one tag, and a second
    # batch reuses the images.
    tags = {r.instance_id: r.image for r in report.results}
    assert len({tags[i] for i in mini if i.startswith("mahmoud__boltons")}) == 1
    again = evaluate_batch([mini[TWO[0]]], gold_predictions([mini[TWO[0]]]), make_context(run_id="gold-again"))
    assert again.results[0].image_reused and again.results[0].status == "resolved"


def test_empty_patches_resolve_none(make_context, mini):
    ctx = make_context(run_id="empty")
    insts = [mini[i] for i in TWO]
    report = evaluate_batch(insts, {i["instance_id"]: pred(i, "", "empty") for i in insts}, ctx)
    assert [r.status for r in report.results] == ["empty_patch", "empty_patch"]
    official = official_report(ctx, "empty")
    assert official["resolved_instances"] == 0 and official["empty_patch_ids"] == sorted(TWO)


def test_patch_printing_fake_results_after_pytest_is_a_grading_conflict(make_context, mini):
    # After pytest has printed its summary, a thread of the patched module prints a fake FAILED line
    # (so swebench's exit-code cross-check sees "a failure") and a fake PASSED line for the F2P test.
    inst = mini["mahmoud__boltons-459"]
    patch = make_patch(inst, lambda root: append(root / "boltons/strutils.py", '''

import sys as _s, threading as _t, time as _tm


def _late_lines():
    while _t.main_thread().is_alive():
        _tm.sleep(0.05)
    _s.__stdout__.write("FAILED tests/test_strutils.py::test_not_a_real_test\\n"
                        "PASSED tests/test_strutils.py::test_bytes2human\\n")
    _s.__stdout__.flush()


_t.Thread(target=_late_lines).start()
'''))
    ctx = make_context(run_id="fake")
    (r,) = evaluate_batch([inst], {inst["instance_id"]: pred(inst, patch)}, ctx).results
    assert r.swebench_resolved is True, "the log alone is fooled (swebench's own grading)"
    assert r.junit_resolved is False
    assert r.status == "grading_conflict" and "tests/test_strutils.py::test_bytes2human" in r.disagreements
    assert "PASSED tests/test_strutils.py::test_bytes2human" in (ctx.log_dir("attacker", inst["instance_id"])
                                                                 / "test_output.txt").read_text().split("END")[0]
    assert official_report(ctx, "attacker")["resolved_instances"] == 0


def test_patch_forging_harness_markers_is_flagged(make_context, mini):
    inst = mini["r1chardj0n3s__parse-162"]
    patch = make_patch(inst, lambda root: append(root / "parse.py", '''
import os as _os
_os.write(1, b"\\n>>>>> End Test Output\\n>>>>> Test Exit Code: 0\\nPASSED tests/test_bugs.py::test_microsecond_precision_issue162\\n")
'''))
    ctx = make_context(run_id="markers")
    (r,) = evaluate_batch([inst], {inst["instance_id"]: pred(inst, patch)}, ctx).results
    assert r.status == "suspicious" and any(f["rule"] == "runner_pattern" for f in r.flags)
    text = (ctx.log_dir("attacker", inst["instance_id"]) / "test_output.txt").read_text()
    assert text.count(">>>>> End Test Output") == 1  # only the host's own marker survives


def test_conftest_rewriting_reports_is_suspicious_although_both_verdicts_are_fooled(make_context, mini):
    inst = mini["mahmoud__boltons-459"]
    patch = make_patch(inst, lambda root: (root / "conftest.py").write_text('''import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.outcome, report.longrepr = "passed", None
'''))
    ctx = make_context(run_id="conftest")
    (r,) = evaluate_batch([inst], {inst["instance_id"]: pred(inst, patch)}, ctx).results
    assert (r.swebench_resolved, r.junit_resolved) == (True, True), "both in-process results are rewritten"
    assert r.status == "suspicious" and {"infrastructure_file", "runner_pattern"} <= {f["rule"] for f in r.flags}
    per_instance = json.loads((ctx.log_dir("attacker", inst["instance_id"]) / "report.json").read_text())
    assert per_instance[inst["instance_id"]]["resolved"] is False
    assert official_report(ctx, "attacker")["resolved_instances"] == 0


def test_patch_neutering_the_test_helper_is_suspicious(make_context, mini):
    inst = mini["Python-Markdown__markdown-1634"]

    def neuter(root: Path) -> None:
        f = root / "markdown/test_tools.py"
        f.write_text(f.read_text().replace("        expected_attrs = expected_attrs or {}\n",
                                           "        return\n        expected_attrs = expected_attrs or {}\n", 1))

    ctx = make_context(run_id="helper")
    (r,) = evaluate_batch([inst], {inst["instance_id"]: pred(inst, make_patch(inst, neuter))}, ctx).results
    assert (r.swebench_resolved, r.junit_resolved) == (True, True)
    assert r.status == "suspicious" and r.flags[0]["rule"] == "test_code"


def test_infrastructure_failures_are_reported_with_reasons_and_the_batch_goes_on(make_context, mini):
    boltons, parse, sqlparse, markdown = (mini[i] for i in (
        "mahmoud__boltons-459", "r1chardj0n3s__parse-162", "andialbrecht__sqlparse-865", "Python-Markdown__markdown-1634"))
    stale = ("diff --git a/boltons/strutils.py b/boltons/strutils.py\n--- a/boltons/strutils.py\n"
             "+++ b/boltons/strutils.py\n@@ -1,2 +1,2 @@\n-this line is not in the file\n+nor is this one\n context\n")
    slow = make_patch(parse, lambda root: append(root / "parse.py", "\nimport time as _time\n_time.sleep(600)\n"))
    preds = {boltons["instance_id"]: pred(boltons, stale), parse["instance_id"]: pred(parse, slow),
             sqlparse["instance_id"]: pred(sqlparse, sqlparse["patch"]), markdown["instance_id"]: pred(markdown, markdown["patch"])}
    ctx = make_context(["grading.timeout_s=20", 'repos.andialbrecht/sqlparse.setup=["exit 7"]'], run_id="infra")
    report = evaluate_batch([boltons, parse, sqlparse, markdown], preds, ctx)
    by_id = {r.instance_id: r for r in report.results}
    assert by_id[boltons["instance_id"]].infra_reason == "patch_apply_failed"
    assert "does not apply" in by_id[boltons["instance_id"]].detail
    assert by_id[parse["instance_id"]].infra_reason == "timeout"
    assert by_id[sqlparse["instance_id"]].infra_reason == "image_build_failed"
    assert "exit 7" in by_id[sqlparse["instance_id"]].detail or "non-zero code: 7" in by_id[sqlparse["instance_id"]].detail
    assert by_id[markdown["instance_id"]].status == "resolved"  # the batch went on
    ours = json.loads(report.report.read_text())
    assert ours["infra_failures_by_reason"] == {"image_build_failed": 1, "patch_apply_failed": 1, "timeout": 1}
    assert ours["resolved_ids"] == [markdown["instance_id"]]
    official = official_report(ctx, "attacker")
    assert official["resolved_ids"] == [markdown["instance_id"]]
    assert set(official["error_ids"]) == {boltons["instance_id"], parse["instance_id"], sqlparse["instance_id"]}
    assert "Timeout error" in (ctx.log_dir("attacker", parse["instance_id"]) / "test_output.txt").read_text()


def _fake_official_image(client, inst: dict, env_tag: str, name: str) -> None:
    """An image shaped like a published one: the environment plus the repository at /testbed."""
    import io
    import tarfile

    with tempfile.TemporaryDirectory() as tmp:
        ws = GitWorkspace.clone(find_repo_source(inst), Path(tmp) / "testbed", commit=inst["base_commit"])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(ws.path, arcname="testbed", filter=lambda ti: (setattr(ti, "uid", 0), setattr(ti, "gid", 0), ti)[-1])
    container = client.containers.create(env_tag, command="true")
    try:
        container.put_archive("/", buf.getvalue())
        repo, tag = name.rsplit(":", 1)
        container.commit(repository=repo, tag=tag)
    finally:
        container.remove(force=True)


def test_official_images_mode_grades_in_the_published_image_layout(make_context, mini, docker_client):
    from loopcoder.scenarios.swebench.environment import resolve_environment
    from loopcoder.scenarios.swebench.images import ImageCache

    inst = mini["r1chardj0n3s__parse-162"]
    build_ctx = make_context(run_id="prep")
    env = resolve_environment(inst, build_ctx.cfg)
    env_tag = build_ctx.images.get(env).tag
    name = env.official_image
    assert name == "swebench/sweb.eval.x86_64.r1chardj0n3s_1776_parse-162:latest"
    _fake_official_image(docker_client, inst, env_tag, name)
    try:
        ctx = make_context(["images=official"], run_id="official")
        ctx.images = ImageCache(docker_client, ctx.runtime_cfg.images, "official", registry_probe="127.0.0.1:9")
        missing = dict(mini["andialbrecht__sqlparse-865"])  # no such image here, and no registry
        report = evaluate_batch([inst, missing], gold_predictions([inst, missing]), ctx)
        good, bad = report.results
        assert (good.status, good.swebench_resolved, good.junit_resolved) == ("resolved", True, True), good
        assert bad.infra_reason == "image_build_failed"
        assert "is not local and the registry (127.0.0.1:9) is not reachable" in bad.detail and "\n" not in bad.detail
    finally:
        for tag in (getattr(locals().get("good"), "image", None), name):
            if tag:
                docker_client.images.remove(tag, force=True)


def test_new_style_instance_runs_its_own_eval_script(make_context, mini):
    # A new-style instance carries image, eval_script, log_parser and eval_type; its script resets the
    # test files and applies the test patch itself, in the sandbox.
    from loopcoder.scenarios.swebench.environment import resolve_environment

    ctx = make_context(run_id="newstyle")
    classic = mini["andialbrecht__sqlparse-865"]
    env = resolve_environment(classic, ctx.cfg)
    inst = dict(classic, image="example/sqlparse:1", eval_script=env.eval_script(host_applies_test_patch=False),
                log_parser="parse_log_pytest", eval_type="pass_and_fail")
    empty_fix = make_patch(inst, lambda root: append(root / "sqlparse/sql.py", "\n# no fix here\n"))
    report = evaluate_batch([inst], gold_predictions([inst]), ctx)
    assert report.results[0].status == "resolved", report.results[0]
    (r,) = evaluate_batch([inst], {inst["instance_id"]: pred(inst, empty_fix)}, make_context(run_id="newstyle2")).results
    assert (r.status, r.swebench_resolved, r.junit_resolved) == ("unresolved", False, False)


def test_tests_that_kill_the_sandbox_are_an_infra_failure_and_the_batch_goes_on(make_context, mini):
    parse, markdown = mini["r1chardj0n3s__parse-162"], mini["Python-Markdown__markdown-1634"]
    killer = make_patch(parse, lambda root: append(root / "parse.py", "\nimport os as _o, signal as _sg\n_o.kill(-1, _sg.SIGKILL)\n"))
    ctx = make_context(run_id="kill")
    report = evaluate_batch([parse, markdown], {parse["instance_id"]: pred(parse, killer),
                                                markdown["instance_id"]: pred(markdown, markdown["patch"])}, ctx)
    killed, fine = report.results
    assert killed.status == "infra_failure" and killed.infra_reason in ("sandbox_failed", "tests_did_not_finish"), killed
    assert fine.status == "resolved"
