"""Grading predictions: one fresh container on one fresh checkout per instance, two independent verdicts.

Per instance: clone the base commit from the repository source, apply the model patch (host side, on
the fresh clone), look for test-infrastructure changes, reset the test files and apply the test patch,
start a sandbox (no network) from the environment image, run the eval script with the test output framed
by host-chosen nonce markers and pytest writing JUnit XML to a random path outside /testbed, then grade
twice: swebench's log parser (``get_eval_report`` on the reconstructed log) and the JUnit XML read on the
host. Resolved needs both to say resolved and no infrastructure flag; disagreement is `grading_conflict`.

Outputs follow the official harness layout under the run directory:
``logs/run_evaluation/<run_id>/<model>/<instance_id>/{patch.diff,eval.sh,test_output.txt,report.json,
run_instance.log}`` plus ``result.json`` (this module's verdict, also for infrastructure failures, which
get no report.json, as in the official harness).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel
from swebench.harness.constants import (
    APPLY_PATCH_FAIL, APPLY_PATCH_PASS, END_TEST_OUTPUT, FAIL_TO_PASS, LOG_INSTANCE, LOG_REPORT, LOG_TEST_OUTPUT,
    PASS_TO_PASS, RESET_FAILED, START_TEST_OUTPUT, TEST_EXIT_CODE, TESTS_ERROR, TESTS_FAILED, TESTS_PASSED,
    TESTS_TIMEOUT, EvalType, ResolvedStatus,
)

from loopcoder.runtime.config import RuntimeConfig, SandboxConfig
from loopcoder.runtime.errors import ImageBuildError, RuntimeFailure, WorkspaceError
from loopcoder.scenarios.swebench.config import SwebenchConfig
from loopcoder.scenarios.swebench.dataset import find_repo_source, tests_of
from loopcoder.scenarios.swebench.environment import (
    InstanceEnv, end_marker, frame_script, resolve_environment, start_marker,
)
from loopcoder.scenarios.swebench.errors import DatasetError, ImageUnavailableError
from loopcoder.scenarios.swebench.images import OFFICIAL_TESTBED, ImageCache
from loopcoder.scenarios.swebench.junit import JunitError, parse_junit
from loopcoder.scenarios.swebench.tamper import Flag, inspect_patch

RUN_EVALUATION_DIR = Path("logs") / "run_evaluation"
RESULT_FILE = "result.json"
Status = Literal["resolved", "unresolved", "grading_conflict", "suspicious", "empty_patch", "infra_failure"]
# Strings the harness itself prints; output of the code under test must not be able to carry them.
HARNESS_MARKERS = (START_TEST_OUTPUT, END_TEST_OUTPUT, TEST_EXIT_CODE, APPLY_PATCH_FAIL, APPLY_PATCH_PASS,
                   RESET_FAILED, TESTS_ERROR, TESTS_FAILED, TESTS_PASSED, TESTS_TIMEOUT)
Progress = Callable[[str], None]


class InstanceResult(BaseModel):
    """The verdict on one prediction. ``status`` is the headline; infra failures say why in ``infra_reason``."""

    instance_id: str
    model_name_or_path: str
    status: Status
    detail: str = ""
    infra_reason: str | None = None  # image_build_failed | repository_unavailable | patch_apply_failed | timeout
    #                                  | sandbox_failed | tests_did_not_run | tests_did_not_finish | bad_instance
    swebench_resolved: bool | None = None  # log parser verdict (get_eval_report)
    junit_resolved: bool | None = None  # JUnit XML verdict
    flags: list[dict] = []
    disagreements: list[str] = []  # tests whose pass/fail differs between the log and the XML
    test_exit_code: int | None = None
    image: str | None = None
    image_seconds: float | None = None
    image_reused: bool | None = None
    patch_apply_method: str | None = None
    test_seconds: float | None = None
    seconds: float = 0.0

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"


class EvalContext:
    """What a batch shares: configs, Docker client, image cache, output folder, run id."""

    def __init__(self, cfg: SwebenchConfig, runtime_cfg: RuntimeConfig, client, run_dir: Path, run_id: str,
                 repos_dir: Path | None = None, images: ImageCache | None = None) -> None:
        self.cfg = cfg
        self.runtime_cfg = runtime_cfg
        self.client = client
        self.run_dir = Path(run_dir).resolve()
        self.run_id = run_id
        self.repos_dir = repos_dir if repos_dir is not None else cfg.repos_dir
        self.images = images or ImageCache(client, runtime_cfg.images, cfg.images, cfg.official_pull_timeout_s)

    def log_dir(self, model: str, instance_id: str) -> Path:
        return self.run_dir / RUN_EVALUATION_DIR / self.run_id / model.replace("/", "__") / instance_id

    def sandbox_config(self) -> SandboxConfig:
        g = self.cfg.grading
        return self.runtime_cfg.sandbox.model_copy(update={
            "network": "none", "memory": self.cfg.sandbox_memory, "cpus": self.cfg.sandbox_cpus,
            "pids_limit": self.cfg.sandbox_pids_limit, "output_limit_bytes": g.output_limit_bytes,
            "default_timeout_s": g.timeout_s, "keep_background": False,
        })


def evaluate_instance(inst: dict, pred: dict, ctx: EvalContext, progress: Progress | None = None) -> InstanceResult:
    """Grade one prediction; never raises for a bad patch, image or test run (see ``status``)."""
    started = time.monotonic()
    iid = inst["instance_id"]
    model = pred.get("model_name_or_path") or "None"
    log_dir = ctx.log_dir(model, iid)
    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir(parents=True)
    log = _InstanceLog(log_dir / LOG_INSTANCE)
    result = InstanceResult(instance_id=iid, model_name_or_path=model, status="infra_failure")
    patch = pred.get("model_patch")
    (log_dir / "patch.diff").write_text(patch or "")
    try:
        if not patch or not patch.strip():
            result.status, result.detail = "empty_patch", "the prediction's model_patch is empty"
            return result
        _evaluate(inst, pred, ctx, log, log_dir, result, progress)
    except _Infra as exc:
        result.status, result.infra_reason, result.detail = "infra_failure", exc.reason, exc.detail
    except _Model as exc:
        result.status, result.detail = "unresolved", str(exc)
        report = {iid: {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": True,
                        "resolved": False, "infra_failure": False,
                        "loopcoder": {"status": result.status, "detail": result.detail}}}
        (log_dir / LOG_REPORT).write_text(json.dumps(report, indent=4))
    except RuntimeFailure as exc:  # the sandbox died under the tests (e.g. they killed every process)
        result.status, result.infra_reason, result.detail = "infra_failure", "sandbox_failed", " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001 -- one instance's harness bug must not end the batch; logged in full
        import traceback

        log.write("harness error:\n" + traceback.format_exc())
        result.status, result.infra_reason = "infra_failure", "harness_error"
        result.detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        result.seconds = round(time.monotonic() - started, 3)
        log.write(f"result: {result.status}" + (f" ({result.infra_reason})" if result.infra_reason else "")
                  + (f": {result.detail}" if result.detail else ""))
        log.close()
        (log_dir / RESULT_FILE).write_text(result.model_dump_json(indent=2) + "\n")
    return result


class _Infra(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, " ".join(detail.split())[:500]


class _InstanceLog:
    def __init__(self, path: Path) -> None:
        self._f = path.open("w")

    def write(self, line: str) -> None:
        self._f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line.rstrip("\n") + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _evaluate(inst: dict, pred: dict, ctx: EvalContext, log: _InstanceLog, log_dir: Path,
              result: InstanceResult, progress: Progress | None) -> None:
    iid = inst["instance_id"]
    try:
        env = resolve_environment(inst, ctx.cfg)
    except DatasetError as exc:
        raise _Infra("bad_instance", str(exc)) from None
    official = ctx.cfg.images == "official"
    try:
        image = ctx.images.get(env, progress=progress)
    except (ImageBuildError, ImageUnavailableError) as exc:
        log.write(f"image: {exc}")
        raise _Infra("image_build_failed", str(exc)) from None
    result.image, result.image_seconds, result.image_reused = image.tag, round(image.seconds, 3), image.reused
    log.write(f"image {image.tag} ({'reused' if image.reused else 'ready'} in {image.seconds:.1f} s)")

    with tempfile.TemporaryDirectory(prefix=f"loopcoder-eval-{iid[:40]}-") as tmp:
        ws_path = Path(tmp) / "testbed"
        if official:
            ws_path.mkdir()
            host_applies = False
        else:
            _prepare_checkout(inst, env, ctx, ws_path, pred["model_patch"], log, result)
            host_applies = True
        script = env.eval_script(host_applies_test_patch=host_applies)
        (log_dir / "eval.sh").write_text(script)
        nonce = secrets.token_hex(16)
        work = f"/tmp/lc-{secrets.token_hex(8)}"
        xml_path = f"/tmp/lc-{secrets.token_hex(8)}/{secrets.token_hex(8)}.xml"
        from loopcoder.runtime.docker_sandbox import DockerSandbox

        try:
            sandbox = DockerSandbox(ws_path, config=ctx.sandbox_config(), image=image.tag, run_id=ctx.run_id,
                                    labels={"loopcoder.purpose": "swebench-eval", "loopcoder.instance": iid[:60]},
                                    client=ctx.client)
        except RuntimeFailure as exc:
            raise _Infra("sandbox_failed", f"cannot start the eval sandbox: {exc}") from None
        with sandbox as sb:
            prep = sb.exec(f"mkdir -p {work} {xml_path.rsplit('/', 1)[0]}", timeout=60)
            if prep.exit_code != 0:
                raise _Infra("sandbox_failed", f"cannot prepare the sandbox: {prep.output.strip()[:200]}")
            if official:
                _prepare_official(sb, inst, env, ctx, pred["model_patch"], work, log, result)
            sb.write_file(f"{work}/eval.sh", frame_script(script, nonce), mode=0o644)
            log.write("running the eval script")
            run = sb.exec(f"bash {work}/eval.sh", timeout=ctx.cfg.grading.timeout_s,
                          env={"PYTEST_ADDOPTS": f"--junitxml={xml_path} -o junit_family=xunit1"})
            result.test_seconds = round(run.duration_s, 3)
            if run.timed_out:
                (log_dir / LOG_TEST_OUTPUT).write_text(
                    _neutralise(run.output)[0] + f"\n\nTimeout error: {ctx.cfg.grading.timeout_s:g} seconds exceeded.\n")
                raise _Infra("timeout", f"the eval script ran past {ctx.cfg.grading.timeout_s:g} s")
            xml_bytes, xml_error = _read_junit(sb, xml_path, ctx.cfg.grading.junit_limit_bytes)
        _grade(inst, pred, env, run.output, nonce, xml_bytes, xml_error, ctx, log, log_dir, result, host_applies)


def _prepare_checkout(inst: dict, env: InstanceEnv, ctx: EvalContext, ws_path: Path, model_patch: str,
                      log: _InstanceLog, result: InstanceResult) -> None:
    """Fresh clone at the base commit, model patch, infrastructure check, test files reset, test patch."""
    from loopcoder.runtime.workspace import GitWorkspace

    try:
        source = find_repo_source(inst, ctx.repos_dir)
        ws = GitWorkspace.clone(source, ws_path, commit=inst["base_commit"], config=ctx.runtime_cfg.workspace)
    except (DatasetError, WorkspaceError) as exc:
        raise _Infra("repository_unavailable", str(exc)) from None
    log.write(f"checked out {inst['base_commit']} from {source}")
    applied = ws.apply_patch(model_patch, raise_on_failure=False)
    if not applied.ok:
        log.write(f"{APPLY_PATCH_FAIL}: {applied.summary()}")
        raise _Infra("patch_apply_failed", f"model patch does not apply: {applied.summary()}")
    result.patch_apply_method = applied.method
    log.write(f"{APPLY_PATCH_PASS} ({applied.method})")

    def before(path: str) -> str | None:
        proc = _git(ws, "show", f"{inst['base_commit']}:{path}")
        return proc.stdout if proc.returncode == 0 else None

    def after(path: str) -> str | None:
        f = ws_path / path
        if f.is_symlink() or not f.is_file():
            return None
        return f.read_text(errors="replace")

    flags = inspect_patch(model_patch, inst["repo"], ctx.cfg.grading, before, after, reset_files=env.test_files)
    result.flags = [f.as_dict() for f in flags]
    for f in flags:
        log.write(f"flag {f.rule}: {f.path}: {f.detail}")
    if env.own_eval_script:
        return  # a new-style eval script resets the test files and applies the test patch itself
    if env.test_files:
        reset = _git(ws, "checkout", inst["base_commit"], "--", *env.test_files)
        if reset.returncode != 0:
            raise _Infra("tests_did_not_run", f"resetting the test files failed: {reset.stderr.strip()[:200]}")
    if not env.test_patch.strip():
        log.write("no test patch (the instance's tests are in its tree)")
        return
    test_applied = ws.apply_patch(env.test_patch, raise_on_failure=False)
    if not test_applied.ok:
        # Only the model's changes (to files the test patch creates) can break a dataset's own test patch.
        raise _Model(f"the test patch does not apply on top of the model patch: {test_applied.summary()}")
    log.write("test patch applied")


class _Model(Exception):
    """The model patch made grading impossible (the instance is unresolved, not an infra failure)."""


def _prepare_official(sb, inst: dict, env: InstanceEnv, ctx: EvalContext, model_patch: str, work: str,
                      log: _InstanceLog, result: InstanceResult) -> None:
    """Official image: copy its /testbed into the fresh workspace and apply the model patch in the sandbox."""
    copy = sb.exec(f"cp -a {OFFICIAL_TESTBED}/. /testbed/", timeout=600)
    if copy.exit_code != 0:
        raise _Infra("sandbox_failed", f"copying the image's testbed failed: {copy.output.strip()[:200]}")
    files = {}
    from loopcoder.scenarios.swebench.tamper import parse_patch_files

    touched = [p for pf in parse_patch_files(model_patch) for p in (pf.old, pf.new)]
    for p in dict.fromkeys(touched):
        files[p] = _sandbox_text(sb, f"/testbed/{p}")
    sb.write_file(f"{work}/model.patch", model_patch)
    applied = sb.exec(f"cd /testbed && (git apply --verbose {work}/model.patch || "
                      f"patch --batch --fuzz=5 -p1 -i {work}/model.patch)", timeout=300)
    if applied.exit_code != 0:
        log.write(f"{APPLY_PATCH_FAIL}: {applied.output.strip()[-500:]}")
        raise _Infra("patch_apply_failed", f"model patch does not apply: {applied.output.strip().splitlines()[-1:]}")
    result.patch_apply_method = "git apply / patch (in the sandbox)"
    log.write(APPLY_PATCH_PASS)
    flags = inspect_patch(model_patch, inst["repo"], ctx.cfg.grading, lambda p: files.get(p),
                          lambda p: _sandbox_text(sb, f"/testbed/{p}"), reset_files=env.test_files)
    result.flags = [f.as_dict() for f in flags]


def _sandbox_text(sb, path: str) -> str | None:
    try:
        return sb.read_file(path).decode("utf-8", "replace")
    except RuntimeFailure:
        return None


def _read_junit(sb, path: str, limit: int) -> tuple[bytes | None, str | None]:
    try:
        data = sb.read_file(path)
    except RuntimeFailure as exc:
        return None, f"no JUnit XML ({str(exc)[:120]})"
    if len(data) > limit:
        return None, f"JUnit XML larger than {limit} bytes"
    return data, None


def _grade(inst: dict, pred: dict, env: InstanceEnv, output: str, nonce: str, xml_bytes: bytes | None,
           xml_error: str | None, ctx: EvalContext, log: _InstanceLog, log_dir: Path, result: InstanceResult,
           host_applies: bool) -> None:
    from swebench.harness.grading import get_eval_report, get_eval_tests_report, get_logs_eval, get_resolution_status
    from swebench.harness.utils import make_test_spec

    iid = inst["instance_id"]
    text, forged = _reconstruct_log(output, nonce)
    if forged:
        result.flags.append(Flag("(test output)", "output_marker", forged).as_dict())
        log.write(f"flag output_marker: {forged}")
    if text is None:
        (log_dir / LOG_TEST_OUTPUT).write_text(_neutralise(output)[0])
        raise _Infra("tests_did_not_run", "the eval script ended before its test command started")
    test_output = log_dir / LOG_TEST_OUTPUT
    test_output.write_text(text)
    result.test_exit_code = _exit_code(output, nonce)
    if result.test_exit_code is None:
        # The test command started but the harness's own end line never came: something (the code under
        # test, say) killed the eval script itself. Its log is cut short; no verdict is drawn from it.
        raise _Infra("tests_did_not_finish", "the eval script was killed before its test command ended")

    spec = make_test_spec(env.swebench_instance(inst, host_applies))
    report = get_eval_report(spec, pred, str(test_output), include_tests_status=True)
    result.swebench_resolved = bool(report[iid]["resolved"])
    log_map, _ = get_logs_eval(spec, str(test_output))

    expected = {FAIL_TO_PASS: tests_of(inst, FAIL_TO_PASS), PASS_TO_PASS: tests_of(inst, PASS_TO_PASS)}
    ref = {"instance_id": iid, **expected}
    junit_note = xml_error
    if xml_bytes is not None:
        try:
            junit = parse_junit(xml_bytes, expected[FAIL_TO_PASS] + expected[PASS_TO_PASS])
            junit_report = get_eval_tests_report(junit.status, ref, eval_type=EvalType(env.eval_type))
            result.junit_resolved = get_resolution_status(junit_report) == ResolvedStatus.FULL.value
            result.disagreements = sorted(
                t for t in expected[FAIL_TO_PASS] + expected[PASS_TO_PASS]
                if _passing(log_map.get(t)) != _passing(junit.status.get(t)))
            if junit.missing:
                junit_note = f"{len(junit.missing)} expected test(s) absent from the JUnit XML"
        except JunitError as exc:
            junit_note = str(exc)
    result.status, result.detail = _verdict(result, ctx.cfg.grading.require_junit, junit_note)
    log.write(f"swebench log verdict: {result.swebench_resolved}; JUnit verdict: {result.junit_resolved}"
              + (f" ({junit_note})" if junit_note else ""))
    report[iid]["resolved"] = result.status == "resolved"
    report[iid]["loopcoder"] = {
        "status": result.status, "detail": result.detail, "swebench_log_resolved": result.swebench_resolved,
        "junit_resolved": result.junit_resolved, "flags": result.flags, "disagreements": result.disagreements,
        "test_exit_code": result.test_exit_code,
    }
    (log_dir / LOG_REPORT).write_text(json.dumps(report, indent=4))


def _verdict(result: InstanceResult, require_junit: bool, junit_note: str | None) -> tuple[Status, str]:
    if result.flags:
        return "suspicious", "the patch touches test infrastructure: " + "; ".join(
            f"{f['path']} ({f['rule']})" for f in result.flags[:5])
    if result.junit_resolved is None:
        if require_junit:
            return "grading_conflict", f"no structured result to confirm the log ({junit_note or 'no JUnit XML'})"
        return ("resolved" if result.swebench_resolved else "unresolved"), "graded from the log only"
    if result.swebench_resolved != result.junit_resolved:
        return "grading_conflict", (f"the log says {'resolved' if result.swebench_resolved else 'unresolved'}, "
                                    f"the JUnit XML says {'resolved' if result.junit_resolved else 'unresolved'}")
    return ("resolved" if result.junit_resolved else "unresolved"), (junit_note or "")


def _passing(status: str | None) -> bool:
    return status in ("PASSED", "XFAIL")


def _reconstruct_log(output: str, nonce: str) -> tuple[str | None, str]:
    """swebench-format test log from the framed output (None when the tests never started), and a note
    on forged markers (empty when none)."""
    start, end = start_marker(nonce), end_marker(nonce)
    lines = output.split("\n")
    starts = [i for i, l in enumerate(lines) if l.rstrip("\r") == start]
    ends = [i for i, l in enumerate(lines) if l.rstrip("\r").startswith(end + " ")]
    notes = []
    if len(starts) > 1 or len(ends) > 1:
        notes.append("the test output repeats the harness's nonce markers")
    if not starts:
        return None, "; ".join(notes)
    s = starts[0]
    e = next((i for i in ends if i > s), None)
    pre = "\n".join(l for l in lines[:s] if nonce not in l)  # the marker commands' own xtrace lines
    body = "\n".join(l for l in (lines[s + 1:e] if e is not None else lines[s + 1:]) if nonce not in l)
    post = "\n".join(lines[e + 1:]) if e is not None else ""
    rc = lines[e].rstrip("\r")[len(end) + 1:].strip() if e is not None else None
    pre, n1 = _neutralise(pre)
    body, n2 = _neutralise(body)
    post, n3 = _neutralise(post)
    if n1 + n2 + n3:
        notes.append(f"the code under test printed {n1 + n2 + n3} harness marker(s) (neutralised)")
    parts = [pre, f"+ : '{START_TEST_OUTPUT}'", body]
    if e is not None:
        parts += [f"+ : '{END_TEST_OUTPUT}'", f"{TEST_EXIT_CODE}: {rc}", post]
    return "\n".join(parts) + "\n", "; ".join(notes)


def _exit_code(output: str, nonce: str) -> int | None:
    end = end_marker(nonce) + " "
    for line in output.split("\n"):
        if line.startswith(end):
            try:
                return int(line[len(end):].strip())
            except ValueError:
                return None
    return None


def _neutralise(text: str) -> tuple[str, int]:
    """Break every harness marker in ``text`` (printed by code under test) so no parser can read it."""
    count = 0
    for marker in HARNESS_MARKERS:
        n = text.count(marker)
        if n:
            count += n
            text = text.replace(marker, marker.replace(">>>>> ", ">>>>>[printed by the tests] "))
    return text, count


def _git(ws, *args: str) -> subprocess.CompletedProcess:
    """git on the workspace's host-private repository (never the tree's own .git), with a throwaway index."""
    from loopcoder.runtime.hostgit import run_git

    with tempfile.TemporaryDirectory(prefix="loopcoder-eval-index-") as tmp:
        proc = run_git(list(args), git_dir=ws.git_dir, work_tree=ws.path, check=False,
                       env={"GIT_INDEX_FILE": str(Path(tmp) / "index")})
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))
